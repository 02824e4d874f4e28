"""
Meta-RED: a meta-learned SIREN that initialises a classical solver
==================================================================

Zhao's Meta-RED / MetaSIREN (Algorithms 1-2): a SIREN :math:`\\phi_\\theta` (a sinusoidal network
over pixel coordinates) makes a starting image, a classical solver :math:`f` runs a few iterations
from it, and for every measurement the SIREN weights take :math:`m` gradient steps on
:math:`\\|A f(\\phi_\\theta) - y\\|^2` with *learned* step sizes. Meta-training learns
:math:`\\theta^*` (and the step sizes) so that those few steps give a good reconstruction. In about
three minutes of CPU we

1. meta-train a MetaSIREN whose solver is one gradient step on the data term, for inpainting an
   image with its centre third missing, and compare with the same SIREN from a random init;
2. meta-train a Meta-RED (3 SIREN updates x 3 RED iterations with a DnCNN = 12 solver iterations)
   for deblurring, and compare with RED run for 12 iterations from :math:`A^\\top y`.

Training images are grey patches of the images bundled with scikit-image. The DnCNN weights are
deepinv's (downloaded once), or KAIR's ``dncnn_25.pth`` from ``$DEEPINV_META_DATA/weights`` when that
offline folder exists. The full benchmark (``deepinv-meta benchmark meta-red``) runs Tables 1-4 of
the paper on CelebA faces.
"""

# %%
# Data: grey 32x32 patches
# ------------------------

import os
from pathlib import Path

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_meta import OuterOptimizer, SupervisedTrainer
from deepinv_meta.baselines import FromAdjoint
from deepinv_meta.data import embedded_images, extract_patches
from deepinv_meta.models import GradientDescent, MetaRED, MetaSIREN, REDFixedPoint
from deepinv_meta.tasks import Task
from deepinv_meta.weights import load_denoiser

torch.manual_seed(0)
size = 32
patches = extract_patches(embedded_images(("camera", "coins", "moon", "text", "page", "clock", "chelsea")), size,
                          stride=16)
x_test = embedded_images(("astronaut",))[0][None, :, 60: 60 + size, 200: 200 + size]  # a face, never trained on
psnr = dinv.loss.metric.PSNR()
print(f"{len(patches)} training patches of {size}x{size}")


def meta_train(model, physics, steps, seconds):
    """Algorithm 2: supervised training of the forward pass (the inner fit is part of it), for ``steps``
    outer steps or ``seconds``, whichever comes first (a fixed count gives the same model on any fast machine)."""
    task = Task("train", physics, patches, patches)
    trainer = SupervisedTrainer(model, [task], outer=OuterOptimizer(lr=1e-3, grad_clip=1.0), batch_size=2,
                                progress=False, device="cpu")
    history = trainer.train(steps=steps, max_time=seconds)
    print(f"{trainer.step} outer steps, loss {history[0]['outer_loss']:.2e} -> {history[-1]['outer_loss']:.2e}")
    return model.eval()


# %%
# Inpainting the centre third with MetaSIREN + gradient descent
# -------------------------------------------------------------
# The solver :math:`f` is one gradient step on the data term; the SIREN takes 3 inner steps.

mask = torch.ones(1, size, size)
mask[:, size // 3: size - size // 3, size // 3: size - size // 3] = 0
inpainting = dinv.physics.Inpainting((1, size, size), mask=mask)
siren_args = dict(solver=GradientDescent(1, 0.9), steps=3, lr=1e-2, learn_lr=True, hidden=64, layers=3)
random_init = MetaSIREN((1, size, size), **siren_args).eval()
meta_siren = meta_train(MetaSIREN((1, size, size), **siren_args), inpainting, steps=2000, seconds=50)
print("learned step sizes:", [f"{lr:.3g}" for lr in meta_siren.inner.step_lrs()])

y_inp = inpainting(x_test)
with torch.no_grad():  # as inside dinv.test: the inner fit enables gradients itself
    inpainted = {"A^T y": inpainting.A_adjoint(y_inp), "SIREN, random init (3 steps)": random_init(y_inp, inpainting),
                 "MetaSIREN (3 steps)": meta_siren(y_inp, inpainting)}

# %%
# Deblurring with Meta-RED
# ------------------------
# Gaussian blur and 1.5 % noise. RED's fixed-point iteration
# :math:`x \leftarrow \operatorname{prox}_{\gamma\|A\cdot-y\|^2/2}(D_\sigma(x))` uses the DnCNN; Meta-RED runs
# 3 of them after each of its 3 SIREN updates and once more at the end: 12 iterations, like RED(12).

data = Path(os.environ.get("DEEPINV_META_DATA", "missing"))
weights = data / "weights" / "kair_dncnn" / "dncnn_25.pth"
if weights.exists():
    denoiser = load_denoiser(weights)
else:
    denoiser = dinv.models.DnCNN(in_channels=1, out_channels=1, pretrained="download")
denoiser.eval().requires_grad_(False)

blur = dinv.physics.BlurFFT((1, size, size), filter=dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0)),
                            noise_model=dinv.physics.GaussianNoise(0.015))
sigma, gamma = 25 / 255, 2.0
red12 = FromAdjoint(REDFixedPoint(denoiser, iterations=12, gamma=gamma, sigma=sigma))
meta_red = meta_train(MetaRED((1, size, size), denoiser, red_iterations=3, steps=3, gamma=gamma, sigma=sigma,
                              hidden=64, layers=3), blur, steps=80, seconds=90)

y_blur = blur(x_test)
with torch.no_grad():
    deblurred = {"A^T y": blur.A_adjoint(y_blur), "RED (12 it.)": red12(y_blur, blur),
                 "Meta-RED (3x3 = 12 it.)": meta_red(y_blur, blur)}

# %%
# Results
# -------

fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
for ax_row, results in zip(axes, (inpainted, deblurred)):
    panels = [("ground truth", x_test)] + [(f"{name}\n{psnr(im.clamp(0, 1), x_test).item():.2f} dB", im)
                                           for name, im in results.items()]
    for ax, (title, image) in zip(ax_row, panels):
        ax.imshow(image[0, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
for results in (inpainted, deblurred):
    for name, image in results.items():
        print(f"{name:28s} {psnr(image.clamp(0, 1), x_test).item():.2f} dB")
fig.tight_layout()
plt.show()

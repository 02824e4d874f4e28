"""
MetaDIP: a Deep Image Prior that starts from meta-learned weights
=================================================================

Deep Image Prior fits a randomly initialised encoder-decoder to one measurement, for hundreds of
iterations. :class:`deepinv_meta.models.MetaDIP` meta-learns the initial weights (and the per-step
learning rates and momenta of the fit) so that a few dozen steps suffice. Here, in about two minutes of
CPU, we

1. meta-train MetaDIP on Gaussian denoising of grey patches (the model's forward pass *is* the inner
   fit, so meta-training is :class:`deepinv_meta.MetaTrainer` with ``inner_steps=0``);
2. denoise an unseen image with 50 fitting steps, and compare with vanilla DIP (random init, latent
   jitter, moving average) given the same and ten times more iterations.

Images are bundled with scikit-image, so it runs offline. The full benchmark
(``deepinv-meta benchmark metadip``) does this on CelebA faces with compressed sensing and phase
retrieval, BM3D and PnP-ADMM, and measures the time-to-PSNR speed-up.
"""

# %%
# Meta-training on denoising
# --------------------------

import time

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_meta import OuterOptimizer, SupervisedTrainer
from deepinv_meta.baselines import VanillaDIP
from deepinv_meta.data import embedded_images, extract_patches
from deepinv_meta.models import MetaDIP
from deepinv_meta.tasks import Task

torch.manual_seed(0)
size = 32
patches = extract_patches(embedded_images(("camera", "coins", "moon", "text", "page", "clock")), size, stride=16)
physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255))
task = Task("denoising sigma=25", physics, patches[::2], patches[1::2])
architecture = dict(channels=(16, 32, 64), latent_channels=8, fourier_features=16)
model = MetaDIP((1, size, size), steps=50, train_steps=10, **architecture)
# the learned step sizes and momenta move 10x faster than the weights (one Adam group each)
trainer = SupervisedTrainer(model, [task], outer=OuterOptimizer(lr=1e-3, grad_clip=1.0, lr_scales={"inner.": 10.0}),
                            batch_size=2, progress=False, device="cpu")

# %%
# Meta-training of MetaDIP can leave its stable region after a hundred outer steps or so: the network then
# saturates and every later fit returns a flat image (measured with these settings: from about step 100,
# 10.5 dB on the test image below). So we train in chunks, score the 50-step fits on fixed held-out episodes
# after each chunk (``trainer.validate()``), go back to the best weights with half the outer learning rate
# when the held-out loss is more than 3 times the best one (``rollback_above=3``, which calls
# ``trainer.rollback()``), and keep the best weights at the end (``trainer.restore_best()``). The benchmark
# does the same.

trainer.validate()  # the random initialisation is a candidate too
for chunk in range(6):
    trainer.train(steps=trainer.step + 25)
    trainer.validate(rollback_above=3.0)
trainer.restore_best()
print("rollbacks:", [f"step {r['step']} -> {r['to_step']}" for r in trainer.rollbacks])
print(f"{trainer.step} outer steps; held-out loss per chunk:",
      ", ".join(f"{v['loss']:.2e}" for v in trainer.validation), f"-> kept step {trainer.selected_step}")
print("learned learning rates:", [f"{lr:.3g}" for lr in model.inner.step_lrs()])
print("learned momenta:", [f"{m:.2f}" for m in model.inner.step_momenta()])

# %%
# Denoising an unseen image
# -------------------------
# MetaDIP runs 50 steps from its meta-learned weights at every call (it never keeps the fitted
# weights, unlike ``deepinv.models.DeepImagePrior``). Vanilla DIP gets 50 and 500 iterations.

x = embedded_images(("astronaut",))[0][None, :, 100: 100 + size, 180: 180 + size]
y = physics(x)
psnr = dinv.loss.metric.PSNR()
results = {}
model.eval()
for name, method in (("MetaDIP (50)", model),
                     ("DIP (50)", VanillaDIP((1, size, size), iterations=50, generator=architecture)),
                     ("DIP (500)", VanillaDIP((1, size, size), iterations=500, generator=architecture))):
    start = time.perf_counter()
    with torch.no_grad():  # as inside dinv.test: the fits enable gradients themselves
        x_hat = method(y, physics)
    results[name] = (x_hat, time.perf_counter() - start)
    print(f"{name:14s} {psnr(x_hat, x).item():.2f} dB in {results[name][1]:.2f} s")

fig, axes = plt.subplots(1, 5, figsize=(12, 2.8))
panels = [("ground truth", x), (f"noisy\n{psnr(y.clamp(0, 1), x).item():.2f} dB", y)]
panels += [(f"{name}\n{psnr(im, x).item():.2f} dB, {sec:.1f} s", im) for name, (im, sec) in results.items()]
for ax, (title, image) in zip(axes, panels):
    ax.imshow(image[0, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
fig.tight_layout()
plt.show()

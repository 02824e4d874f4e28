"""
Adapt the zoo's meta-model to an unseen operator, without ground truth
======================================================================

This example loads :class:`deepinv_meta.MetaPDNet` ``meta-prior-unsupervised`` from the zoo
(:mod:`deepinv_meta.pretrained`: meta-trained by the project's campaign on BSD400 patches over denoising,
TV-estimation, deblurring and inpainting; shipped inside the package, hash-checked, offline) and adapts it to
x2 super-resolution, an operator it never saw, from the low-resolution measurements alone. Meta-training
itself is shown in :ref:`sphx_glr_auto_examples_plot_meta_prior.py`. It runs on CPU in about a minute.
"""

# %%
# The zoo
# -------
# Every entry says what it was trained on, for how long, and how it scored on held-out images.

import deepinv as dinv
import torch

import deepinv_meta
from deepinv_meta import InnerLoop, MetaPDNet, finetune
from deepinv_meta.baselines import Bicubic
from deepinv_meta.data import center_crop, embedded_images

for name, entry in deepinv_meta.pretrained.available().items():
    print(f"{name:24s} {entry['class']:25s} {entry['outer_steps']:5d} outer steps, "
          f"{entry['cpu_minutes'] + entry['gpu_minutes']:.0f} min; {entry['training_data']}")

device = "cuda" if torch.cuda.is_available() else "cpu"
model = MetaPDNet.from_pretrained("meta-prior-unsupervised", device=device)

# %%
# Adaptation without ground truth
# -------------------------------
# The adaptation only sees the low-resolution measurement of the test image itself. Its loss is
# measurement consistency plus equivariant imaging (the network must also reconstruct shifted copies), which
# constrains what the operator cannot see; the meta-model itself is left unchanged.

x = center_crop(embedded_images(("camera",))[0], 128)[None].to(device)
physics = dinv.physics.Downsampling(img_size=(1, 128, 128), factor=2, filter="bicubic", device=device)
y = physics(x)
adapted = finetune(model, physics, y, inner=InnerLoop(steps=20, lr=1e-3), loss="equivariant")

psnr = dinv.loss.metric.PSNR()
with torch.no_grad():
    images = [Bicubic(2)(y, physics), model(y, physics), adapted(y, physics), x]
titles = ["bicubic", "meta-model", "+ 20 equivariant steps", "truth"]
titles = [f"{t}\n{psnr(im.clamp(0, 1), x).item():.2f} dB" if i < 3 else t for i, (t, im) in enumerate(zip(titles, images))]
dinv.utils.plot(images, titles=titles)

"""
Meta-Prior's linear-Gaussian toy: what does a meta-learned linear map learn?
============================================================================

Section 3 of Meta-Prior (Terris & Moreau): images are Gaussian, :math:`x \\sim \\mathcal N(\\mu, \\Sigma)`,
tasks are inpainting with a square hole, and the model is linear, :math:`f_\\theta(y) = \\theta y`.
For a given mask the best possible linear map is the Bayes estimator (Lemma 3.2): it copies the
observed pixels and fills the hole with the conditional mean :math:`\\mathbb E[x_{Ker} | x_{Im}]`.

We meta-train :math:`\\theta` over holes in area A with an **unsupervised** inner loss, fine-tune it
**without ground truth** on a hole in area B never seen during training, and compare the learned Im→Ker
block with the Bayes one. Theorem 3.1 says that unsupervised fine-tuning never changes the hidden-pixel
rows of :math:`\\theta`: every task reads its hidden pixels from the same meta-learned rows, so the best a
meta-model can do is an analytic compromise over the holes, which we compute too.
"""

# %%
# Data, tasks and the Bayes estimator
# -----------------------------------

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_meta import InnerLoop, LinearModel, MetaTrainer, OuterOptimizer
from deepinv_meta.benchmarks.gaussian_toy import adapt_to_mask, im_to_ker, relative_error
from deepinv_meta.benchmarks.theory import gaussian_bayes_estimator, operator_matrix, shared_kernel_rows
from deepinv_meta.benchmarks.theory import hole_corners, mask_of, sample_images, smooth_covariance, toy_task

size, hole = 8, 3
sigma = smooth_covariance(size, length_scale=1.0, jitter=0.1)  # correlated pixels
mu = torch.zeros(size * size, dtype=torch.float64)
train_images = sample_images(20_000, mu, sigma, size, seed=0)
test_images = sample_images(50_000, mu, sigma, size, seed=1)
train_corners, test_corners = hole_corners(size, hole)
print(f"{len(train_corners)} training holes (area A), test hole at {test_corners[0]} (area B)")


def bayes_map(mask):
    physics = dinv.physics.Inpainting(img_size=(1, size, size), mask=mask)
    return gaussian_bayes_estimator(operator_matrix(physics, (1, size, size)).double(), mu, sigma)[0].float()


# %%
# Meta-training (unsupervised inner loss, 20 heavy-ball steps)
# ------------------------------------------------------------
# The inner problems are ill-conditioned least squares (condition number about 45): 20 Adam steps, the
# paper's choice, stay far from their minimum and the meta-model has to compromise (0.85 relative error
# in the benchmark, ``benchmarks/results/meta-prior/gaussian_toy``). Heavy-ball gradient descent
# (SGD with momentum) nearly converges in 20 steps.

inner = dict(optimizer="sgd", lr=12.0, momentum=0.5)
task = toy_task("area_A", train_corners, train_images, test_images, hole, seed=0)
inner_loop = InnerLoop(steps=20, lr=inner["lr"], optimizer=inner["optimizer"],
                       optimizer_kwargs={"momentum": inner["momentum"]} if inner["momentum"] else None)
trainer = MetaTrainer(LinearModel((1, size, size), init="zeros"), [task], inner=inner_loop,
                      outer=OuterOptimizer(lr=0.03, decay_steps=600), inner_loss="unsupervised", batch_size=256,
                      device="cpu", progress=False)
trainer.train(steps=600)
meta = trainer.model

# the best meta-model an unsupervised inner loss allows (Theorem 3.1: shared hidden-pixel rows, analytic)
optimum = shared_kernel_rows([mask_of(c, size, hole) for c in train_corners], mu, sigma).float()

# %%
# Unsupervised fine-tuning on a training hole and on the unseen hole, against the Bayes estimator
# -----------------------------------------------------------------------------------------------

panels = []
for split, corner in (("train hole", train_corners[0]), ("unseen hole", test_corners[0])):
    mask = mask_of(corner, size, hole)
    theta = adapt_to_mask(meta, mask, train_images, "unsupervised", steps=20, **inner)
    W = bayes_map(mask)
    kernel_rows = ~mask.flatten().bool()
    drift = (theta[kernel_rows] - meta.theta.detach()[kernel_rows]).abs().max().item()
    print(f"{split}: relative error of the Im->Ker block {relative_error(theta, W, mask):.3f} "
          f"(risk-optimal meta-model over the training holes: {relative_error(optimum, W, mask):.3f}); "
          f"largest change of the hidden-pixel rows during fine-tuning: {drift:.2e}")
    panels += [(f"learned, {split}", im_to_ker(theta, mask)), (f"Bayes, {split}", im_to_ker(W, mask))]

fig, axes = plt.subplots(1, 4, figsize=(16, 2.5))
for i, (ax, (title, block)) in enumerate(zip(axes, panels)):
    vmax = panels[i | 1][1].abs().max().item()  # the colour scale of the Bayes block beside it
    ax.imshow(block, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("observed pixel")
    ax.set_ylabel("hidden pixel")
plt.tight_layout()
plt.show()

# %%
# Theorem 3.1 says the hidden-pixel rows of :math:`\theta` cannot move under unsupervised
# fine-tuning (their gradient is zero), so everything the model knows about the unseen hole comes
# from meta-training: the printed change is exactly 0 for both holes. On the unseen hole the learned
# rows still carry part of the Bayes structure, although that hole never appeared in training.

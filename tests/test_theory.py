"""Meta-Prior Theorem 3.1 (ii) on the linear model f_theta(y) = theta y."""

import deepinv as dinv
import pytest
import torch

from deepinv_meta import LinearModel, finetune


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_unsupervised_gradient_descent_keeps_the_kernel_part_of_theta(lam):
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(0)
        img = (1, 5, 5)
        physics = dinv.physics.Inpainting(img_size=img, mask=0.6, rng=torch.Generator().manual_seed(3))
        meta = LinearModel(img, init="random")  # theta*: a generic (not structured) meta-model
        x = torch.rand(16, *img, generator=g)
        y = physics(x)  # noiseless, so y lies in Im(A)

        adapted = finetune(meta, physics, y, steps=20, loss="unsupervised", optimizer="sgd", lr=5.0, lam=lam)

        keep = physics.mask.flatten().bool()  # A = diag(mask): Ker(A) is spanned by the masked pixels
        theta_star, theta_20 = meta.theta.detach(), adapted.theta.detach()
        kernel_rows = ~keep
        assert kernel_rows.any() and keep.any()
        torch.testing.assert_close(theta_20[kernel_rows], theta_star[kernel_rows], rtol=0, atol=1e-6)
        # the fine-tuning did move theta on Im(A^T): the invariant is not trivially satisfied
        assert (theta_20[keep] - theta_star[keep]).abs().max() > 1e-2
    finally:
        torch.set_default_dtype(torch.float32)

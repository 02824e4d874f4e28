"""Meta-Prior Theorem 3.1 on the linear model f_theta(y) = theta y: (ii) for (heavy-ball) gradient descent, and what
it implies for the best unsupervised meta-model."""

import deepinv as dinv
import pytest
import torch

from deepinv_meta import LinearModel, finetune


@pytest.mark.parametrize("lam,momentum", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5)])
def test_unsupervised_gradient_descent_keeps_the_kernel_part_of_theta(lam, momentum):
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(0)
        img = (1, 5, 5)
        physics = dinv.physics.Inpainting(img_size=img, mask=0.6, rng=torch.Generator().manual_seed(3))
        meta = LinearModel(img, init="random")  # theta*: a generic (not structured) meta-model
        x = torch.rand(16, *img, generator=g)
        y = physics(x)  # noiseless, so y lies in Im(A)

        adapted = finetune(meta, physics, y, steps=20, loss="unsupervised", optimizer="sgd", lr=5.0, lam=lam,
                           momentum=momentum)

        keep = physics.mask.flatten().bool()  # A = diag(mask): Ker(A) is spanned by the masked pixels
        theta_star, theta_20 = meta.theta.detach(), adapted.theta.detach()
        kernel_rows = ~keep
        assert kernel_rows.any() and keep.any()
        torch.testing.assert_close(theta_20[kernel_rows], theta_star[kernel_rows], rtol=0, atol=1e-6)
        # the fine-tuning did move theta on Im(A^T): the invariant is not trivially satisfied
        assert (theta_20[keep] - theta_star[keep]).abs().max() > 1e-2
    finally:
        torch.set_default_dtype(torch.float32)


def test_meta_training_with_a_converging_inner_loop_reaches_the_theorem_31_optimum():
    """Unsupervised inner loss: every task reads its hidden pixels from the meta-model's rows (Theorem 3.1), so
    the best meta-model is the analytic shared-rows regression (0.522 from Bayes on the toy's training holes).
    Meta-training gets there only if the inner loop fits the observed rows: 20 heavy-ball steps do (measured
    0.579 after 600 outer steps), 20 Adam steps at the paper's rate do not (0.961): that model compromises."""
    from deepinv_meta import MetaTrainer
    from deepinv_meta.benchmarks.gaussian_toy import relative_error
    from deepinv_meta.benchmarks.theory import gaussian_bayes_estimator, operator_matrix, shared_kernel_rows
    from deepinv_meta.benchmarks.theory import hole_corners, mask_of, sample_images, smooth_covariance, toy_task

    size, hole = 8, 3
    sigma = smooth_covariance(size, 1.0, 0.1)
    mu = torch.zeros(size * size, dtype=torch.float64)
    images = sample_images(20_000, mu, sigma, size, seed=0)
    corners, _ = hole_corners(size, hole)
    masks = [mask_of(c, size, hole) for c in corners]
    bayes = [gaussian_bayes_estimator(operator_matrix(dinv.physics.Inpainting(img_size=(1, size, size), mask=m),
                                                      (1, size, size)).double(), mu, sigma)[0].float() for m in masks]

    def error(theta):  # mean relative error of the Im->Ker blocks against Bayes over the training holes
        return sum(relative_error(theta, W, m) for W, m in zip(bayes, masks)) / len(masks)

    optimum = error(shared_kernel_rows(masks, mu, sigma).float())
    errors = {}
    for name, inner in {"heavy ball": dict(inner_optimizer="sgd", inner_lr=12.0, inner_momentum=0.5),
                        "adam": dict(inner_lr=1e-2)}.items():
        torch.manual_seed(0)
        trainer = MetaTrainer(LinearModel((1, size, size), init="zeros"), [toy_task("A", corners, images, images, hole)],
                              inner_loss="unsupervised", inner_steps=20, outer_lr=0.03, batch_size=256,
                              outer_lr_decay_steps=600, device="cpu", progress=False, **inner)
        trainer.train(steps=600)
        errors[name] = error(trainer.model.theta.detach())
    assert 0.5 < optimum < 0.55
    assert errors["heavy ball"] < optimum + 0.1 < errors["adam"]

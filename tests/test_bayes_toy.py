"""Lemma 3.2 (Bayes estimator), the toy setup, and trainer features it relies on."""

import deepinv as dinv
import pytest
import torch

from deepinv_meta.benchmarks.theory import (
    GaussianBayesEstimator,
    gaussian_bayes_estimator,
    operator_matrix,
    shared_kernel_rows,
)
from deepinv_meta.benchmarks.theory import SquareHoleMaskGenerator, hole_corners, mask_of, sample_images, smooth_covariance, toy_task


def test_lemma_32_matches_the_conditional_gaussian_formula():
    g = torch.Generator().manual_seed(0)
    L = torch.randn(6, 6, generator=g, dtype=torch.float64)
    sigma = L @ L.T + 0.1 * torch.eye(6, dtype=torch.float64)
    mu = torch.randn(6, generator=g, dtype=torch.float64)
    A = torch.randn(4, 6, generator=g, dtype=torch.float64)
    W, b = gaussian_bayes_estimator(A, mu, sigma)
    gain = sigma @ A.T @ torch.linalg.inv(A @ sigma @ A.T)  # E[x|y] = mu + gain (y - A mu)
    torch.testing.assert_close(W, gain, rtol=0, atol=1e-10)
    torch.testing.assert_close(b, mu - gain @ A @ mu, rtol=0, atol=1e-10)


def test_bayes_estimator_beats_perturbations_in_mse():
    size = 4
    sigma = smooth_covariance(size)
    mu = torch.zeros(size * size, dtype=torch.float64)
    x = sample_images(20000, mu, sigma, size, seed=0)
    physics = dinv.physics.Inpainting(img_size=(1, size, size), mask=mask_of((1, 1), size, 2))
    bayes = GaussianBayesEstimator(mu, sigma, (1, size, size))
    y = physics(x)
    x_hat = bayes(y, physics)
    assert x_hat.dtype == y.dtype
    mse = ((x_hat - x) ** 2).mean()
    W, _ = gaussian_bayes_estimator(operator_matrix(physics, (1, size, size)).double(), mu, sigma)
    perturbed = W + 0.05 * torch.randn(W.shape, generator=torch.Generator().manual_seed(1), dtype=W.dtype)
    mse_perturbed = ((y.reshape(len(y), -1).double() @ perturbed.T - x.reshape(len(x), -1)) ** 2).mean()
    assert mse < mse_perturbed
    assert mse < 0.5 * (x**2).mean()  # it does predict the hidden pixels


def test_shared_kernel_rows_minimise_the_multi_mask_risk_and_reduce_to_bayes_for_one_mask():
    size, hole = 5, 2
    sigma = smooth_covariance(size, 1.0, 0.1)
    mu = 0.3 * torch.ones(size * size, dtype=torch.float64)
    second_moment = sigma + torch.outer(mu, mu)
    masks = [mask_of(c, size, hole).flatten().double() for c in [(0, 0), (1, 1), (2, 1)]]

    def risk(theta):  # sum over masks and hidden pixels of E (x_p - theta_p (m * x))^2
        total = 0.0
        for m in masks:
            rows = theta[m == 0] * m  # only observed pixels enter y
            hidden = (m == 0).nonzero().flatten()
            total += (second_moment[hidden, hidden] - 2 * (rows @ second_moment[:, hidden]).diagonal()
                      + (rows @ second_moment @ rows.T).diagonal()).sum()
        return total

    theta = shared_kernel_rows(masks, mu, sigma)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert risk(theta) < risk(theta + 1e-2 * torch.randn(theta.shape, generator=g, dtype=theta.dtype))
    # a single mask: the shared rows are Bayes' regression (zero mean, so no offset is needed)
    one = masks[0]
    physics = dinv.physics.Inpainting(img_size=(1, size, size), mask=one.reshape(1, size, size).float())
    W, _ = gaussian_bayes_estimator(operator_matrix(physics, (1, size, size)).double(), torch.zeros_like(mu), sigma)
    theta = shared_kernel_rows([one], torch.zeros_like(mu), sigma)
    keep = one.bool()
    assert torch.allclose(theta[~keep][:, keep], W[~keep][:, keep], atol=1e-8)


def test_lowest_shared_rows_error_is_a_minimum_below_the_risk_optimal_rows():
    from deepinv_meta.benchmarks.gaussian_toy import lowest_shared_rows_errors, relative_error

    size, hole = 5, 2
    sigma = smooth_covariance(size, 1.0, 0.1)
    mu = torch.zeros(size * size, dtype=torch.float64)
    masks = [mask_of(c, size, hole) for c in [(0, 0), (1, 1), (2, 1), (3, 3)]]
    bayes = [gaussian_bayes_estimator(operator_matrix(dinv.physics.Inpainting(img_size=(1, size, size), mask=m),
                                                      (1, size, size)).double(), mu, sigma)[0].float() for m in masks]
    start = shared_kernel_rows(masks, mu, sigma).float()
    lowest = sum(lowest_shared_rows_errors(masks, bayes, start)) / len(masks)
    risk_optimal = sum(relative_error(start, W, m) for W, m in zip(bayes, masks)) / len(masks)
    assert 0.05 < lowest < risk_optimal
    # started elsewhere, the minimisation ends at the same value (a convex problem: one minimum)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        moved = start + 0.5 * torch.randn(start.shape, generator=g)
        assert sum(lowest_shared_rows_errors(masks, bayes, moved)) / len(masks) == pytest.approx(lowest, abs=1e-4)
    # one mask: its own Bayes map has zero error
    assert lowest_shared_rows_errors(masks[:1], bayes[:1], start) == [pytest.approx(0.0, abs=1e-5)]


def test_toy_masks_and_areas():
    train, test = hole_corners(8, 3)
    assert test == [(5, 5)] and test[0] not in train and len(train) == 35
    gen = SquareHoleMaskGenerator((1, 8, 8), 3, train, rng=torch.Generator().manual_seed(0))
    masks = gen.step(4)["mask"]
    assert masks.shape == (4, 1, 8, 8) and ((masks == 0).sum(dim=(1, 2, 3)) == 9).all()


def test_shared_operator_episodes_use_one_mask():
    sigma = smooth_covariance(4)
    images = sample_images(16, torch.zeros(16, dtype=torch.float64), sigma, 4)
    task = toy_task("t", hole_corners(4, 2)[0], images, images, hole=2)
    episode = task.episode(batch_size=5, seed=0)
    assert episode.physics.mask.shape[0] == 1  # one operator broadcast over the batch


def test_cosine_outer_lr_decay(small_tasks):
    from helpers import make_trainer

    trainer = make_trainer(small_tasks, outer_lr=1e-2, outer_lr_decay_steps=4)
    lrs = []
    for _ in range(5):
        lrs.append(trainer.current_outer_lr())
        trainer.outer_step()
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lrs[-1])
    assert lrs[0] == pytest.approx(1e-2) and lrs[2] == pytest.approx(5e-3) and lrs[4] == pytest.approx(0.0)

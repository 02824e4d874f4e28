"""The faster formulations compute the same function with the same first and second derivatives."""

import deepinv as dinv
import pytest
import torch

from deepinv_meta.models.pdnet import operator_sqnorm, project_linf_ball
from deepinv_meta.models.pdnet import _power_iteration


def test_projection_equals_clamp_with_its_first_and_second_derivatives():
    torch.manual_seed(0)
    v0 = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    r0 = torch.tensor(0.4, dtype=torch.float64)
    results = []
    for project in (project_linf_ball, lambda v, r: torch.clamp(v, -r, r)):
        v, r = v0.clone().requires_grad_(), r0.clone().requires_grad_()
        w = torch.randn_like(v0, generator=torch.Generator().manual_seed(1))
        out = project(v * v, r)  # v*v makes the second derivative through the projection non-trivial
        gv, gr = torch.autograd.grad((w * out).sum(), (v, r), create_graph=True)
        second = torch.autograd.grad((gv ** 2).sum() + gr ** 2, (v, r), allow_unused=True, materialize_grads=True)
        results.append([out, gv, gr, *second])
    for mine, reference in zip(*results):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-12)


def test_projection_passes_gradcheck_and_gradgradcheck():
    v = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(project_linf_ball, (v, r))
    assert torch.autograd.gradgradcheck(project_linf_ball, (v, r))


def test_operator_norm_is_cached_per_operator_and_recomputed_after_update():
    x = torch.rand(2, 1, 16, 16)
    physics = dinv.physics.Inpainting((1, 16, 16), mask=0.5)
    generator = dinv.physics.generator.BernoulliSplittingMaskGenerator((1, 16, 16), split_ratio=0.3)
    calls = []
    original = physics.A_adjoint
    physics.A_adjoint = lambda *a, **k: calls.append(1) or original(*a, **k)
    first = operator_sqnorm(physics, x)
    n = len(calls)
    assert n > 0 and torch.equal(operator_sqnorm(physics, x), first) and len(calls) == n  # cached
    operator_sqnorm(physics, torch.rand(1, 1, 16, 16))  # another shape: computed again
    assert len(calls) > n
    physics.update(**generator.step(batch_size=2, seed=0))  # a new mask: recomputed, and equal to a fresh estimate
    n = len(calls)
    value = operator_sqnorm(physics, x)
    assert len(calls) > n and torch.equal(value, _power_iteration(physics, x, 20))
    with torch.no_grad():
        physics.mask.mul_(0.5)  # written in place: recomputed too
    n = len(calls)
    assert torch.allclose(operator_sqnorm(physics, x), 0.25 * value, rtol=1e-3) and len(calls) > n


def test_operator_made_of_closures_is_never_cached():
    scale = torch.tensor(2.0)  # captured by the closures, invisible to the cache
    physics = dinv.physics.LinearPhysics(A=lambda x: scale * x, A_adjoint=lambda y: scale * y)
    x = torch.rand(1, 1, 8, 8)
    assert operator_sqnorm(physics, x).item() == pytest.approx(4.0)
    scale.fill_(3.0)
    assert operator_sqnorm(physics, x).item() == pytest.approx(9.0)


def test_replacing_the_operator_functions_invalidates_the_cache():
    physics = dinv.physics.Inpainting((1, 8, 8), mask=torch.ones(1, 8, 8))
    x = torch.rand(1, 1, 8, 8)
    assert operator_sqnorm(physics, x).item() == pytest.approx(1.0)
    physics.A = lambda x, **kwargs: 3 * x
    physics.A_adjoint = lambda y, **kwargs: 3 * y
    assert operator_sqnorm(physics, x).item() == pytest.approx(9.0)

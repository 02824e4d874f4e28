"""The differentiable Adam registered with higher matches torch.optim.Adam and has no NaN meta-gradients."""

import copy

import higher
import pytest
import torch

from deepinv_meta.bilevel.optimizers import DifferentiableAdam


def quadratic_problem():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    data = torch.randn(16, 5, generator=g, dtype=torch.float64)
    target = torch.randn(16, 2, generator=g, dtype=torch.float64)
    return model, lambda m: ((m(data) - target) ** 2).mean()


@pytest.mark.parametrize("kwargs", [dict(lr=0.05), dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1)])
def test_registered_adam_matches_torch_adam_over_5_steps(kwargs):
    model, loss = quadratic_problem()
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]

    torch_model = copy.deepcopy(model)
    opt = torch.optim.Adam(torch_model.parameters(), **kwargs)
    with higher.innerloop_ctx(model, torch.optim.Adam(model.parameters(), **kwargs), copy_initial_weights=False) as (
        fmodel,
        diffopt,
    ):
        assert isinstance(diffopt, DifferentiableAdam)
        for _ in range(5):
            opt.zero_grad()
            loss(torch_model).backward()
            opt.step()
            diffopt.step(loss(fmodel))
            for p_torch, p_higher in zip(torch_model.parameters(), fmodel.fast_params):
                torch.testing.assert_close(p_higher.detach(), p_torch.detach(), rtol=0, atol=1e-6)
    # the trajectory really moved: the comparison is not between two unchanged copies
    assert any((p - r).abs().max() > 1e-3 for p, r in zip(torch_model.parameters(), reference))


def test_higher_stock_adam_differs_from_torch_adam():
    """Documents the trap the registered optimizer fixes (eps placement); fails if higher ever fixes it."""
    from higher.optim import DifferentiableAdam as StockAdam

    model, loss = quadratic_problem()
    torch_model = copy.deepcopy(model)
    kwargs = dict(lr=0.05, eps=1e-2)
    opt = torch.optim.Adam(torch_model.parameters(), **kwargs)
    fmodel = higher.monkeypatch(model, copy_initial_weights=True)
    stock = StockAdam(torch.optim.Adam(model.parameters(), **kwargs), model.parameters(), fmodel=fmodel)
    for _ in range(3):
        opt.zero_grad()
        loss(torch_model).backward()
        opt.step()
        stock.step(loss(fmodel))
    gap = max((a - b).abs().max() for a, b in zip(torch_model.parameters(), fmodel.fast_params))
    assert gap > 1e-4


def test_zero_gradient_parameters_give_finite_meta_gradient():
    """A parameter with exactly zero gradient (dead unit) must not turn the meta-gradient into NaN."""
    model = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.1, -10.0]))  # unit 0 alive; unit 1 dead after the ReLU  # unit 1 is dead after the ReLU: zero gradient, zero second moment
    x = torch.rand(4, 3, dtype=torch.float64)
    with higher.innerloop_ctx(model, torch.optim.Adam(model.parameters(), lr=0.1), copy_initial_weights=False) as (
        fmodel,
        diffopt,
    ):
        for _ in range(2):
            diffopt.step(torch.relu(fmodel(x)).pow(2).sum())
        torch.relu(fmodel(x)).pow(2).sum().backward()
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()
    assert model.weight.grad[0].abs().max() > 0

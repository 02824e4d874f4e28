"""Meta-gradients of the engine against finite differences and an independent torch.func implementation."""

import copy

import pytest
import torch
import deepinv as dinv
from torch.func import functional_call, grad

from deepinv_meta import InnerLoop, MetaPDNet
from deepinv_meta.losses import data_loss, supervised_loss


def tiny_problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    model = MetaPDNet(depth=2, channels=3, init_std=0.3, init_threshold=0.05, tau=0.9).to(dtype)
    physics = dinv.physics.Inpainting(img_size=(1, 6, 6), mask=0.6, rng=torch.Generator().manual_seed(2))
    physics = physics.to(dtype)
    x_train = torch.rand(2, 1, 6, 6, generator=g, dtype=dtype)
    x_test = torch.rand(2, 1, 6, 6, generator=g, dtype=dtype)
    return model, physics, x_train, physics(x_train), x_test, physics(x_test)


def engine_outer_loss(model, inner, loss_name, physics, x_train, y_train, x_test, y_test):
    result = inner.run(model, lambda f, k: data_loss(loss_name, f(y_train, physics), y_train, physics, x_train))
    return supervised_loss(result(y_test, physics), x_test)


@pytest.mark.parametrize("optimizer,loss_name", [("sgd", "unsupervised"), ("adam", "supervised"), ("adam", "unsupervised")])
def test_meta_gradient_matches_central_finite_differences(optimizer, loss_name):
    model, physics, x_tr, y_tr, x_te, y_te = tiny_problem()
    lr = 0.5 if optimizer == "sgd" else 0.01
    inner = InnerLoop(steps=3, lr=lr, optimizer=optimizer, lam=0.3)
    engine_outer_loss(model, inner, loss_name, physics, x_tr, y_tr, x_te, y_te).backward()
    analytic = torch.cat([p.grad.flatten() for p in model.parameters()])

    params = list(model.parameters())
    eps = 1e-6
    numeric = []
    with torch.no_grad():
        for p in params:
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                values = []
                for shifted in (old + eps, old - eps):
                    p.view(-1)[i] = shifted
                    with torch.enable_grad():
                        values.append(engine_outer_loss(model, inner, loss_name, physics, x_tr, y_tr, x_te, y_te).item())
                p.view(-1)[i] = old
                numeric.append((values[0] - values[1]) / (2 * eps))
    numeric = torch.tensor(numeric, dtype=analytic.dtype)
    rel = (analytic - numeric).norm() / numeric.norm()
    assert numeric.norm() > 1e-6  # the test is not vacuous
    assert rel < 1e-3, f"relative error {rel:.2e}"


def test_sgd_inner_loop_matches_independent_torch_func_implementation():
    model, physics, x_tr, y_tr, x_te, y_te = tiny_problem()
    lr, lam, steps = 0.5, 0.2, 4
    inner = InnerLoop(steps=steps, lr=lr, optimizer="sgd", lam=lam)
    engine_outer_loss(model, inner, "unsupervised", physics, x_tr, y_tr, x_te, y_te).backward()
    engine_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    reference = copy.deepcopy(model)
    theta = {n: p.detach().clone() for n, p in reference.named_parameters()}

    def inner_loss(phi, theta):
        x_hat = functional_call(reference, phi, (y_tr, physics))
        prox = sum(((phi[n] - theta[n]) ** 2).sum() for n in phi)
        return ((physics.A(x_hat) - y_tr) ** 2).mean() + 0.5 * lam * prox

    def outer(theta):
        phi = dict(theta)
        for _ in range(steps):
            g = grad(inner_loss)(phi, theta)
            phi = {n: phi[n] - lr * g[n] for n in phi}
        return ((functional_call(reference, phi, (y_te, physics)) - x_te) ** 2).mean()

    func_grads = grad(outer)(theta)
    for n in engine_grads:
        torch.testing.assert_close(engine_grads[n], func_grads[n], rtol=0, atol=1e-6)
    assert max(g.abs().max() for g in func_grads.values()) > 1e-4


def test_first_order_gradient_is_outer_gradient_at_fast_weights():
    model, physics, x_tr, y_tr, x_te, y_te = tiny_problem()
    inner = InnerLoop(steps=3, lr=0.05, optimizer="adam", lam=0.1, first_order=True)
    result = inner.run(model, lambda f, k: data_loss("supervised", f(y_tr, physics), y_tr, physics, x_tr))
    supervised_loss(result(y_te, physics), x_te).backward()
    meta_grads = [p.grad.clone() for p in model.parameters()]

    at_phi = copy.deepcopy(model)
    with torch.no_grad():
        for p, phi in zip(at_phi.parameters(), result.params):
            p.copy_(phi)
    supervised_loss(at_phi(y_te, physics), x_te).backward()
    for g_meta, p in zip(meta_grads, at_phi.parameters()):
        assert g_meta.abs().max() > 0
        torch.testing.assert_close(g_meta, p.grad, rtol=1e-10, atol=1e-12)
    # phi really moved away from theta: the gradient is taken at the adapted weights
    assert any((phi - theta).abs().max() > 1e-4 for phi, theta in zip(result.params, model.parameters()))


def test_higher_track_higher_grads_false_alone_gives_no_meta_gradient():
    """The trap that first_order=True avoids: plain track_higher_grads=False detaches phi from theta."""
    import higher

    model, physics, x_tr, y_tr, x_te, y_te = tiny_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with higher.innerloop_ctx(model, opt, copy_initial_weights=False, track_higher_grads=False) as (fmodel, diffopt):
        diffopt.step(supervised_loss(fmodel(y_tr, physics), x_tr))
        supervised_loss(fmodel(y_te, physics), x_te).backward()
    assert all(p.grad is None for p in model.parameters())


def test_learned_learning_rates_receive_meta_gradients():
    model, physics, x_tr, y_tr, x_te, y_te = tiny_problem()
    inner = InnerLoop(steps=3, lr=0.01, optimizer="adam", learn_lr=True).to(torch.float64)
    engine_outer_loss(model, inner, "supervised", physics, x_tr, y_tr, x_te, y_te).backward()
    assert inner.log_lr.grad is not None and inner.log_lr.grad.abs().min() > 0
    assert len(inner.step_lrs()) == 3
    with pytest.raises(ValueError, match="first_order"):
        InnerLoop(steps=2, learn_lr=True, first_order=True)

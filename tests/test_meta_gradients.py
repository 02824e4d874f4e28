"""Meta-gradients of the engine against finite differences and an independent torch.func implementation."""

import copy
import math

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


def smooth_inner_problem():
    """A small tanh MLP with a quadratic inner loss: a smooth, strongly convex-enough inner problem."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(1)
    x, t, x2, t2 = (torch.randn(16, n, generator=g, dtype=torch.float64) for n in (4, 3, 4, 3))
    return model, (lambda f, k: ((f(x) - t) ** 2).mean()), (lambda f: ((f(x2) - t2) ** 2).mean())


def test_implicit_meta_gradient_is_the_exact_gradient_at_the_inner_minimum():
    model, inner_loss, outer_loss = smooth_inner_problem()
    lam, settings = 0.5, dict(steps=400, lr=0.2, optimizer="sgd")  # 400 steps: the inner minimum is reached

    def meta_gradient(**kwargs):
        model.zero_grad()
        result = InnerLoop(lam=lam, **settings, **kwargs).run(model, inner_loss)
        outer_loss(result).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()]), result

    implicit, result = meta_gradient(implicit=True, cg_steps=30)
    maml, _ = meta_gradient()  # back-propagation through all 400 steps
    first_order, _ = meta_gradient(first_order=True)
    relative = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert relative(implicit, maml) < 1e-8
    assert relative(first_order, maml) > 0.5  # the test can tell the implicit correction from none

    # independent closed form: (I + H / lam)^-1 grad_phi L_outer, H the Hessian of the inner loss at phi*
    phi = torch.cat([p.detach().flatten() for p in result.params])
    shapes = [p.shape for p in model.parameters()]

    def unflatten(v):
        sizes = [math.prod(s) for s in shapes]
        return {name: c.view(s) for (name, _), c, s in zip(model.named_parameters(), v.split(sizes), shapes)}

    at = lambda v: (lambda *a: torch.func.functional_call(model, unflatten(v), a))  # noqa: E731
    hessian = torch.autograd.functional.hessian(lambda v: inner_loss(at(v), 0), phi)
    outer_grad = torch.autograd.functional.jacobian(lambda v: outer_loss(at(v)), phi)
    expected = torch.linalg.solve(torch.eye(len(phi), dtype=phi.dtype) + hessian / lam, outer_grad)
    assert relative(implicit, expected) < 1e-8


def test_implicit_mode_needs_a_proximal_term_and_no_learned_settings():
    with pytest.raises(ValueError, match="lam > 0"):
        InnerLoop(steps=2, implicit=True)
    with pytest.raises(ValueError, match="implicit"):
        InnerLoop(steps=2, lam=1.0, implicit=True, learn_lr=True)
    with pytest.raises(ValueError, match="one of"):
        InnerLoop(steps=2, lam=1.0, implicit=True, first_order=True)


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


def test_learned_sgd_rates_on_a_quadratic_inner_loss_get_equal_meta_gradients():
    """The trap documented in InnerLoop: gradient descent on a quadratic multiplies (I - a_k H) in any order, so
    equal per-step rates get equal meta-gradients (and stay equal); a network's inner loss breaks the tie."""
    g = torch.Generator().manual_seed(0)
    x, target = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(10, 1, generator=g, dtype=torch.float64)
    linear = torch.nn.Linear(3, 1, bias=False).to(torch.float64)
    inner = InnerLoop(steps=4, lr=0.1, optimizer="sgd", learn_lr=True).to(torch.float64)
    result = inner.run(linear, lambda f, k: ((f(x) - target) ** 2).mean())
    ((result(x) - target) ** 2).mean().backward()
    grads = inner.log_lr.grad
    assert grads.abs().min() > 1e-4 and torch.allclose(grads, grads[0].expand(4), rtol=1e-10, atol=0)
    model, physics, x_tr, y_tr, x_te, y_te = tiny_problem()  # a PDNet: not quadratic in its weights
    inner = InnerLoop(steps=4, lr=0.1, optimizer="sgd", learn_lr=True).to(torch.float64)
    engine_outer_loss(model, inner, "supervised", physics, x_tr, y_tr, x_te, y_te).backward()
    assert not torch.allclose(inner.log_lr.grad, inner.log_lr.grad[0].expand(4), rtol=1e-3, atol=0)


def test_meta_sgd_and_learned_momentum_match_an_independent_implementation():
    """Per-parameter per-step learning rates (Meta-SGD) and per-step momentum: the engine's loss and
    meta-gradients (weights, learning rates, momenta) equal a hand-written unrolled SGD."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x_in, target = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    inner = InnerLoop(steps=3, lr=0.05, optimizer="sgd", learn_lr="per_parameter", learn_momentum=True,
                      parameters=model.parameters(), optimizer_kwargs={"momentum": 0.5}).double()
    with torch.no_grad():  # distinct values per weight and step, so a mixed-up index would show
        for lr in inner.log_lr:
            lr.add_(0.3 * torch.randn_like(lr))
        inner.momentum_logit.add_(torch.randn(3, dtype=torch.float64))

    def loss_of(out):
        return ((out - target) ** 2).mean()

    result = inner.run(model, lambda f, k: loss_of(f(x_in)))
    engine_loss = loss_of(result(x_in))
    meta = list(model.parameters()) + list(inner.parameters())
    engine_grads = torch.autograd.grad(engine_loss, meta)

    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    buffers = {}
    for k in range(3):
        loss = loss_of(functional_call(model, params, (x_in,)))
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        momentum = torch.sigmoid(inner.momentum_logit[k])
        new = {}
        for (name, p), g, lr in zip(params.items(), grads, inner.log_lr):
            buffers[name] = g if k == 0 else momentum * buffers[name] + g  # torch SGD, dampening 0
            new[name] = p - lr[k].exp() * buffers[name]
        params = new
    reference_loss = loss_of(functional_call(model, params, (x_in,)))
    reference_grads = torch.autograd.grad(reference_loss, meta)
    assert names == ["weight", "bias"]
    torch.testing.assert_close(engine_loss, reference_loss)
    for a, b in zip(engine_grads, reference_grads):
        torch.testing.assert_close(a, b)
    assert len(inner.step_lrs()) == 3 and len(inner.step_momenta()) == 3


def test_learned_settings_reject_bad_configurations():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="needs `parameters`"):
        InnerLoop(steps=2, learn_lr="per_parameter")
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        InnerLoop(steps=2, optimizer="adam", learn_momentum=True)
    with pytest.raises(ValueError, match="learn_lr must be"):
        InnerLoop(steps=2, learn_lr="per_weight")
    inner = InnerLoop(steps=2, optimizer="sgd", learn_lr="per_parameter", parameters=torch.nn.Linear(3, 2).parameters())
    with pytest.raises(ValueError, match="do not match"):
        inner.run(model, lambda f, k: f(torch.ones(1, 2)).sum())
    with pytest.raises(ValueError, match="learned settings exist for 2 steps"):
        InnerLoop(steps=2, learn_lr=True).run(model, lambda f, k: f(torch.ones(1, 2)).sum(), steps=3)


def test_zero_inner_steps_is_the_meta_model_itself():
    model = torch.nn.Linear(2, 2)
    x_in = torch.randn(3, 2)
    result = InnerLoop(steps=0).run(model, lambda f, k: f(x_in).sum())
    assert result.params is None and torch.equal(result(x_in), model(x_in))

"""Learned variational costs and solvers (Fablet, Drumetz & Rousseau)."""

import itertools
import math
import os
from pathlib import Path

import deepinv as dinv
import pytest
import torch

from deepinv_meta import MetaTrainer, NonFiniteLossError, Task
from deepinv_meta.bilevel import fit_prior, train_end_to_end
from deepinv_meta.dynamics import lorenz96_field, sample_sequences, simulate
from deepinv_meta.losses import VariationalLoss
from deepinv_meta.models import (FSGD, AutoEncoderPrior, FixedPoint, LSTMSolver, ODEPrior, PCAPrior, TwoScaleCNN,
                                 VariationalCost, VariationalReconstructor)
from deepinv_meta.physics import RandomHolesMaskGenerator, TimeSeriesMaskGenerator, interpolate_in_time

SIZE = (1, 4, 4)


def pca_problem(dtype=torch.float64):
    torch.manual_seed(0)
    basis = torch.randn(3, 16, dtype=dtype)
    data = (torch.randn(200, 3, dtype=dtype) @ basis + 0.05 * torch.randn(200, 16, dtype=dtype)).view(200, *SIZE)
    prior = PCAPrior(SIZE, components=3).to(dtype).fit(data)
    mask = (torch.rand(1, *SIZE) > 0.4).to(dtype)
    physics = dinv.physics.Inpainting(SIZE, mask=mask)
    return data, prior, physics, mask


def test_cost_gradient_matches_closed_form():
    """For a PCA prior, grad U = 2 l1/N A^T(Ax - y) + 2 l2/N (I - P)(x - mu) (P an orthogonal projection)."""
    data, prior, physics, mask = pca_problem()
    cost = VariationalCost(prior, lambda_data=0.7, lambda_prior=2.0)
    x, y = torch.randn(2, *SIZE, dtype=torch.float64), physics(data[:2])
    n = 16
    projection = prior.basis.T @ prior.basis
    residual = (x.flatten(1) - prior.mean) @ (torch.eye(n, dtype=torch.float64) - projection)
    expected = 2 * 0.7 / n * mask * (mask * x - y) + 2 * 2.0 / n * residual.view_as(x)
    torch.testing.assert_close(cost.gradient(x, y, physics), expected)


def test_fsgd_reaches_the_minimiser_of_a_quadratic_cost():
    """FSGD on the (convex, quadratic) PCA cost converges to the solution of its normal equations."""
    data, prior, physics, mask = pca_problem()
    lam1, lam2 = 1.0, 0.5
    y = physics(data[:1])
    identity = torch.eye(16, dtype=torch.float64)
    complement = identity - prior.basis.T @ prior.basis
    system = lam1 * torch.diag(mask.flatten()) + lam2 * complement
    rhs = lam1 * (mask * y).flatten() + lam2 * complement @ prior.mean.flatten()
    minimiser = torch.linalg.solve(system, rhs).view_as(y)
    model = VariationalReconstructor(VariationalCost(prior, lam1, lam2), FSGD(iterations=3000, stepsize=4.0))
    with torch.no_grad():
        x_hat = model.eval()(y, physics)
    torch.testing.assert_close(x_hat, minimiser, atol=1e-6, rtol=1e-6)


def small_model(dtype=torch.float64, iterations=3):
    torch.manual_seed(1)
    prior = TwoScaleCNN(1, hidden=3)
    solver = LSTMSolver(1, hidden_channels=2, iterations=iterations)
    torch.nn.init.normal_(solver.output.weight, std=0.1)  # non-zero H so every weight gets a gradient
    return VariationalReconstructor(VariationalCost(prior, learn_weights=True), solver).to(dtype)


def test_end_to_end_gradient_matches_finite_differences():
    """d loss / d log(lambda) through 3 LSTM steps, each fed with grad_x U (second-order autograd)."""
    model = small_model()
    physics = dinv.physics.Inpainting(SIZE, mask=torch.tensor([[[1.0, 0, 1, 1]] * 4], dtype=torch.float64))
    x = torch.rand(2, *SIZE, dtype=torch.float64)
    y = physics(x)
    loss = VariationalLoss(model.prior)
    model.train()
    value = loss(model(y, physics), x)
    (grad,) = torch.autograd.grad(value, model.cost.log_weights)
    eps = 1e-6
    numeric = torch.zeros(2, dtype=torch.float64)
    for i in range(2):
        with torch.no_grad():
            model.cost.log_weights[i] += eps
        plus = loss(model(y, physics), x).item()
        with torch.no_grad():
            model.cost.log_weights[i] -= 2 * eps
        minus = loss(model(y, physics), x).item()
        with torch.no_grad():
            model.cost.log_weights[i] += eps
        numeric[i] = (plus - minus) / (2 * eps)
    assert grad.abs().max() > 1e-6  # the check is not vacuous
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-8)


def test_evaluation_is_detached_and_equals_training_forward():
    model = small_model(torch.float32)
    physics = dinv.physics.Inpainting(SIZE, mask=0.6)
    x = torch.rand(3, *SIZE)
    y = physics(x)
    before = [p.clone() for p in model.parameters()]
    with torch.no_grad():
        evaluated = model.eval()(y, physics)
    trained = model.train()(y, physics)
    assert not evaluated.requires_grad and trained.requires_grad
    torch.testing.assert_close(evaluated, trained.detach())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def tiny_task(size=(1, 8, 8), count=64):
    torch.manual_seed(0)
    grid = torch.linspace(0, 1, size[-1])
    phases = torch.rand(count, 1, 1, 1) * 6
    data = 0.5 + 0.4 * torch.sin(4 * grid.view(1, 1, 1, -1) + phases) * torch.cos(3 * grid.view(1, 1, -1, 1))
    physics = dinv.physics.Inpainting(size, mask=torch.ones(size), noise_model=dinv.physics.GaussianNoise(0.02))
    generator = RandomHolesMaskGenerator(size, holes=1, hole_size=3)
    return Task("holes", physics, data, data, generator=generator)


def test_end_to_end_training_reduces_the_loss_and_freezes_a_fixed_prior():
    task = tiny_task()
    prior = PCAPrior((1, 8, 8), components=6).fit(task.train_data)
    model = VariationalReconstructor(VariationalCost(prior), LSTMSolver(1, 4))
    trainer = train_end_to_end(model, [task], steps=60, iterations=(2, 4), batch_size=8, lr=1e-2, joint=False,
                               progress=False, device="cpu")
    losses = [r["outer_loss"] for r in trainer.history]
    assert model.solver.iterations == 4
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5
    assert not model.cost.log_weights.requires_grad
    assert all(p.requires_grad for p in model.solver.parameters())


def test_end_to_end_training_keeps_the_weights_with_the_lowest_held_out_loss():
    task = tiny_task()
    prior = PCAPrior((1, 8, 8), components=6).fit(task.train_data)
    model = VariationalReconstructor(VariationalCost(prior), LSTMSolver(1, 4))
    # lr 1.0 makes the loss jump up and down in the last phase (measured: best at its first check)
    trainer = train_end_to_end(model, [task], steps=40, iterations=(2, 4), batch_size=8, lr=1.0, joint=False,
                               progress=False, device="cpu", validations=4, grad_clip=math.inf)
    losses = {v["step"]: v["loss"] for v in trainer.validation}
    assert list(losses) == [25, 30, 35, 40]  # the last phase (4 iterations, steps 21-40) in 4 chunks
    assert trainer.selected_step == min(losses, key=losses.get) < trainer.step
    assert trainer.evaluate()["holes"]["meta"] == pytest.approx(losses[trainer.selected_step])
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in trainer.history)  # measured, not clipped


def test_joint_training_halves_the_prior_learning_rate():
    task = tiny_task()
    model = VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=2), learn_weights=True), LSTMSolver(1, 2))
    trainer = train_end_to_end(model, [task], steps=1, iterations=None, batch_size=2, lr=1e-2, progress=False, device="cpu")
    groups = {round(g["lr"], 6): len(g["params"]) for g in trainer.optimizer.param_groups}
    assert groups == {0.005: len(list(model.prior.parameters())), 0.01: 1 + len(list(model.solver.parameters()))}
    with pytest.raises(ValueError, match="match no trainable weight"):
        MetaTrainer(model, [task], inner_steps=0, lr_scales={"nothing.": 2.0}, progress=False)


def test_fit_prior_and_fixed_point():
    task = tiny_task()
    ae = AutoEncoderPrior((1, 8, 8), latent=4, hidden=(32, 16))
    losses = fit_prior(ae, task.train_data, steps=150, lr=3e-3, batch_size=16, progress=False, device="cpu")
    assert losses[-1] < 0.3 * losses[0]
    model = VariationalReconstructor(VariationalCost(ae), FixedPoint(1))
    x = task.train_data[:2]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x, dinv.physics.Denoising()), ae(x))


def test_non_finite_solver_output_is_an_error():
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x * float("nan")

    model = VariationalReconstructor(VariationalCost(Broken()), FSGD(iterations=2))
    with pytest.raises(NonFiniteLossError, match="output of FSGD"):
        model(torch.rand(1, *SIZE), dinv.physics.Denoising())


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="deepinv.physics.Physics"):
        VariationalReconstructor(VariationalCost(torch.nn.Identity()), FSGD())(torch.rand(1, *SIZE), None)
    with pytest.raises(TypeError, match="VariationalCost"):
        VariationalReconstructor(torch.nn.Identity(), FSGD())
    with pytest.raises(ValueError, match="divisible"):
        TwoScaleCNN(1, hidden=2, scale=4)(torch.rand(1, 1, 6, 6))
    with pytest.raises(ValueError, match="samples of shape"):
        PCAPrior(SIZE, 2).fit(torch.rand(10, 1, 5, 5))
    with pytest.raises(ValueError, match="lambda"):
        VariationalCost(torch.nn.Identity(), lambda_prior=0.0)
    with pytest.raises(ValueError, match="Unknown dynamical system"):
        ODEPrior("lorenz84")
    with pytest.raises(ValueError, match=r"\(B, 3, 1, T\)"):
        ODEPrior("lorenz63")(torch.rand(1, 3, 10))
    with pytest.raises(ValueError, match="hole_size"):
        RandomHolesMaskGenerator((1, 8, 8), hole_size=9)
    with pytest.raises(ValueError, match="observed"):
        TimeSeriesMaskGenerator(3, 20, every=2, observed=4)
    with pytest.raises(ValueError, match="init must be one of"):
        VariationalReconstructor(VariationalCost(torch.nn.Identity()), FSGD(), init="zeros")
    with pytest.raises(ValueError, match="needs a physics with a mask"):
        VariationalReconstructor(VariationalCost(torch.nn.Identity()), FSGD(), init="interpolation")(
            torch.rand(1, *SIZE), dinv.physics.Denoising())


def test_interpolation_in_time_matches_numpy():
    np = pytest.importorskip("numpy")
    torch.manual_seed(0)
    y = torch.randn(3, 5, 1, 30, dtype=torch.float64)
    mask = TimeSeriesMaskGenerator(5, 30, every=4, observed=2).step(batch_size=3, seed=0)["mask"].double()
    mask[1, 2] = 0  # a component never observed in this sample: filled with the sample's mean observation
    x = interpolate_in_time(y * mask, mask)
    for b, d in itertools.product(range(3), range(5)):
        seen = mask[b, d, 0].bool().numpy()
        if seen.any():
            t = np.arange(30)  # np.interp holds the end values constant, as interpolate_in_time does
            expected = np.interp(t, t[seen], y[b, d, 0].numpy()[seen])
        else:
            expected = (y[b] * mask[b]).sum().item() / mask[b].sum().item()
        np.testing.assert_allclose(x[b, d, 0].numpy(), expected, atol=1e-12)


def test_interpolation_start_is_where_the_solver_begins():
    mask = TimeSeriesMaskGenerator(3, 40, every=8).step(batch_size=2, seed=0)["mask"]
    physics = dinv.physics.Inpainting((3, 1, 40), mask=mask)
    x = sample_sequences(simulate("lorenz63", 400), count=2, length=40)
    y = physics(x)
    model = VariationalReconstructor(VariationalCost(ODEPrior("lorenz63")), FSGD(iterations=0), init="interpolation")
    with torch.no_grad():
        torch.testing.assert_close(model(y, physics), interpolate_in_time(y, mask))
        zero_filled = VariationalReconstructor(model.cost, FSGD(iterations=0))(y, physics)
    assert ((model(y, physics) - x) ** 2).mean() < 0.2 * ((zero_filled - x) ** 2).mean()


def test_mask_generators():
    masks = RandomHolesMaskGenerator((1, 28, 28), holes=3, hole_size=9).step(batch_size=4, seed=0)["mask"]
    missing = (1 - masks).sum(dim=(1, 2, 3))
    assert ((missing > 81 - 1) & (missing <= 3 * 81)).all()
    series = TimeSeriesMaskGenerator(40, 20, every=4, observed=20).step(batch_size=2, seed=1)["mask"]
    per_time = series[:, :, 0].sum(dim=1)
    assert torch.equal(per_time[:, ::4], torch.full((2, 5), 20.0)) and per_time[:, 1::4].sum() == 0
    assert not torch.equal(series[0, :, 0, 0], series[0, :, 0, 4])  # a fresh subset at each observed time


def test_lorenz_models():
    forcing = torch.full((1, 40, 5), 8.0)
    assert lorenz96_field(forcing).abs().max() == 0  # x_i = F is an equilibrium of Lorenz-96
    series = sample_sequences(simulate("lorenz96", 200, spin_up=200), count=2, length=40)
    assert series.shape == (2, 40, 1, 40)
    offset, scale = series.mean().item(), series.std().item()
    prior = ODEPrior("lorenz96", offset=offset, scale=scale)
    standardised = (series - offset) / scale
    residual = ((standardised - prior(standardised)) ** 2).mean().item()
    assert residual < 1e-6  # RK4 at dt = 0.05 follows the RK45 reference trajectory
    shuffled = standardised[..., torch.randperm(40)]
    assert ((shuffled - prior(shuffled)) ** 2).mean().item() > 1e3 * residual


def test_sparse_coding_inpainter_fills_holes():
    pytest.importorskip("sklearn")
    from deepinv_meta.baselines import SparseCodingInpainter

    task = tiny_task(count=200)
    model = SparseCodingInpainter.fit(task.train_data, atoms=20, algorithm="omp", sparsity=4, iterations=5)
    episode = task.episode(8, seed=0)
    x_hat = model(episode.y_test, episode.physics)
    missing = 1 - episode.physics.mask
    error = (((x_hat - episode.x_test) * missing) ** 2).sum() / missing.sum()
    zero_filled = ((episode.x_test * missing) ** 2).sum() / missing.sum()
    assert error < 0.1 * zero_filled


MNIST = Path(os.environ.get("DEEPINV_META_DATA", "../shared/data")) / "mnist" / "t10k-images-idx3-ubyte.gz"


@pytest.mark.skipif(not MNIST.is_file(), reason="offline MNIST not available (set DEEPINV_META_DATA)")
def test_load_mnist():
    from deepinv_meta.data import load_mnist

    digits = load_mnist(MNIST.parent.parent)
    assert digits.shape == (10000, 1, 28, 28) and 0 <= digits.min() and digits.max() == 1
    assert math.isclose(digits.mean().item(), 0.1325, abs_tol=1e-3)


def test_save_and_load_round_trip(tmp_path):
    from deepinv_meta import load, save

    model = small_model(torch.float32)
    with torch.no_grad():
        model.cost.log_weights += 0.3
    path = save(model, tmp_path / "variational.pt", note="test")
    loaded = load(path)
    physics = dinv.physics.Inpainting(SIZE, mask=0.5)
    y = physics(torch.rand(2, *SIZE))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(y, physics), model.eval()(y, physics))
    assert loaded.solver.iterations == 3 and loaded.cost.weights == pytest.approx(model.cost.weights)
    assert loaded.init == "adjoint"
    model.init = "interpolation"
    assert load(save(model, tmp_path / "interpolation.pt")).init == "interpolation"
    with pytest.raises(TypeError, match="has no `config`"):
        save(VariationalReconstructor(VariationalCost(torch.nn.Identity()), FSGD()), tmp_path / "x.pt")


def test_a_model_trained_on_standardised_data_takes_and_returns_original_intensities(tmp_path):
    import deepinv_meta
    from deepinv_meta.models.variational import LSTMSolver, TwoScaleCNN, VariationalCost, VariationalReconstructor

    torch.manual_seed(0)
    model = VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=4)), LSTMSolver(1, iterations=2)).eval()
    offset, scale = 0.13, 0.31
    physics = dinv.physics.Inpainting((1, 8, 8), mask=0.6)
    x = torch.rand(2, 1, 8, 8)
    standardised = model(physics((x - offset) / scale), physics) * scale + offset  # what users had to write
    model.normalisation = (offset, scale)
    torch.testing.assert_close(model(physics(x), physics), standardised, rtol=1e-5, atol=1e-5)
    path = deepinv_meta.save(model, tmp_path / "v.pt")
    assert deepinv_meta.load(path).normalisation == (offset, scale)
    with pytest.raises(ValueError, match="scale > 0"):
        VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=4)), LSTMSolver(1), normalisation=(0.0, 0.0))


def test_a_trainer_with_learned_cost_weights_resumes(tmp_path):
    from deepinv_meta.models.variational import LSTMSolver, TwoScaleCNN, VariationalCost, VariationalReconstructor

    def build():
        torch.manual_seed(0)
        return VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=4), learn_weights=True),
                                        LSTMSolver(1, iterations=2))

    x = torch.rand(8, 1, 8, 8)
    task = Task("inpainting", dinv.physics.Inpainting((1, 8, 8), mask=0.7), x, x)
    trainer = MetaTrainer(build(), [task], inner_steps=0, outer_lr=0.05, batch_size=2, progress=False,
                          checkpoint=tmp_path / "run.pt")
    trainer.train(steps=3)
    assert trainer.model.cost.weights != (1.0, 1.0)  # the learned lambdas moved, and with them the config
    resumed = MetaTrainer(build(), [task], inner_steps=0, outer_lr=0.05, batch_size=2, progress=False,
                          checkpoint=tmp_path / "run.pt")
    assert resumed.step == 3 and resumed.model.cost.weights == trainer.model.cost.weights

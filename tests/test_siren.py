"""SIREN, MetaSIREN and MetaRED (Zhao): test-time optimisation from meta-learned weights."""

import copy

import deepinv as dinv
import pytest
import torch

from deepinv_meta import MetaTrainer, NonFiniteLossError
from deepinv_meta.models import SIREN, GradientDescent, MetaRED, MetaSIREN, REDFixedPoint
from deepinv_meta.tasks import Task


def centre_mask_physics(n=12):
    mask = torch.ones(1, n, n)
    mask[:, n // 3: 2 * n // 3, n // 3: 2 * n // 3] = 0
    return dinv.physics.Inpainting(img_size=(1, n, n), mask=mask)


def gaussian_kernel(sigma=1.0):
    return dinv.physics.functional.blur.gaussian_blur(sigma=(sigma, sigma))


def test_siren_initialisation_follows_sitzmann():
    siren = SIREN((3, 8, 10), hidden=64, layers=4, omega0=30.0)
    first, hidden = siren.linears[0], siren.linears[1]
    assert first.weight.abs().max() <= 1 / 2 and hidden.weight.abs().max() <= (6 / 64) ** 0.5 / 30
    assert siren().shape == (1, 3, 8, 10)
    with pytest.raises(ValueError, match="layers >= 2"):
        SIREN((1, 4, 4), layers=1)


def test_forward_adapts_a_copy_and_never_moves_the_meta_weights():
    physics = centre_mask_physics()
    model = MetaSIREN((1, 12, 12), steps=4, lr=0.05, hidden=16, layers=3).eval()
    theta = copy.deepcopy(model.state_dict())
    y = physics(torch.rand(2, 1, 12, 12))
    losses = []
    with torch.no_grad():  # as in deepinv.test: the inner steps must still run
        x_hat = model(y, physics, callback=lambda k, loss: losses.append(loss))
    assert len(losses) == 2 * 4 and losses[3] < losses[0]  # 4 steps per image, data fit improves
    assert not x_hat.requires_grad
    for key, value in model.state_dict().items():
        assert torch.equal(value, theta[key]), key
    # each image is its own problem: the batch result equals image-by-image results
    with torch.no_grad():
        alone = model(y[1:], physics)
    torch.testing.assert_close(x_hat[1:], alone)
    # zero steps: the meta-learned image itself
    with torch.no_grad():
        torch.testing.assert_close(model(y[:1], physics, steps=0), model.net())


def test_meta_gradient_matches_finite_differences():
    """d outer / d theta and d outer / d log-lr through the inner SGD steps and a GD solver."""
    torch.manual_seed(0)
    physics = centre_mask_physics(6)
    model = MetaSIREN((1, 6, 6), solver=GradientDescent(1, 0.9), steps=2, lr=0.05, hidden=6, layers=2,
                      omega0=3.0).double().train()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    y = physics(x)

    def outer():
        return ((model(y, physics) - x) ** 2).mean()

    loss = outer()
    params = [model.net.linears[0].weight, model.inner.log_lr]
    grads = torch.autograd.grad(loss, params)
    eps = 1e-6
    for p, g in zip(params, grads):
        for index in [(0, 0), (1, 1)] if p.dim() == 2 else [(0,), (1,)]:
            with torch.no_grad():
                p[index] += eps
                up = outer().item()
                p[index] -= 2 * eps
                down = outer().item()
                p[index] += eps
            assert abs((up - down) / (2 * eps) - g[index].item()) < 1e-6 * max(1.0, abs(g[index].item()))
    assert grads[1].abs().min() > 0


def test_meta_training_through_the_shared_trainer_lowers_the_outer_loss():
    torch.manual_seed(0)
    n = 12
    physics = centre_mask_physics(n)
    base = torch.linspace(0, 1, n).view(1, 1, 1, n).expand(16, 1, n, n)  # a family of similar images
    images = (base + 0.05 * torch.rand(16, 1, n, n)).clamp(0, 1)
    task = Task("centre inpainting", physics, images[:8], images[8:])
    model = MetaSIREN((1, n, n), solver=GradientDescent(1, 0.9), steps=2, hidden=32, layers=3,
                      learn_lr="per_parameter")
    trainer = MetaTrainer(model, [task], inner_steps=0, outer_lr=1e-3, outer_loss="l1", batch_size=4,
                          progress=False, device="cpu")
    history = trainer.train(steps=40)
    assert trainer.config["outer_loss"] == "l1"
    first, last = history[0]["outer_loss"], sum(r["outer_loss"] for r in history[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_meta_red_freezes_or_trains_its_denoiser():
    denoiser = dinv.models.DnCNN(1, 1, pretrained=None, depth=2, nf=4)
    physics = dinv.physics.BlurFFT(img_size=(1, 8, 8), filter=gaussian_kernel())
    frozen = MetaRED((1, 8, 8), copy.deepcopy(denoiser), red_iterations=1, steps=1, hidden=8, layers=2)
    trainer = MetaTrainer(frozen, [Task("blur", physics, torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8))],
                          inner_steps=0, batch_size=1, progress=False, device="cpu")
    denoiser_ids = {id(p) for p in frozen.solver.parameters()}
    assert not denoiser_ids & {id(p) for p in trainer.meta_params}
    trained = MetaRED((1, 8, 8), copy.deepcopy(denoiser), red_iterations=1, steps=1, hidden=8, layers=2,
                      train_denoiser=True).train()
    y = physics(torch.rand(1, 1, 8, 8))
    ((trained(y, physics) - 0.5) ** 2).mean().backward()
    assert all(p.grad is not None for p in trained.solver.parameters())


def test_learned_red_weights_start_at_gamma_and_are_meta_trained():
    denoiser = dinv.models.DnCNN(1, 1, pretrained=None, depth=2, nf=4)
    physics = dinv.physics.BlurFFT(img_size=(1, 8, 8), filter=gaussian_kernel())
    x0, y = torch.rand(1, 1, 8, 8), physics(torch.rand(1, 1, 8, 8))
    fixed, learned = (REDFixedPoint(denoiser, iterations=3, gamma=2.0, learn_gamma=flag) for flag in (False, True))
    torch.testing.assert_close(learned(x0, y, physics), fixed(x0, y, physics))
    assert [g.item() for g in learned.gammas()] == pytest.approx([2.0] * 3)

    model = MetaRED((1, 8, 8), copy.deepcopy(denoiser), red_iterations=2, steps=1, hidden=8, layers=2, gamma=2.0,
                    learn_gamma=True)
    trainer = MetaTrainer(model, [Task("blur", physics, torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8))],
                          inner_steps=0, batch_size=2, outer_lr=1e-2, progress=False, device="cpu")
    assert any(p is model.solver.log_gamma for p in trainer.meta_params)
    assert not any(p is q for p in trainer.meta_params for q in model.solver.prior.parameters())  # DnCNN fixed
    trainer.train(steps=3)
    assert not torch.allclose(model.solver.log_gamma.exp(), torch.full((2,), 2.0))


def test_red_fixed_point_with_an_exact_denoiser_keeps_a_consistent_image():
    """If D(x) = x and y = A x, x is a fixed point of the RED iteration."""
    physics = dinv.physics.BlurFFT(img_size=(1, 8, 8), filter=gaussian_kernel())
    x = torch.rand(1, 1, 8, 8)

    class Identity(torch.nn.Module):
        def forward(self, x, sigma):
            return x

    out = REDFixedPoint(Identity(), iterations=3, gamma=5.0)(x, physics(x), physics)
    torch.testing.assert_close(out, x, atol=1e-4, rtol=1e-4)


def test_bad_inputs_get_clear_errors():
    physics = centre_mask_physics(12)
    model = MetaSIREN((1, 12, 12), steps=1, hidden=8, layers=2).eval()
    y = physics(torch.rand(2, 1, 12, 12))
    with pytest.raises(ValueError, match="img_size"):
        MetaSIREN((1, 10, 10), steps=1, hidden=8, layers=2)(y, physics)
    per_image = dinv.physics.Inpainting(img_size=(1, 12, 12), mask=torch.rand(2, 1, 12, 12) > 0.5)
    with pytest.raises(ValueError, match="per-image parameters"):
        model(per_image(torch.rand(2, 1, 12, 12)), per_image)
    with pytest.raises(TypeError, match="floating-point"):
        model(y.to(torch.complex64), physics)
    diverging = MetaSIREN((1, 12, 12), steps=30, lr=1e6, learn_lr=False, hidden=8, layers=2).eval()
    with pytest.raises(NonFiniteLossError):
        diverging(y[:1] * 1e3, physics)


@pytest.mark.parametrize("kind", ["siren", "gradient descent", "red", "red, learned gamma"])
def test_save_and_load_rebuild_the_same_reconstructor(tmp_path, kind):
    from deepinv_meta import load, save

    torch.manual_seed(0)
    size = (1, 12, 12)
    if kind.startswith("red"):
        denoiser = dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None)
        model = MetaRED(size, denoiser, red_iterations=2, steps=2, hidden=16, layers=3, gamma=2.0, sigma=0.1,
                        learn_gamma=kind.endswith("gamma"))
        physics = dinv.physics.BlurFFT(size, filter=gaussian_kernel())
    else:
        solver = GradientDescent(2, 0.5) if kind == "gradient descent" else None
        model = MetaSIREN(size, solver=solver, steps=2, hidden=16, layers=3, learn_lr="per_parameter")
        physics = centre_mask_physics()
    with torch.no_grad():  # move every weight away from its initial value, learned step sizes included
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loaded = load(save(model, tmp_path / "model.pt"))
    assert type(loaded) is type(model) and loaded.config == model.config
    y = physics(torch.rand(1, *size))
    model.eval(), loaded.eval()
    assert torch.allclose(loaded(y, physics), model(y, physics), atol=1e-6)


def test_meta_siren_with_a_custom_solver_says_it_cannot_be_saved(tmp_path):
    from deepinv_meta import save

    model = MetaSIREN((1, 8, 8), solver=REDFixedPoint(dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None)),
                      hidden=8, layers=2)
    with pytest.raises(TypeError, match="state_dict"):
        save(model, tmp_path / "model.pt")

"""MetaDIP (meta-learned Deep Image Prior) and the vanilla DIP baseline."""

import copy

import deepinv as dinv
import pytest
import torch

from deepinv_meta import MetaTrainer, NonFiniteLossError, load, save
from deepinv_meta.baselines import VanillaDIP
from deepinv_meta.models import MetaDIP
from deepinv_meta.tasks import Task

SMALL = dict(channels=(8, 16), latent_channels=4, fourier_features=4)


def denoising(sigma=0.1):
    return dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma, rng=torch.Generator().manual_seed(0)))


def test_weights_never_drift_between_calls_and_no_grad_still_fits():
    physics = denoising()
    model = MetaDIP((1, 16, 16), steps=6, **SMALL).eval()
    theta = copy.deepcopy(model.state_dict())
    y = physics(torch.rand(1, 1, 16, 16))
    losses = []
    with torch.no_grad():  # dinv.test / Trainer evaluation
        first = model(y, physics, callback=lambda k, v: losses.append(v))
        second = model(y, physics)
    assert len(losses) == 6 and losses[-1] < losses[0]
    torch.testing.assert_close(first, second)  # deepinv's DeepImagePrior would continue from the last fit
    for key, value in model.state_dict().items():
        assert torch.equal(value, theta[key]), key


def test_meta_training_uses_train_steps_and_learns_rates_and_momenta():
    torch.manual_seed(0)
    physics = denoising(0.1)
    images = torch.rand(8, 1, 16, 16)
    model = MetaDIP((1, 16, 16), steps=7, train_steps=3, **SMALL)
    counted = []
    model.train()
    out = model(physics(images[:1]), physics, callback=lambda k, v: counted.append(k))
    assert counted == [0, 1, 2] and out.requires_grad  # train_steps while meta-gradients are tracked
    trainer = MetaTrainer(model, [Task("denoising", physics, images[:4], images[4:])], inner_steps=0,
                          outer_lr=1e-3, batch_size=2, progress=False, device="cpu")
    lr_before = model.inner.log_lr.detach().clone()
    momentum_before = model.inner.momentum_logit.detach().clone()
    trainer.train(steps=2)
    assert not torch.equal(model.inner.log_lr, lr_before)
    assert not torch.equal(model.inner.momentum_logit, momentum_before)
    model.eval()
    counted.clear()
    with torch.no_grad():
        model(physics(images[:1]), physics, callback=lambda k, v: counted.append(k))
    assert len(counted) == 7  # beyond the 3 learned steps, the last learned settings are reused


def test_phase_retrieval_needs_complex_physics_flag():
    physics = dinv.physics.RandomPhaseRetrieval(m=2 * 16 * 16, img_size=(1, 16, 16))
    y = physics(torch.rand(1, 1, 16, 16).to(torch.complex64))
    with pytest.raises(TypeError, match="complex_physics=True"):
        MetaDIP((1, 16, 16), steps=1, **SMALL).eval()(y, physics)
    out = MetaDIP((1, 16, 16), steps=2, complex_physics=True, **SMALL).eval()(y, physics)
    assert out.shape == (1, 1, 16, 16) and not out.is_complex()


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="divisible by 4"):
        MetaDIP((1, 18, 18), channels=(8, 16, 32))
    with pytest.raises(ValueError, match="integer >= 0"):
        MetaDIP((1, 16, 16), steps=-1, **SMALL)
    physics = denoising()
    model = MetaDIP((1, 16, 16), steps=3, lr=1e8, **SMALL).eval()
    with pytest.raises(NonFiniteLossError):
        with torch.no_grad():
            model(physics(torch.rand(1, 1, 16, 16)) * 1e6, physics)


def test_save_and_load_round_trip(tmp_path):
    model = MetaDIP((1, 16, 16), steps=2, **SMALL).eval()
    with torch.no_grad():
        model.inner.log_lr.add_(0.5)
    restored = load(save(model, tmp_path / "metadip.pt")).eval()
    y = denoising()(torch.rand(1, 1, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(y, denoising()), restored(y, denoising()))


def test_vanilla_dip_is_reproducible_and_reports_every_iteration():
    physics = denoising()
    y = physics(torch.rand(1, 1, 16, 16))
    dip = VanillaDIP((1, 16, 16), iterations=4, generator=SMALL)
    seen = []
    first = dip(y, physics, callback=lambda k, x: seen.append(k))
    assert seen == [1, 2, 3, 4]
    torch.testing.assert_close(first, dip(y, physics))  # a fresh random init every call


def test_fidelity_is_normalised_by_its_curvature_relative_to_denoising():
    n = 1 * 16 * 16
    model = MetaDIP((1, 16, 16), steps=2, **SMALL)
    x = torch.rand(1, 1, 16, 16)
    denoising = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    assert model.fidelity_scale(denoising(x), denoising) == pytest.approx(1.0, rel=1e-3)
    cs = dinv.physics.CompressedSensing(m=n // 4, img_size=(1, 16, 16), rng=torch.Generator().manual_seed(0))
    norm = torch.linalg.matrix_norm(cs._A, ord=2).item() ** 2  # the exact ||A||^2 of the Gaussian matrix
    assert model.fidelity_scale(cs(x), cs) == pytest.approx(4 * norm, rel=0.05)
    model.normalize_fidelity = False
    assert model.fidelity_scale(cs(x), cs) == 1.0


@pytest.mark.parametrize("optimizer, learn_lr", [("adam", True), ("sgd", "per_parameter")])
def test_inner_optimizer_options_meta_train_and_round_trip(tmp_path, optimizer, learn_lr):
    """Adam inner steps (no momentum learned) and Meta-SGD rates (one per weight and step) both get meta-gradients."""
    torch.manual_seed(0)
    physics = denoising(0.1)
    images = torch.rand(4, 1, 16, 16)
    model = MetaDIP((1, 16, 16), steps=3, train_steps=2, optimizer=optimizer, learn_lr=learn_lr,
                    lr=1e-2 if optimizer == "adam" else 1.0, **SMALL)
    assert model.inner.optimizer == optimizer and model.inner.learn_lr == ("per_step" if learn_lr is True else learn_lr)
    assert hasattr(model.inner, "momentum_logit") == (optimizer == "sgd")
    rates = [p.detach().clone() for p in model.inner.parameters()]
    trainer = MetaTrainer(model, [Task("denoising", physics, images[:2], images[2:])], inner_steps=0,
                          outer_lr=1e-3, batch_size=1, progress=False, device="cpu")
    trainer.train(steps=1)
    assert all(not torch.equal(p, q) for p, q in zip(model.inner.parameters(), rates))
    model.eval()
    restored = load(save(model, tmp_path / "metadip.pt")).eval()
    assert restored.inner.optimizer == optimizer and restored.inner.learn_lr == model.inner.learn_lr
    y = physics(images[:1])
    with torch.no_grad():
        torch.testing.assert_close(model(y, physics), restored(y, physics))


def test_output_does_not_depend_on_or_consume_the_global_random_state():
    """The fidelity scale comes from deepinv's power iteration (random start): seeded and forked here."""
    physics = dinv.physics.CompressedSensing(m=100, img_size=(1, 16, 16), rng=torch.Generator().manual_seed(0))
    y = physics(torch.rand(1, 1, 16, 16))
    model = MetaDIP((1, 16, 16), steps=2, **SMALL).eval()
    torch.manual_seed(1)
    first = model(y, physics)
    state = torch.get_rng_state()
    torch.manual_seed(2)
    second = model(y, physics)
    torch.manual_seed(1)
    model(y, physics)
    assert torch.equal(first, second) and torch.equal(torch.get_rng_state(), state)

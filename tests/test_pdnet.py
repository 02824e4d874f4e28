"""MetaPDNet on deepinv's linear physics, and inside deepinv's own tooling."""

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader

from deepinv_meta import MetaPDNet

SIZE = 16


def physics_cases():
    g = torch.Generator().manual_seed(0)
    kernel = dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0))
    mri_mask = dinv.physics.generator.GaussianMaskGenerator((SIZE, SIZE), acceleration=4, rng=g).step()["mask"]
    return {
        "denoising": (dinv.physics.Denoising(dinv.physics.GaussianNoise(0.05)), 1),
        "blur": (dinv.physics.Blur(filter=kernel, padding="circular"), 1),
        "blur_fft": (dinv.physics.BlurFFT(img_size=(1, SIZE, SIZE), filter=kernel), 1),
        "inpainting": (dinv.physics.Inpainting(img_size=(1, SIZE, SIZE), mask=0.5, rng=g), 1),
        "downsampling": (dinv.physics.Downsampling(img_size=(1, SIZE, SIZE), factor=2, filter="bicubic"), 1),
        "mri": (dinv.physics.MRI(mask=mri_mask, img_size=(SIZE, SIZE)), 2),
        "compressed_sensing": (dinv.physics.CompressedSensing(m=SIZE * SIZE // 4, img_size=(1, SIZE, SIZE), rng=g), 1),
    }


@pytest.mark.parametrize("name", list(physics_cases()))
def test_runs_on_each_physics_and_in_dinv_test(name):
    physics, channels = physics_cases()[name]
    x = torch.rand(3, channels, SIZE, SIZE)
    y = physics(x)
    model = MetaPDNet(depth=4, channels=8)  # grey filters, applied channel-wise to complex MRI images
    x_hat = model(y, physics)
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()

    loader = DataLoader(x, batch_size=2)  # a tensor is a dataset of images
    metrics = dinv.test(model, loader, physics, metrics=dinv.loss.metric.PSNR(), online_measurements=True,
                        verbose=False, show_progress_bar=False)
    assert any("PSNR" in key for key in metrics)


def test_fresh_model_is_stable_when_the_operator_norm_is_large():
    cs = dinv.physics.CompressedSensing(m=200, img_size=(1, SIZE, SIZE), rng=torch.Generator().manual_seed(0))
    physics = dinv.physics.LinearPhysics(A=lambda x: 3.0 * cs.A(x), A_adjoint=lambda y: 3.0 * cs.A_adjoint(y))
    x = torch.rand(2, 1, SIZE, SIZE)
    y = physics(x)
    model = MetaPDNet(depth=30, channels=8)
    tau = model.step_size(physics, physics.A_adjoint(y))
    torch.testing.assert_close(1 / tau, 9 * cs.compute_sqnorm(x, verbose=False), rtol=0.05, atol=0)
    # with tau = 1/||A^T A|| the 30 data-fidelity steps stay bounded; a unit step would diverge
    assert model(y, physics).abs().max() < 10
    diverged = MetaPDNet(depth=30, channels=8, tau=1.0)(y, physics).abs().max()
    assert not diverged < 1e3  # huge or NaN


def test_parameter_count_matches_paper():
    model = MetaPDNet(depth=20, channels=40)
    assert sum(p.numel() for p in model.parameters()) == 20 * 361


def test_every_layer_influences_the_output():
    physics = dinv.physics.Inpainting(img_size=(1, SIZE, SIZE), mask=0.5, rng=torch.Generator().manual_seed(0))
    model = MetaPDNet(depth=3, channels=4, init_std=0.3, init_threshold=0.1)
    y = physics(torch.rand(2, 1, SIZE, SIZE))
    model(y, physics).pow(2).sum().backward()
    for k in range(3):
        assert model.weight.grad[k].abs().max() > 0, f"layer {k} filters are dead"
        assert model.threshold.grad[k] != 0, f"layer {k} threshold is dead"


def test_bad_inputs_give_clear_errors():
    model = MetaPDNet(depth=2, channels=4)
    physics = dinv.physics.Inpainting(img_size=(1, SIZE, SIZE), mask=0.5)
    with pytest.raises(TypeError, match="linear operator"):
        model(torch.rand(1, 1, SIZE, SIZE), dinv.physics.RandomPhaseRetrieval(m=50, img_size=(1, SIZE, SIZE)))
    with pytest.raises(ValueError, match="img_size"):
        model(torch.rand(1, 1, SIZE + 3, SIZE), physics)
    with pytest.raises(ValueError, match="in_channels=2"):
        MetaPDNet(depth=2, channels=4, in_channels=3)(torch.rand(1, 2, SIZE, SIZE), dinv.physics.Denoising())
    with pytest.raises(ValueError, match="depth"):
        MetaPDNet(depth=0)
    with pytest.raises(TypeError, match="real floating-point"):
        model(torch.ones(1, 1, SIZE, SIZE, dtype=torch.long), physics)

"""deepinv baselines wrapped as reconstructors, and their grid search."""

import deepinv as dinv
import pytest
import torch

from deepinv_meta import baselines
from deepinv_meta.data import center_crop, embedded_images
from deepinv_meta.tasks import decimation


def crops(size=48):
    return torch.stack([center_crop(im, size) for im in embedded_images(("camera", "coins"))])


@pytest.fixture(scope="module")
def sr_problem():
    x = crops()
    physics = decimation((1, 48, 48))
    return physics, physics(x), x


def test_adjoint_is_a_reconstructor(sr_problem):
    physics, y, x = sr_problem
    assert isinstance(baselines.Adjoint(), dinv.models.Reconstructor)
    assert torch.allclose(baselines.Adjoint()(y, physics), physics.A_adjoint(y))


@pytest.mark.parametrize("build", [lambda **kw: baselines.tgv(0.05, iterations=5, inner_iterations=50, **kw),
                                   lambda **kw: baselines.tv(0.05, iterations=5, inner_iterations=50, **kw),
                                   lambda **kw: baselines.wavelet(0.05, iterations=5, **kw)])
def test_variational_baselines_denoise(build):
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1, rng=torch.Generator().manual_seed(0)))
    x = crops()
    y = physics(x)
    noisy = dinv.loss.metric.PSNR()(y.clamp(0, 1), x).mean()
    assert baselines.psnr_per_image(build(), physics, y, x).mean() > noisy + 3


def test_bicubic_start_for_decimation(sr_problem):
    # From A^T y (zeros at 3 of 4 pixels) a weak prior barely fills the holes; from bicubic it refines it.
    physics, y, x = sr_problem
    bicubic = baselines.psnr_per_image(baselines.Bicubic(2), physics, y, x).mean()
    from_zeros = baselines.psnr_per_image(baselines.tgv(0.01, iterations=5, inner_iterations=50), physics, y, x).mean()
    recon = baselines.tgv(0.01, iterations=5, inner_iterations=50, init=baselines.Bicubic(2))
    assert from_zeros < bicubic - 5
    assert baselines.psnr_per_image(recon, physics, y, x).mean() > bicubic - 0.3
    with torch.no_grad():
        torch.testing.assert_close(physics(recon(y, physics)), y, atol=0.02, rtol=0)


def test_dpir_with_any_denoiser_runs_channelwise():
    # Two-channel (complex MRI layout) images through a one-channel denoiser.
    physics = dinv.physics.Inpainting(img_size=(2, 16, 16), mask=0.7)
    x = torch.rand(1, 2, 16, 16)
    seen = []

    class Smooth(torch.nn.Module):
        def forward(self, x, sigma=None):
            seen.append(x.shape[1])
            return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    out = baselines.dpir(Smooth(), sigma=0.01)(physics(x), physics)
    assert out.shape == x.shape and set(seen) == {1}


def test_grid_search_picks_the_best(sr_problem):
    physics, y, x = sr_problem
    build = lambda ths: baselines.tgv(ths, iterations=3, inner_iterations=20, init=baselines.Bicubic(2))  # noqa: E731
    params, score, trials = baselines.grid_search(build, {"ths": [1e-3, 1.0]}, physics, y, x)
    assert len(trials) == 2 and score == max(s for _, s in trials)
    assert params == {"ths": 1e-3}  # a threshold of 1 flattens the image


def test_complex_magnitude_checks_channels():
    assert torch.allclose(baselines.complex_magnitude(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)), torch.tensor(5.0))
    with pytest.raises(ValueError, match="2 channels"):
        baselines.complex_magnitude(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("phase_retrieval", [False, True])
def test_pnp_admm_iterates_do_not_depend_on_the_total_count(phase_retrieval):
    """The benchmark tunes PnP-ADMM's iteration count along one run (callback); that must equal separate runs."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, 8, 8)
    if phase_retrieval:
        physics = dinv.physics.RandomPhaseRetrieval(m=128, img_size=(1, 8, 8), rng=torch.Generator().manual_seed(0))
        y = physics(x.to(torch.complex64))
    else:
        physics = dinv.physics.Inpainting((1, 8, 8), mask=0.5, rng=torch.Generator().manual_seed(0))
        y = physics(x)
    denoiser = lambda v, sigma: torch.nn.functional.avg_pool2d(v, 3, 1, 1, count_include_pad=False)  # noqa: E731
    path = {}
    pnp = baselines.PnPADMM(denoiser, 0.1, 1.0, iterations=5, complex_physics=phase_retrieval)
    torch.manual_seed(1)  # phase retrieval's A_dagger (spectral initialisation) draws random numbers
    final = pnp(y, physics, callback=lambda k, z: path.__setitem__(k, z.clone()))
    assert sorted(path) == [1, 2, 3, 4, 5]
    torch.testing.assert_close(path[5], final, rtol=0, atol=0)
    for k in (1, 3):
        torch.manual_seed(1)
        short = baselines.PnPADMM(denoiser, 0.1, 1.0, iterations=k, complex_physics=phase_retrieval)(y, physics)
        torch.testing.assert_close(path[k], short, rtol=0, atol=0)
    assert not torch.equal(path[1], path[5])


def test_pnp_admm_starts_phase_retrieval_from_mid_grey_and_takes_an_init():
    """Phase retrieval's A_dagger has an arbitrary sign and scale: PnP starts from mid-grey there (or from `init`)."""
    physics = dinv.physics.RandomPhaseRetrieval(m=128, img_size=(1, 8, 8), rng=torch.Generator().manual_seed(0))
    y = physics(torch.rand(1, 1, 8, 8).to(torch.complex64))
    seen = []

    def denoiser(v, sigma):  # records what the first denoising step receives
        seen.append(v.clone())
        return v

    tiny = 1e-12  # the data step then leaves its input unchanged: the denoiser sees the first iterate
    baselines.PnPADMM(denoiser, 0.1, tiny, iterations=1, complex_physics=True)(y, physics)
    torch.testing.assert_close(seen[-1], torch.full((1, 1, 8, 8), 0.5))
    start = torch.rand(1, 1, 8, 8)
    baselines.PnPADMM(denoiser, 0.1, tiny, iterations=1, complex_physics=True, init=lambda y, p: start)(y, physics)
    torch.testing.assert_close(seen[-1], start)


def test_baselines_by_name_take_their_grid_and_refuse_unknown_names():
    for name in ("wavelet", "tv", "tgv"):
        build = baselines.baseline_builder(name)
        assert isinstance(build(**{k: v[0] for k, v in baselines.BASELINE_GRIDS[name].items()}), torch.nn.Module)
    with pytest.raises(ValueError, match="needs a denoiser"):
        baselines.baseline_builder("dpir")
    with pytest.raises(ValueError, match="choose among"):
        baselines.baseline_builder("bm4d")

"""Offline denoiser loaders: each file format becomes the same function in deepinv's own classes."""

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from deepinv_meta.weights import load_denoiser, load_dncnn, load_ffdnet


def random_bn(channels, generator):
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=generator)
        bn.bias.uniform_(-0.2, 0.2, generator=generator)
        bn.running_mean.uniform_(-0.2, 0.2, generator=generator)
        bn.running_var.uniform_(0.5, 2.0, generator=generator)
    return bn


def noise_predictor(in_channels, out_channels, generator, batch_norm=True, nf=8, depth=4):
    """A DnCNN-shaped Sequential (conv, [BN], ReLU, ..., conv) with random weights and BN statistics."""
    layers = [nn.Conv2d(in_channels, nf, 3, padding=1, bias=not batch_norm), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(nf, nf, 3, padding=1, bias=not batch_norm)]
        layers += [random_bn(nf, generator)] if batch_norm else []
        layers += [nn.ReLU()]
    layers += [nn.Conv2d(nf, out_channels, 3, padding=1, bias=not batch_norm)]
    net = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 4:
                p.normal_(0, 0.2, generator=generator)
    return net


@pytest.mark.parametrize("prefix, batch_norm", [("module.dncnn.", True), ("model.", False)])
def test_dncnn_formats_give_x_minus_predicted_noise(tmp_path, prefix, batch_norm):
    g = torch.Generator().manual_seed(0)
    net = noise_predictor(1, 1, g, batch_norm=batch_norm)
    path = tmp_path / "dncnn.pth"
    torch.save({prefix + k: v for k, v in net.state_dict().items()}, path)
    model = load_dncnn(path)
    x = torch.rand(2, 1, 12, 12, generator=g)
    with torch.no_grad():
        assert torch.allclose(model(x), x - net(x), atol=1e-5)
    # deepinv's own format round-trips too
    torch.save(model.state_dict(), tmp_path / "deepinv.pth")
    with torch.no_grad():
        assert torch.allclose(load_denoiser(tmp_path / "deepinv.pth")(x), model(x), atol=1e-6)


@pytest.mark.parametrize("colours", [1, 3])
def test_ipol_ffdnet_becomes_the_same_function(tmp_path, colours):
    g = torch.Generator().manual_seed(1)
    net = noise_predictor(5 * colours, 4 * colours, g, batch_norm=True)
    path = tmp_path / "net.pth"
    torch.save({"module.intermediate_dncnn.itermediate_dncnn." + k: v for k, v in net.state_dict().items()}, path)
    model = load_denoiser(path)
    x, sigma = torch.rand(2, colours, 16, 12, generator=g), 0.1

    # IPOL's definition: [noise map per colour, deinterleaved image] -> predicted noise, interleaved back.
    def reference(x):
        image = nn.functional.pixel_unshuffle(x, 2)
        noise_map = torch.full_like(image[:, :colours], sigma)
        return x - nn.functional.pixel_shuffle(net(torch.cat([noise_map, image], 1)), 2)

    with torch.no_grad():
        assert torch.allclose(model(x, sigma), reference(x), atol=1e-5)
    # deepinv's own (non-residual) FFDNet files load as they are
    import deepinv as dinv

    own = dinv.models.FFDNet(img_channels=colours, n_conv_layers=4, nf=8, pretrained=None).eval()
    torch.save(own.state_dict(), tmp_path / "deepinv.pth")
    with torch.no_grad():
        assert torch.allclose(load_ffdnet(tmp_path / "deepinv.pth")(x, sigma), own(x, sigma), atol=1e-6)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dncnn(tmp_path / "missing.pth")
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="DnCNN"):
        load_dncnn(tmp_path / "other.pth")


def shared_weights(relative):
    root = os.environ.get("DEEPINV_META_DATA")
    path = Path(root or "/nonexistent") / relative
    if not path.is_file():
        pytest.skip(f"offline weights {relative} not available (set DEEPINV_META_DATA)")
    return path


@pytest.mark.parametrize("relative", ["weights/ipol_ffdnet/net_gray.pth", "weights/saoyan_dncnn/DnCNN-S-25/net.pth",
                                      "weights/kair_dncnn/dncnn_25.pth"])
def test_real_weights_denoise_at_their_published_level(relative):
    """Published BSD68 PSNR at sigma=25 is ~29.2 dB; a wrong channel order or sign gives far less."""
    path = shared_weights(relative)
    from deepinv_meta.data import load_image_folder

    import deepinv as dinv

    images = load_image_folder(Path(os.environ["DEEPINV_META_DATA"]) / "images" / "bsd68", limit=2)
    x = torch.stack([im[..., :160, :160] for im in images])
    y = x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        psnr = dinv.loss.metric.PSNR()(load_denoiser(path)(y, 25 / 255).clamp(0, 1), x).mean().item()
    noisy = dinv.loss.metric.PSNR()(y.clamp(0, 1), x).mean().item()
    assert psnr > 27.5 and psnr > noisy + 7, (psnr, noisy)


def test_drunet_weights_are_read_weights_only_from_the_hub_cache(tmp_path, monkeypatch):
    """A file planted where deepinv's DRUNet download is cached is refused, and its payload never runs."""
    import deepinv as dinv
    import pytest

    from deepinv_meta.weights import DRUNET_GREY, load_denoiser

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"head.weight": Payload()}, tmp_path / "hub" / "checkpoints" / DRUNET_GREY)
    with pytest.raises(ValueError, match="not a safe checkpoint"):
        load_denoiser("drunet")
    assert not (tmp_path / "pwned").exists()
    # a genuine state dict in the cache is loaded (no download)
    state = dinv.models.DRUNet(in_channels=1, out_channels=1, pretrained=None).state_dict()
    torch.save(state, tmp_path / "hub" / "checkpoints" / DRUNET_GREY)
    assert not (tmp_path / "cache" / "deepinv_meta" / "weight_hashes.json").exists()  # a refused file is not recorded
    model = load_denoiser("drunet")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state.values()))
    # its hash is now recorded: a file replaced later in the shared cache is refused before it is read
    first = next(iter(state))
    state[first] = state[first] + 1
    torch.save(state, tmp_path / "hub" / "checkpoints" / DRUNET_GREY)
    with pytest.raises(ValueError, match="changed since it was first used"):
        load_denoiser("drunet")

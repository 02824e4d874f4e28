"""`deepinv-meta train | finetune | evaluate` and the operators they build by name."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepinv_meta import MetaPDNet, load
from deepinv_meta.cli import main
from deepinv_meta.physics import PHYSICS, build_physics


@pytest.mark.parametrize("name", sorted(PHYSICS))
def test_every_named_operator_measures_and_back_projects(name):
    physics = build_physics(name, (16, 16), noise=0.01 if name == "denoising" else 0.0)
    x = torch.rand(2, 2 if name == "mri" else 1, 16, 16)
    y = physics(x)
    assert physics.A_adjoint(y).shape == x.shape
    if name != "denoising":  # the others are noiseless here: A x is exactly what was measured
        torch.testing.assert_close(physics.A(x), y)


def test_random_operators_are_fixed_by_their_seed():
    masks = [build_physics("inpainting", (16, 16), ratio=0.3, seed=s).mask for s in (0, 0, 1)]
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert 0.15 < masks[0].mean().item() < 0.45
    cs = [build_physics("cs", (8, 8), ratio=0.5, seed=s) for s in (0, 0, 1)]
    x = torch.rand(1, 1, 8, 8)
    assert cs[0](x).shape == (1, 1, 32) and torch.equal(cs[0].A(x), cs[1].A(x)) and not torch.equal(cs[0].A(x), cs[2].A(x))
    mri = build_physics("mri", (32, 32), acceleration=4, center_fraction=0.125, seed=3).mask
    assert mri[0, 0, :, 14:18].eq(1).all()  # fully sampled centre columns
    assert mri.mean().item() == pytest.approx(0.25, abs=0.05)


def test_the_parser_has_an_option_for_every_operator_parameter():
    from deepinv_meta import cli

    assert sorted(cli.PHYSICS_OPTIONS) == sorted({p for params in PHYSICS.values() for p in params})


def test_bad_operator_requests_name_the_problem():
    with pytest.raises(ValueError, match="choose among"):
        build_physics("ct", (16, 16))
    with pytest.raises(ValueError, match=r"takes \['acceleration', 'center_fraction'\], not \['factor'\]"):
        build_physics("mri", (16, 16), factor=2)
    with pytest.raises(ValueError, match="divisible"):
        build_physics("sr", (15, 16), factor=2)
    with pytest.raises(ValueError, match="noise"):
        build_physics("denoising", (16, 16), noise=-1.0)
    with pytest.raises(ValueError, match=r"cs ratio .* must be in \(0, 1\]"):
        build_physics("cs", (16, 16), ratio=2.0)


def write_images(folder, count=3, size=48, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for k in range(count):
        smooth = rng.random((size // 8, size // 8)).repeat(8, 0).repeat(8, 1)  # blocky, not pure noise
        Image.fromarray((255 * smooth).astype(np.uint8)).save(folder / f"im{k}.png")
    return folder


def test_train_finetune_evaluate_workflow(tmp_path, capsys):
    images = write_images(tmp_path / "train")
    meta = tmp_path / "meta.pt"
    train = ["train", "--out", str(meta), "--images", str(images), "--patch-size", "16", "--depth", "3",
             "--channels", "4", "--batch-size", "2", "--device", "cpu"]
    assert main(train + ["--steps", "2"]) == 0
    assert main(train + ["--steps", "3"]) == 0  # resumes from meta.pt.trainer.pt and does one more step
    assert "resuming from" in capsys.readouterr().out
    model, metadata = load(meta, return_metadata=True)
    assert isinstance(model, MetaPDNet) and model.depth == 3 and metadata["outer_steps"] == 3

    adapted = tmp_path / "sr.pt"
    assert main(["finetune", str(meta), "--out", str(adapted), "--physics", "sr", "--factor", "2",
                 "--images", str(images), "--size", "16", "--patches", "4", "--steps", "3", "--device", "cpu",
                 "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5"]) == 0
    tuned, metadata = load(adapted, return_metadata=True)
    assert metadata["physics"] == {"name": "sr", "params": {"factor": 2}, "noise": 0.0, "seed": 0, "channels": 1}
    assert metadata["finetune"]["loss"] == "equivariant" and metadata["outer_steps"] == 3  # the default loss
    assert (metadata["finetune"]["optimizer"], metadata["finetune"]["momentum"]) == ("sgd", 0.5)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), tuned.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), load(meta).state_dict().values()))

    table = tmp_path / "table.json"
    # the operator comes from the fine-tuned model; test images: the embedded scikit-image ones
    assert main(["evaluate", str(meta), str(adapted), "--size", "32", "--json", str(table), "--device", "cpu",
                 "--figure", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    rows = json.loads(table.read_text())["rows"]
    assert [r["method"] for r in rows] == ["adjoint A^T y", "bicubic upsampling", str(meta), str(adapted)]
    assert all(np.isfinite(r["psnr"]) and r["psnr"] > 5 for r in rows)
    assert "bicubic upsampling" in printed and "| method" in printed


def test_mri_finetuning_takes_grey_images_as_complex(tmp_path):
    images = write_images(tmp_path / "images", size=32)
    meta, adapted = tmp_path / "meta.pt", tmp_path / "mri.pt"
    from deepinv_meta import save

    save(MetaPDNet(depth=2, channels=4), meta)
    assert main(["finetune", str(meta), "--out", str(adapted), "--physics", "mri", "--acceleration", "4",
                 "--images", str(images), "--size", "32", "--patches", "2", "--steps", "2", "--loss", "supervised",
                 "--device", "cpu"]) == 0
    rows = []
    assert main(["evaluate", str(adapted), "--images", str(images), "--size", "32", "--device", "cpu",
                 "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["adjoint A^T y", str(adapted)]


def test_mri_equivariant_finetuning_with_rotations(tmp_path):
    images = write_images(tmp_path / "images", size=32)
    meta = tmp_path / "meta.pt"
    from deepinv_meta import save

    save(MetaPDNet(depth=2, channels=4), meta)
    weights = {}
    for transform in ("shift", "rotate"):
        out = tmp_path / f"{transform}.pt"
        assert main(["finetune", str(meta), "--out", str(out), "--physics", "mri", "--images", str(images),
                     "--size", "32", "--patches", "2", "--steps", "2", "--loss", "equivariant", "--transform",
                     transform, "--lr", "1e-2", "--device", "cpu"]) == 0
        model, metadata = load(out, return_metadata=True)
        assert metadata["finetune"]["transform"] == transform
        weights[transform] = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in weights["rotate"])
    assert any(not torch.equal(a, b) for a, b in zip(weights["shift"], weights["rotate"]))


def test_workflow_errors_name_the_fix(tmp_path, capsys):
    from deepinv_meta import save

    meta = tmp_path / "meta.pt"
    save(MetaPDNet(depth=2, channels=4), meta)
    assert main(["evaluate", str(meta), "--size", "32", "--device", "cpu"]) == 2
    assert "pass --physics" in capsys.readouterr().err
    assert main(["finetune", str(meta), "--out", str(tmp_path / "x.pt"), "--physics", "mri", "--factor", "2"]) == 2
    assert "not ['factor']" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt"), "--physics", "sr"]) == 2
    assert "neither a file nor a zoo name" in capsys.readouterr().err
    assert main(["evaluate", str(meta), "--physics", "sr", "--size", "4096", "--device", "cpu"]) == 2
    assert "smaller --size" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "m.pt"), "--meta-gradient", "implicit", "--steps", "1"]) == 2
    assert "lam > 0" in capsys.readouterr().err
    assert main(["finetune", str(meta), "--out", str(tmp_path / "x.pt"), "--physics", "mri", "--color"]) == 2
    assert "drop --color" in capsys.readouterr().err
    assert main(["finetune", str(meta), "--out", str(tmp_path / "x.pt"), "--physics", "sr", "--loss", "unsupervised",
                 "--transform", "rotate"]) == 2
    assert "only applies to --loss equivariant" in capsys.readouterr().err
    assert main(["finetune", str(meta), "--out", str(tmp_path / "x.pt"), "--physics", "sr", "--momentum", "0.5"]) == 2
    assert "needs optimizer 'sgd'" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "m.pt"), "--inner-momentum", "0.5", "--steps", "1"]) == 2
    assert "needs optimizer 'sgd'" in capsys.readouterr().err


def test_colour_models_are_fine_tuned_and_evaluated_on_rgb_images(tmp_path):
    from deepinv_meta import save

    meta, adapted, table = tmp_path / "meta.pt", tmp_path / "blur.pt", tmp_path / "t.json"
    save(MetaPDNet(depth=2, channels=4), meta)  # channel-wise filters: grey weights on RGB images
    assert main(["finetune", str(meta), "--out", str(adapted), "--physics", "blur", "--noise", "0.01", "--color",
                 "--size", "32", "--patches", "2", "--steps", "1", "--device", "cpu"]) == 0
    assert load(adapted, return_metadata=True)[1]["physics"]["channels"] == 3
    # the stored operator says RGB: evaluate reads the (embedded) test images in colour without --color
    assert main(["evaluate", str(adapted), "--size", "32", "--device", "cpu", "--json", str(table),
                 "--figure", str(tmp_path / "fig.png")]) == 0
    assert [r["method"] for r in json.loads(table.read_text())["rows"]] == ["adjoint A^T y", str(adapted)]
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_evaluate_tunes_baselines_on_other_images_than_the_test_images(tmp_path, monkeypatch, capsys):
    from deepinv_meta import save

    meta = tmp_path / "meta.pt"
    save(MetaPDNet(depth=2, channels=4), meta)
    test_images = write_images(tmp_path / "test", size=32)
    tune_images = write_images(tmp_path / "tune", size=32, seed=1)
    table = tmp_path / "t.json"
    assert main(["evaluate", str(meta), "--physics", "inpainting", "--ratio", "0.5", "--images", str(test_images),
                 "--tune-images", str(tune_images), "--size", "32", "--baselines", "tgv", "--device", "cpu",
                 "--json", str(table)]) == 0
    rows = json.loads(table.read_text())["rows"]
    assert [r["method"].split(" ")[0] for r in rows] == ["adjoint", "tgv", str(meta)]
    assert rows[1]["psnr"] > rows[0]["psnr"]  # TGV fills the missing pixels

    monkeypatch.delenv("DEEPINV_META_DATA", raising=False)  # no offline FFDNet to fall back on
    assert main(["evaluate", str(meta), "--physics", "sr", "--size", "32", "--baselines", "dpir",
                 "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "--denoiser PATH" in error and "set DEEPINV_META_DATA" in error and "--data-root" not in error


def test_evaluate_caches_tuned_baselines_and_takes_a_wider_grid(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    meta = tmp_path / "meta.pt"
    from deepinv_meta import save

    save(MetaPDNet(depth=2, channels=4), meta)
    common = ["evaluate", str(meta), "--physics", "inpainting", "--size", "32", "--device", "cpu", "--baselines", "tv"]
    assert main(common) == 0
    first = capsys.readouterr().out
    assert "tuning patches" in first and "cached" not in first
    assert main(common) == 0
    assert "tv: best" in (second := capsys.readouterr().out) and "cached" in second
    assert main(common + ["--grid", "tv.ths=0.0001,0.0003"]) == 0  # another grid: searched again
    assert "tuning patches" in capsys.readouterr().out
    assert main(common + ["--grid", "tv.lam=1,2"]) == 2
    assert "has no parameter 'lam'" in capsys.readouterr().err
    assert main(common + ["--grid", "tv.ths="]) == 2
    assert "NAME.PARAM=V1,V2" in capsys.readouterr().err


def test_adaptation_objective_adds_downscaled_pairs_for_sr_only():
    from deepinv_meta.commands import adaptation_objective
    from deepinv_meta.losses import DownscaledPairsLoss
    from deepinv_meta.physics import OperatorSpec

    sr, mri = OperatorSpec.named("sr", factor=2), OperatorSpec.named("mri")
    objective, label = adaptation_objective("equivariant", sr, pairs=True)
    assert isinstance(objective[-1], DownscaledPairsLoss) and "downscaled pairs" in label
    assert adaptation_objective("equivariant", sr) == ("equivariant", "equivariant (shift)")
    assert adaptation_objective("equivariant", mri)[0] == "equivariant"
    assert adaptation_objective("unsupervised", sr)[0] == "unsupervised"
    with pytest.raises(ValueError, match="exists at every scale"):
        adaptation_objective("equivariant", mri, pairs=True)
    with pytest.raises(ValueError, match="--pairs only applies to --loss equivariant"):
        adaptation_objective("supervised", sr, pairs=True)


def test_border_padded_reconstruction_crops_back_and_refuses_other_operators():
    from deepinv_meta.physics import Bicubic, BorderPadded, OperatorSpec

    sr = OperatorSpec.named("sr", factor=2)
    physics = sr.build((16, 12))
    y = physics(torch.rand(2, 1, 16, 12, generator=torch.Generator().manual_seed(0)))
    seen = []

    def model(y, physics):
        seen.append((tuple(y.shape), tuple(physics.A_adjoint(y).shape)))
        return Bicubic(2)(y, physics)

    x_hat = BorderPadded(model, sr, pad=2)(y, physics)
    assert x_hat.shape == (2, 1, 16, 12)
    assert seen == [((2, 1, 12, 10), (2, 1, 24, 20))]  # the measurement extended by 2 a side, and its operator
    torch.testing.assert_close(physics.A(x_hat), y, rtol=0, atol=1e-5)  # the crop keeps the samples where they were
    with pytest.raises(ValueError, match="super-resolution"):
        BorderPadded(model, OperatorSpec.named("mri"))


@pytest.mark.parametrize("name", ["sr", "inpainting", "mri"])
def test_projection_reproduces_noiseless_measurements_and_moves_towards_the_truth(name):
    from deepinv_meta.physics import Bicubic, OperatorSpec, Projected

    generator = torch.Generator().manual_seed(0)
    physics = OperatorSpec.named(name).build((16, 16))
    x = torch.rand(2, 2 if name == "mri" else 1, 16, 16, generator=generator)
    y = physics(x)
    guess = x + 0.3 * torch.randn(x.shape, generator=generator)  # a reconstruction wrong everywhere
    projected = Projected(lambda y, physics: guess)(y, physics)
    torch.testing.assert_close(physics.A(projected), y, rtol=0, atol=1e-5)
    assert (projected - x).norm() < 0.95 * (guess - x).norm()  # the measured part of the error is gone
    if name == "sr":  # bicubic interpolates the samples: nothing to move
        bicubic = Bicubic(2)(y, physics)
        torch.testing.assert_close(Projected(Bicubic(2))(y, physics), bicubic, rtol=0, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 3])
def test_self_ensemble_keeps_every_sample_in_place_and_is_transpose_equivariant(factor):
    from deepinv_meta.physics import Adjoint, Bicubic, BorderPadded, OperatorSpec

    sr = OperatorSpec.named("sr", factor=factor)
    physics = sr.build((6 * factor, 4 * factor))
    y = physics(torch.rand(2, 1, 6 * factor, 4 * factor, generator=torch.Generator().manual_seed(0)))
    # zero-filling is the same from every flip only if each one is cropped on its own sampling grid
    torch.testing.assert_close(BorderPadded(Adjoint(), sr, self_ensemble=True)(y, physics), Adjoint()(y, physics),
                               rtol=0, atol=1e-6)  # (the mean of 8 equal values, rounded)
    x_hat = BorderPadded(Bicubic(factor), sr, self_ensemble=True)(y, physics)
    torch.testing.assert_close(physics.A(x_hat), y, rtol=0, atol=1e-5)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)  # not equivariant to flips or transposes

    def model(y, physics):
        return conv(physics.A_adjoint(y))

    ensemble = BorderPadded(model, sr, self_ensemble=True)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(y.transpose(-1, -2)), ensemble(y).transpose(-1, -2))
        plain = BorderPadded(model, sr)
        assert not torch.allclose(plain(y.transpose(-1, -2)), plain(y).transpose(-1, -2))

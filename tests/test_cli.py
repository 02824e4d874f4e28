"""The README's main command (`deepinv-meta demo`), at toy scale, and its baselines."""

import deepinv as dinv
import torch

from deepinv_meta.cli import build_parser
from deepinv_meta.baselines import Bicubic
from deepinv_meta.demo import run_demo


def test_demo_adapts_the_zoo_model_and_writes_the_table_json_and_figure(tmp_path):
    import json
    import subprocess
    import sys

    out, figure = tmp_path / "demo.json", tmp_path / "demo.png"
    done = subprocess.run([sys.executable, "-m", "deepinv_meta.cli", "demo", "--steps", "2", "--size", "32",
                           "--json", str(out), "--figure", str(figure), "--paper-loss", "--without-pairs"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {row["method"]: row["psnr"] for row in json.loads(out.read_text())}
    assert {"bicubic upsampling", "TGV (tuned on other images)", "meta-model, no adaptation",
            "meta-model + 2 equivariant steps (no GT)", "random init + 2 equivariant steps (no GT)",
            "meta-model + 2 unsupervised steps (paper's loss)",
            "meta-model + 2 equivariant steps without pairs (no GT)"} <= set(rows)
    assert all(value > 5 for value in rows.values())
    first = json.loads(out.read_text())[0]
    assert set(first["psnr_per_image"]) == {"camera", "astronaut", "coffee"}
    assert "| method" in done.stdout and "zoo 'meta-prior-supervised'" in done.stdout
    assert "downscaled pairs" in done.stdout  # the loss the table's adaptation used
    assert figure.stat().st_size > 10_000


def test_demo_can_still_meta_train_from_scratch(capsys):
    rows = run_demo(train_minutes=0.02, steps=1, size=32, device="cpu")
    assert "meta-trained here" in capsys.readouterr().out
    assert rows[0]["method"] == "bicubic upsampling" and len(rows) >= 5


def test_bicubic_baseline_is_consistent_with_decimation():
    physics = dinv.physics.Downsampling(img_size=(1, 16, 16), factor=2, filter=None)
    y = physics(torch.rand(2, 1, 16, 16))
    torch.testing.assert_close(physics.A(Bicubic(2)(y, physics)), y, rtol=0, atol=1e-5)


def test_cli_parses_demo_options():
    args = build_parser().parse_args(["demo", "--train-minutes", "0.5", "--steps", "4"])
    assert args.command == "demo" and args.train_minutes == 0.5 and args.steps == 4


def test_benchmark_without_data_root_names_the_variable(monkeypatch, capsys, tmp_path):
    from deepinv_meta.cli import main

    monkeypatch.delenv("DEEPINV_META_DATA", raising=False)
    assert main(["benchmark", "meta-prior", "--quick", "--out", str(tmp_path)]) == 2
    assert "DEEPINV_META_DATA" in capsys.readouterr().err


def test_benchmark_rejects_unknown_names(capsys):
    import pytest

    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "no-such-paper"])


def test_reuse_meta_models_is_refused_outside_meta_prior(capsys, tmp_path):
    from deepinv_meta.cli import main

    assert main(["benchmark", "metadip", "--reuse-meta-models", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "meta-prior benchmark only" in capsys.readouterr().err


def test_benchmark_settings_override_the_configuration_and_typos_are_refused(capsys, tmp_path):
    import pytest

    from deepinv_meta.benchmarks.settings import configure, parse_setting
    from deepinv_meta.cli import main

    assert parse_setting("curve_steps=[1, 5]") == ("curve_steps", [1, 5])
    assert parse_setting("denoiser=weights/x.pth") == ("denoiser", "weights/x.pth")
    assert configure({"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
    with pytest.raises(KeyError, match="train_minutes"):
        configure({"train_minutes": 1.0}, {"train_minutse": 2})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_setting("train_minutes")
    # the CLI reports an unknown key (naming the valid ones) before any work starts
    assert main(["benchmark", "metadip", "--set", "train_minuts=1", "--data-root", str(tmp_path),
                 "--out", str(tmp_path)]) == 2
    assert "train_minutes" in capsys.readouterr().err
    assert main(["benchmark", "meta-prior", "--set", "outer_steps=5", "--data-root", str(tmp_path)]) == 2
    assert "--part" in capsys.readouterr().err

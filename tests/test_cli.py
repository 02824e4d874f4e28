"""The README's main command (`deepinv-meta demo`), at toy scale, and its baselines."""

import deepinv as dinv
import torch

from deepinv_meta.cli import build_parser
from deepinv_meta.baselines import Bicubic
from deepinv_meta.demo import run_demo


def test_demo_runs_end_to_end_and_prints_the_table(capsys):
    table = run_demo(minutes=0.02, depth=2, channels=4, finetune_steps=2, finetune_patches=2, device="cpu")
    methods = [row["method"] for row in table]
    assert methods[0] == "adjoint A^T y" and "meta-model, no fine-tuning" in methods
    assert any("unsupervised" in m for m in methods) and any("random init" in m for m in methods)
    assert all(row["psnr"] > 5 for row in table)
    assert "| method" in capsys.readouterr().out


def test_bicubic_baseline_is_consistent_with_decimation():
    physics = dinv.physics.Downsampling(img_size=(1, 16, 16), factor=2, filter=None)
    y = physics(torch.rand(2, 1, 16, 16))
    torch.testing.assert_close(physics.A(Bicubic(2)(y, physics)), y, rtol=0, atol=1e-5)


def test_cli_parses_demo_options():
    args = build_parser().parse_args(["demo", "--minutes", "0.5", "--depth", "4"])
    assert args.command == "demo" and args.minutes == 0.5 and args.depth == 4


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

"""`deepinv-meta benchmark metadip --quick` end to end (slow: about 10 minutes on one CPU core)."""

import pytest

from deepinv_meta.benchmarks.report import Context, run_benchmark
from helpers import quick_benchmark


@pytest.mark.slow
def test_quick_metadip_benchmark_writes_the_contract(tmp_path, offline_data):
    from deepinv_meta import load

    result = quick_benchmark("metadip", tmp_path)
    assert result["speedup"] > 0
    tasks = {row["task"] for row in result["rows"]}
    assert {"denoising sigma=25 (faces)", "CS m/n=1/4 (patches)", "PR m/n=1/4 (faces)"} <= tasks
    methods = {row["method"] for row in result["rows"]}
    assert {"PnP-ADMM (FFDNet)", "DIP (50)", "MetaSIREN (50)", "MetaDIP (50)"} <= methods
    assert all(row["time_s"] > 0 for row in result["rows"])
    # a diverged fit is reported as such, never scored; MetaDIP itself must not diverge
    assert all(row["psnr"] > 5 for row in result["rows"] if not row["diverged"])
    assert not any(row["diverged"] for row in result["rows"] if row["method"].startswith("MetaDIP"))
    for name in ("table.md", "convergence.png"):
        assert (tmp_path / name).stat().st_size > 0
    load(tmp_path / "metadip.pt")


def test_problems_keep_the_stated_measurement_ratios():
    """CS and phase retrieval take m/n measurements per pixel (PR: one matrix shared by the colour channels)."""
    import torch

    from deepinv_meta.benchmarks.metadip import QUICK, measure, problems

    cfg = dict(QUICK, img_size=16, sigmas=[25], cs_ratios=[1 / 4], pr_ratios=[1 / 4, 1 / 8])
    x = torch.rand(1, 3, 16, 16)
    measured = {name: measure(physics, complex_physics, x)[0].numel() / x.numel()
                for name, (physics, complex_physics) in problems(cfg, torch.device("cpu")).items()}
    assert measured == {"denoising sigma=25": 1.0, "CS m/n=1/4": 1 / 4, "PR m/n=1/4": 1 / 4, "PR m/n=1/8": 1 / 8}


def test_a_subset_of_methods_reruns_those_rows_only(tmp_path, offline_data):
    """`--set methods=[...]`: PnP-ADMM rows alone, no meta-training and no speed-up; unknown names refused."""
    from deepinv_meta.benchmarks import metadip

    settings = dict(methods=["PnP-ADMM"], img_size=16, sigmas=[25], cs_ratios=[], pr_ratios=[1 / 4], test_faces=1,
                    test_patches=1, train_faces=4, pnp_sigma=[0.1], pnp_iterations=[2])
    result = run_benchmark(metadip, Context(quick=True, device="cpu", out=tmp_path, settings=settings))
    assert {row["method"] for row in result["rows"]} == {"PnP-ADMM (FFDNet)"}
    assert {row["task"] for row in result["rows"]} == {f"{task} ({dataset})" for task in ("denoising sigma=25", "PR m/n=1/4")
                                                     for dataset in ("faces", "patches")}
    assert result["speedup"] is None and result["config"]["meta_training"] == {}
    table = (tmp_path / "table.md").read_text()
    assert "Time-to-PSNR" not in table and not (tmp_path / "metadip.pt").exists()
    assert """--set "methods=['PnP-ADMM']" """ in table  # the command line that reproduces the run
    with pytest.raises(ValueError, match="MetaDIP"):
        run_benchmark(metadip, Context(quick=True, device="cpu", settings=dict(settings, methods=["MetaDiP"])))

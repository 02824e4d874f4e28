"""`deepinv-meta benchmark meta-red --quick` end to end (slow: several minutes on one CPU core)."""

import pytest

from deepinv_meta.benchmarks.report import Context, run_benchmark
from helpers import quick_benchmark


@pytest.mark.slow
def test_quick_meta_red_benchmark_writes_the_contract(tmp_path, offline_data):
    result = quick_benchmark("meta-red", tmp_path)
    tables = {row["table"] for row in result["rows"]}
    assert tables == {"1", "2", "3", "4"}
    methods = {row["method"] for row in result["rows"]}
    assert {"Meta-2", "UNet (supervised)", "Meta-RED (L1, 3x3 = 12 it.)", "HQS unrolled (12 it., trained DnCNN)"} <= methods
    for row in result["rows"]:
        assert 5 < row["psnr"] < 60 and 0 < row["ssim"] <= 1 and row["time_s"] > 0
    assert (tmp_path / "table.md").stat().st_size > 0


def test_a_subset_of_tables_runs_alone(tmp_path, monkeypatch, offline_data):
    """`--set "tables=['4']"` trains Table 4's models only, with the RED step tuned as for Table 3; every
    DnCNN trains at `denoiser_lr`, Meta-RED's SIREN and inner rates at `red_outer_lr`."""
    from deepinv_meta.benchmarks import meta_red

    trainers = []

    class RecordingTrainer(meta_red.SupervisedTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(meta_red, "SupervisedTrainer", RecordingTrainer)
    settings = {"tables": 4, "train_minutes": 0.01, "test_faces": 1, "tune_faces": 1, "train_faces": 8,
                "img_size": 16, "siren_hidden": 8, "siren_layers": 2, "red_outer_lr": 3e-6, "denoiser_lr": 2e-4}
    result = run_benchmark(meta_red, Context(quick=True, device="cpu", data_root=offline_data, out=tmp_path,
                                             settings=settings))
    assert {row["table"] for row in result["rows"]} == {"4"}
    assert len(result["rows"]) == 3 and "Table 3" not in (tmp_path / "table.md").read_text()

    assert len(trainers) == 3  # Meta-RED, RED unrolled, HQS unrolled
    for trainer in trainers:
        denoiser = {id(p) for name, p in trainer.model.named_parameters() if ".denoiser." in f".{name}"}
        assert denoiser, "each Table 4 model trains a DnCNN"
        for group in trainer.optimizer.param_groups:
            ids = {id(p) for p in group["params"]}
            if ids <= denoiser:
                assert group["lr"] == pytest.approx(2e-4)
            else:
                assert not ids & denoiser and group["lr"] == pytest.approx(3e-6)
    assert len(trainers[0].optimizer.param_groups) == 2  # Meta-RED: its SIREN and inner rates, its DnCNN


def test_table3_reports_red_from_the_adjoint_and_from_the_ground_truth(tmp_path, offline_data):
    """The reference rows for Meta-RED's last 3 RED iterations: the oracle start (the ground truth) beats A^T y."""
    from deepinv_meta.benchmarks import meta_red

    settings = {"tables": ["3"], "train_minutes": 0.005, "test_faces": 2, "tune_faces": 1, "train_faces": 8,
                "img_size": 16, "siren_hidden": 8, "siren_layers": 2, "converged_iterations": 13}
    result = run_benchmark(meta_red, Context(quick=True, device="cpu", data_root=offline_data, settings=settings))
    psnr = {row["method"]: row["psnr"] for row in result["rows"]}
    assert {row["table"] for row in result["rows"]} == {"3"} and "Meta-RED (L2, 3x3 = 12 it.)" in psnr
    assert psnr["RED (3 it. from the ground truth, oracle)"] > psnr["RED (3 it.)"] + 0.5


@pytest.mark.parametrize("tables", [["5"], []])
def test_unknown_or_no_tables_fail_before_training(tables):
    from deepinv_meta.benchmarks import meta_red

    with pytest.raises(ValueError, match="`tables` setting"):
        run_benchmark(meta_red, Context(quick=True, device="cpu", settings={"tables": tables}))


def test_validation_keeps_the_untrained_weights_when_meta_training_ruins_them():
    """`validate_every`: the starting weights are a candidate, so an absurd outer rate cannot make the model worse."""
    import copy

    import deepinv as dinv
    import torch

    from deepinv_meta.benchmarks import meta_red
    from deepinv_meta.models import GradientDescent, MetaSIREN
    from deepinv_meta.tasks import Task

    torch.manual_seed(0)
    physics = dinv.physics.Inpainting((1, 8, 8), mask=0.5)
    faces = torch.rand(12, 1, 8, 8)
    model = MetaSIREN((1, 8, 8), solver=GradientDescent(1, 0.9), steps=1, hidden=8, layers=2)
    start = copy.deepcopy(model.state_dict())
    # 5 ruins the weights (held-out loss >= 1.1 against 0.073 at every one of ~150 validations over 450 steps) and
    # stays finite; 10 made NaN from step ~15, so that a fast machine hit the trainer's 20-skipped-steps stop
    cfg = dict(meta_red.QUICK, train_minutes=0.01, validate_every=0.005, outer_lr=5.0)
    info = meta_red.train(model, Task("inpainting", physics, faces, faces), cfg, "cpu", seed=0, name="ruined")
    assert info["train_steps"] > 0 and info["selected_step"] == 0
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())

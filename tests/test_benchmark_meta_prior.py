"""`deepinv-meta benchmark meta-prior --quick` end to end (slow: about 6 minutes on 2 CPU cores)."""

import pytest

from deepinv_meta.benchmarks.report import Context, run_benchmark
from helpers import quick_benchmark
from deepinv_meta.benchmarks.settings import configure


@pytest.mark.slow
def test_quick_meta_prior_benchmark_writes_the_contract(tmp_path, offline_data):
    from deepinv_meta import load

    result = quick_benchmark("meta-prior", tmp_path, "--part", "imaging", "--set", "equivariant_finetuning=True")
    tasks = {row["task"] for row in result["rows"]}
    assert {"SR x2 (Set3C)", "MRI x4 (knee P6-P10)"} <= tasks
    methods = {row["method"] for row in result["rows"]}
    assert {"DPIR (FFDNet)", "TGV (HQS)", "wavelet (db8, HQS)", "adjoint / zero-filled"} <= methods
    # each task with its own transform: shifts for SR, rotations for MRI (settings equivariant_transforms)
    rows = {(row["task"].split()[0], row["method"]) for row in result["rows"]}
    assert {("SR", "unsupervised meta-model + 20 equivariant (shift) steps"),
            ("MRI", "unsupervised meta-model + 20 equivariant (rotate) steps")} <= rows
    assert all(5 < row["psnr"] < 60 for row in result["rows"])
    for name in ("table.md", "finetuning_curves.png", "visual_comparison.png", "training_tasks.png"):
        assert (tmp_path / name).stat().st_size > 0
    for loss in ("supervised", "unsupervised"):
        load(tmp_path / f"meta_pdnet_{loss}.pt")


@pytest.mark.slow
def test_quick_gaussian_toy_reports_learned_maps_against_the_theorem_31_optimum(tmp_path):
    from deepinv_meta.benchmarks import gaussian_toy

    result = run_benchmark(gaussian_toy, Context(quick=True, out=tmp_path, device="cpu"))
    rows = {(r["task"].split()[0], r["method"]): r["rel_error_im_to_ker"] for r in result["rows"]}
    assert len(rows) == 17 and all(0 < error < 3 for error in rows.values())
    optimum = rows[("train", "risk-optimal with unsupervised inner loss (Theorem 3.1: shared kernel rows, analytic)")]
    # heavy-ball inner steps bring the unsupervised meta-model near Theorem 3.1's optimum, Adam's 20 steps do not
    heavy_ball = rows[("train", "meta-trained (SGD + momentum), unsupervised inner loss; fine-tuned unsupervised")]
    adam = rows[("train", "meta-trained (Adam), unsupervised inner loss; fine-tuned unsupervised")]
    assert heavy_ball < optimum + 0.15 < adam
    # Theorem 3.1: no meta-model with an unsupervised inner loss goes below the convex minimum over shared rows
    lowest = rows[("train", "lowest error of any meta-model with an unsupervised inner loss (shared kernel rows; "
                            "convex, minimised)")]
    assert 0.3 < lowest < optimum and lowest < heavy_ball - 1e-4 and lowest < adam - 1e-4
    assert result["theorem_3_1"]["kernel_change_after_2000_gd_steps"] < 1e-6 < result["theorem_3_1"]["image_change_after_2000_gd_steps"]
    assert (tmp_path / "table.md").read_text().count("|") > 20 and (tmp_path / "im_to_ker_maps.png").stat().st_size > 0


def test_meta_training_with_validation_keeps_the_best_weights(tmp_path):
    """`--set validate_every=...`: the meta-model is validated before and during training and the weights with
    the lowest held-out loss are kept (and saved), not the last ones."""
    import torch

    from deepinv_meta.benchmarks import meta_prior
    from deepinv_meta.io import load
    from deepinv_meta.tasks import meta_prior_tasks

    cfg = configure(meta_prior.QUICK, {"depth": 2, "channels": 2, "batch_size": 2, "train_minutes": 0.2,
                                                  "validate_every": 0.02, "outer_lr": 0.5})
    # 10 chunks of 1.2 s: even a heavily loaded machine (where 3 s once gave one chunk) validates >= 3 times
    tasks = meta_prior_tasks(torch.rand(12, 1, 16, 16), seed=0)
    trainer, _ = meta_prior.meta_train("supervised", tasks, cfg, "cpu", 0, tmp_path)
    assert len(trainer.validation) >= 3 and trainer.validation[0]["step"] == 0
    losses = {v["step"]: v["loss"] for v in trainer.validation}
    assert trainer.selected_step == min(losses, key=losses.get)
    saved, metadata = load(tmp_path / "meta_pdnet_supervised.pt", return_metadata=True)
    assert metadata["selected_step"] == trainer.selected_step and metadata["outer_steps"] == trainer.step
    assert torch.equal(saved.weight, trainer.model.weight.detach().cpu())


def test_baselines_only_run_flags_grid_edges(tmp_path, offline_data):
    """`--set baselines_only=True`: the baselines' rows alone; a best value at the edge of its grid is recorded."""
    from deepinv_meta.benchmarks import meta_prior

    result = run_benchmark(meta_prior, Context(quick=True, device="cpu", out=tmp_path, settings={
        "baselines_only": True, "wavelet_grid": [1e-3, 1e-2], "sr_test_crop": 64, "mri_crop": (64, 64), "val_images": 1}))
    methods = {(r["task"].split()[0], r["method"]) for r in result["rows"]}
    assert methods == {(t, m) for t in ("SR", "MRI") for m in ("adjoint / zero-filled", "wavelet (db8, HQS)", "TGV (HQS)",
                                                            "DPIR (FFDNet)")} | {("SR", "bicubic")}
    wavelet = [r for r in result["rows"] if r["method"].startswith("wavelet")]
    assert all(r["params"]["grid_edge"] == ["ths"] for r in wavelet)  # two values: the best is always an edge
    assert "training tasks" not in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("unseen_tasks", [["MRI"], []])
def test_unknown_unseen_task_is_refused_with_the_choices(unseen_tasks):
    from deepinv_meta.benchmarks import meta_prior

    with pytest.raises(ValueError, match="choose one or more of"):
        run_benchmark(meta_prior, Context(quick=True, device="cpu", data_root="/nonexistent", settings={"unseen_tasks": unseen_tasks}))


def test_unknown_equivariance_transform_is_refused_before_any_work():
    from deepinv_meta.benchmarks import meta_prior

    with pytest.raises(ValueError, match="unknown equivariance transform 'flip'"):
        run_benchmark(meta_prior, Context(quick=True, device="cpu", data_root="/nonexistent", settings={
            "equivariant_finetuning": True, "equivariant_transforms": {"SR x2": "shift", "MRI x4": "flip"}}))


def test_the_zoo_models_can_stand_in_for_meta_training():
    """`--reuse-meta-models zoo`: the campaign's models, checked against the run's network."""
    import torch

    from deepinv_meta import pretrained
    from deepinv_meta.benchmarks import meta_prior
    from deepinv_meta.tasks import meta_prior_tasks

    tasks = meta_prior_tasks(torch.rand(8, 1, 16, 16))
    cfg = configure(meta_prior.QUICK, {"depth": 20, "channels": 40})
    trainer, seconds = meta_prior.meta_train("unsupervised", tasks, cfg, "cpu", 0, None, reuse="zoo")
    info = pretrained.available()["meta-prior-unsupervised"]
    assert trainer.step == info["outer_steps"] and seconds == pytest.approx(60 * info["cpu_minutes"])
    zoo = pretrained.load("meta-prior-unsupervised")
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.parameters(), zoo.parameters()))
    with pytest.raises(ValueError, match="--set channels=40"):
        meta_prior.meta_train("unsupervised", tasks, configure(meta_prior.QUICK, {}), "cpu", 0, None, reuse="zoo")

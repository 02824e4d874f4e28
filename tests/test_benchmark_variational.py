"""`deepinv-meta benchmark variational --quick` end to end (slow: about 8 minutes on one CPU core)."""

import pytest

from deepinv_meta.benchmarks.report import Context, run_benchmark
from helpers import quick_benchmark


@pytest.mark.slow
def test_quick_variational_benchmark_writes_the_contract(tmp_path, offline_data):
    from deepinv_meta import load

    result = quick_benchmark("variational", tmp_path)
    methods = {(row["task"], row["method"]) for row in result["rows"]}
    for task in ("MNIST", "lorenz63", "lorenz96"):
        assert (task, "2S-CNN + LSTM-S (joint)") in methods
        load(tmp_path / f"{task.lower()}_2scnn_lstm.pt")
    assert ("MNIST", "PCA + FSGD") in methods and ("lorenz96", "RK4 + FSGD") in methods
    for row in result["rows"]:
        assert 0 < row["r_score"] < 10 and row["time_s"] > 0
    # the fixed ODE prior describes the true states almost exactly (paper: P-score ~1e-7)
    assert all(row["p_score"] < 1e-5 for row in result["rows"] if row["method"].startswith("RK4"))
    for name in ("table.md", "energy_pathways.png", "mnist_examples.png", "lorenz96_example.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_a_subset_of_rows_runs_with_the_rows_it_needs(tmp_path):
    """`--set methods=[...]` runs those rows and the ones they need (RK4 + LSTM-S uses RK4 + FSGD's tuned lambda)."""
    from deepinv_meta.benchmarks import variational

    settings = {"datasets": ["lorenz63"], "methods": ["RK4 + LSTM-S", "DICT + OMP"],
                "lorenz63": dict(variational.QUICK["lorenz63"], steps=1500, train_sequences=16, test_sequences=4),
                "sequence_length": 40, "lorenz_fsgd_iterations": 20, "lorenz_train_minutes": 0.01,
                "fsgd_prior_weights": {"MNIST": [0.1], "lorenz63": [7.0], "lorenz96": [1.0]}}  # a grid per dataset
    result = run_benchmark(variational, Context(quick=True, device="cpu", out=tmp_path, settings=settings))
    assert [(row["task"], row["method"]) for row in result["rows"]] == [("lorenz63", "RK4 + FSGD"),
                                                                        ("lorenz63", "RK4 + LSTM-S")]
    assert result["rows"][0]["fsgd"]["lambda_prior"] == 7.0
    assert (tmp_path / "lorenz63_example.png").stat().st_size > 0 and not (tmp_path / "mnist_examples.png").exists()
    assert "--set" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("key, value", [("methods", ["2S-CNN + LSTM"]), ("datasets", ["lorenz-63"])])
def test_unknown_rows_or_datasets_fail_before_training(key, value):
    from deepinv_meta.benchmarks import variational

    with pytest.raises(ValueError, match=f"unknown {key}"):
        run_benchmark(variational, Context(quick=True, device="cpu", settings={key: value}))


def test_the_dictionary_baselines_see_the_original_intensities():
    """Standardised digits go back to their original intensities for scikit-learn, whose penalties depend on scale."""
    import deepinv as dinv
    import torch

    from deepinv_meta.benchmarks.variational import InOriginalIntensities

    seen = []

    class Recorder(dinv.models.Reconstructor):
        def forward(self, y, physics, **kwargs):
            seen.append(y)
            return 2 * y

    y = torch.randn(2, 1, 4, 4)
    x_hat = InOriginalIntensities(Recorder(), offset=0.13, scale=0.31)(y, physics=None)
    torch.testing.assert_close(seen[0], 0.31 * y + 0.13)
    torch.testing.assert_close(x_hat, (2 * (0.31 * y + 0.13) - 0.13) / 0.31)

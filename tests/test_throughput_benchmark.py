"""`deepinv-meta benchmark throughput`: measurements in fresh processes, beside an earlier commit."""

import json
import subprocess
from pathlib import Path

import pytest

from deepinv_meta.benchmarks.report import Context, run_benchmark

from deepinv_meta.benchmarks import throughput

CASE = "MetaDIP test-time step (64 px)"  # the cheapest case


def test_one_case_is_measured_with_its_flops_beside_the_peak_and_a_reference_commit(tmp_path):
    in_git = subprocess.run(["git", "-C", str(Path(throughput.__file__).parent), "rev-parse", "HEAD"],
                            capture_output=True).returncode == 0
    result = run_benchmark(throughput, Context(quick=True, out=tmp_path, settings={"cases": [CASE], "reference": "HEAD" if in_git else None}))
    row = result["rows"][0]
    assert row["case"] == CASE and row["now"]["seconds"] > 0 and row["now"]["flops"] > 1e8
    assert result["peak"]["matmul_gflops"] > 0 and result["peak"]["conv_gflops"] > 0
    if in_git:
        assert row["reference"]["seconds"] > 0 and row["reference"]["flops"] == pytest.approx(row["now"]["flops"], rel=0.05)
    table = (tmp_path / "table.md").read_text()
    assert CASE in table and "% of peak" in table
    assert json.loads((tmp_path / "results.json").read_text())["benchmark"] == "throughput"


def test_unknown_cases_are_refused():
    with pytest.raises(ValueError, match="unknown throughput cases"):
        run_benchmark(throughput, Context(quick=True, settings={"cases": ["nope"], "reference": None}))

"""`deepinv-meta benchmark meta-red --quick` end to end (slow: several minutes on one CPU core)."""

import json
import os

import pytest


@pytest.mark.slow
def test_quick_meta_red_benchmark_writes_the_contract(tmp_path):
    if not os.environ.get("DEEPINV_META_DATA"):
        pytest.skip("needs the offline data (DEEPINV_META_DATA)")
    from deepinv_meta.cli import main

    assert main(["benchmark", "meta-red", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["benchmark"] == "meta-red" and result["quick"] is True
    tables = {row["table"] for row in result["rows"]}
    assert tables == {"1", "2", "3", "4"}
    methods = {row["method"] for row in result["rows"]}
    assert {"Meta-2", "UNet (supervised)", "Meta-RED (L1, 3x3 = 12 it.)", "HQS unrolled (12 it., trained DnCNN)"} <= methods
    for row in result["rows"]:
        assert 5 < row["psnr"] < 60 and 0 < row["ssim"] <= 1 and row["time_s"] > 0
    assert (tmp_path / "table.md").stat().st_size > 0

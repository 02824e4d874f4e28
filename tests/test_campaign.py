"""Campaigns: resumable, locked, validated, logged, and exporting improved weights to a zoo folder."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from deepinv_meta import campaign as campaign_module
from deepinv_meta import pretrained
from deepinv_meta.campaign import Run, Setup, run_campaign
from deepinv_meta.io import FileLock
from helpers import LockHeldByAnotherProcess, flip_a_byte


def _tiny_build(root, device):
    from helpers import make_small_tasks

    from deepinv_meta import MetaPDNet

    torch.manual_seed(0)
    tasks = make_small_tasks()
    return Setup(trainer_args=dict(inner_loss="unsupervised", inner_steps=1, batch_size=2),
                 model=MetaPDNet(depth=2, channels=4), tasks=tasks, validation_tasks=None,
                 provenance={"training_data": "random 16x16", "tasks": [t.name for t in tasks], "validation": "MSE"})


@pytest.fixture
def tiny_campaign(monkeypatch, tmp_path):
    monkeypatch.setitem(campaign_module.CAMPAIGNS, "tiny", [Run("tiny-model", _tiny_build)])
    monkeypatch.setenv("DEEPINV_META_DATA", str(tmp_path))  # a data folder is required; the tiny run reads none
    return tmp_path


def test_a_campaign_resumes_logs_and_exports_to_the_zoo(tiny_campaign):
    folder, zoo = tiny_campaign / "campaigns", tiny_campaign / "zoo"
    first = run_campaign("tiny", 0.05, folder=folder, chunk_minutes=0.02, zoo=zoo, log=lambda m: None)
    assert len(first) >= 1 and first[0]["exported"]  # the first validation always improves on nothing
    steps = first[-1]["step"]
    second = run_campaign("tiny", 0.03, folder=folder, chunk_minutes=0.03, zoo=zoo, log=lambda m: None)
    assert second[0]["step"] > steps  # resumed, not restarted
    rows = list(csv.DictReader(open(folder / "tiny" / "log.csv")))
    assert len(rows) == len(first) + len(second)
    state = json.loads((folder / "tiny" / "tiny-model.json").read_text())
    assert state["steps"] == second[-1]["step"] and state["cpu_minutes"] > 0
    best = min(float(r["val_loss"]) for r in rows)
    assert state["best_loss"] == pytest.approx(best)
    status = (folder / "tiny" / "STATUS.md").read_text()
    assert "tiny-model" in status and (folder / "tiny" / "curve.png").stat().st_size > 1000
    entry = pretrained.read_registry(zoo)["tiny-model"]
    assert entry["validation_loss"] == pytest.approx(best) and entry["outer_steps"] == state["best_step"]
    model = pretrained.load("tiny-model", zoo=zoo)
    assert type(model).__name__ == "MetaPDNet" and not model.training
    assert not list((folder / "tiny").glob("*.tmp")) and not (folder / "tiny" / "campaign.lock").exists()


def test_a_plateau_restarts_from_the_best_weights_with_half_the_outer_learning_rate(tiny_campaign, monkeypatch):
    folder, zoo = tiny_campaign / "campaigns", tiny_campaign / "zoo"
    run_campaign("tiny", 0.02, folder=folder, chunk_minutes=0.02, zoo=zoo, log=lambda m: None)
    state_file = folder / "tiny" / "tiny-model.json"
    state = json.loads(state_file.read_text())
    state["best_loss"] = 1e-30  # no later validation can improve on it: every chunk is on the plateau
    state_file.write_text(json.dumps(state))
    monkeypatch.setattr(campaign_module, "PLATEAU_CHUNKS", 2)
    best = pretrained.load("tiny-model", zoo=zoo).state_dict()
    records, checkpoint = [], folder / "tiny" / "tiny-model.trainer.pt"
    for call in range(4):  # one chunk per call (its minutes are the chunk's): the count does not depend on the speed
        records += run_campaign("tiny", 0.01, folder=folder, chunk_minutes=0.01, zoo=zoo, log=lambda m: None)
        weights = torch.load(checkpoint, weights_only=True)["model"]
        restarted = all(torch.equal(weights[k], v) for k, v in best.items())
        assert restarted == (call in (1, 3))  # back to the best weights (the zoo's) at every second chunk
    assert len(records) == 4 and not any(r["exported"] for r in records)
    factors = [r["lr_factor"] for r in records]
    assert factors == [1.0, 0.5, 0.5, 0.25]  # and halved there
    assert torch.load(checkpoint, weights_only=True)["lr_factor"] == factors[-1]


def test_a_tampered_zoo_file_is_refused(tiny_campaign):
    zoo = tiny_campaign / "zoo"
    run_campaign("tiny", 0.02, folder=tiny_campaign / "c", chunk_minutes=0.02, zoo=zoo, log=lambda m: None)
    flip_a_byte(pretrained.weights_path("tiny-model", zoo))
    with pytest.raises(ValueError, match="do not match their registered SHA-256"):
        pretrained.load("tiny-model", zoo=zoo)
    with pytest.raises(ValueError, match="no pretrained model named 'nope'"):
        pretrained.load("nope", zoo=zoo)


def test_a_second_campaign_on_the_same_folder_is_refused(tiny_campaign):
    with LockHeldByAnotherProcess(tiny_campaign / "campaigns" / "tiny" / "campaign.lock") as pid:
        with pytest.raises(RuntimeError, match=f"held by process {pid}"):
            run_campaign("tiny", 0.02, folder=tiny_campaign / "campaigns", zoo=tiny_campaign / "zoo", log=lambda m: None)
    # the holder is dead now: its lock is stale and taken over with a warning
    with pytest.warns(UserWarning, match="stale lock"):
        run_campaign("tiny", 0.02, folder=tiny_campaign / "campaigns", chunk_minutes=0.02, zoo=tiny_campaign / "zoo",
                     log=lambda m: None)


def test_file_lock_is_reentrant_free_and_released(tmp_path):
    with FileLock(tmp_path / "x"):
        assert (tmp_path / "x.lock").read_text() == str(os.getpid())
    assert not (tmp_path / "x.lock").exists()


def test_campaign_command_rejects_bad_arguments_with_one_line():
    for args, message in ((["campaign", "nope", "--minutes", "1"], "invalid choice"),
                          (["campaign", "metadip", "--minutes", "0"], "allowed range"),
                          (["campaign", "metadip", "--minutes", "1", "--threads", "-2"], "allowed range")):
        done = subprocess.run([sys.executable, "-m", "deepinv_meta.cli", *args], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr

"""Bad input to the console script: one line naming the problem, exit code 2 (usage) or 1, no traceback,
and the input files untouched."""

import hashlib
import subprocess
import sys

import pytest
import torch

from deepinv_meta import MetaPDNet, save


def run(*args):
    done = subprocess.run([sys.executable, "-m", "deepinv_meta.cli", *map(str, args)], capture_output=True, text=True)
    return done.returncode, done.stderr.strip()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_file(tmp_path):
    return save(MetaPDNet(depth=2, channels=4), tmp_path / "m.pt")


@pytest.mark.parametrize("args, message", [
    (["finetune", "M", "--physics", "sr", "--factor", "0", "--out", "o.pt"], "--factor"),
    (["finetune", "M", "--physics", "sr", "--size", "3", "--out", "o.pt"], "--size"),
    (["finetune", "M", "--physics", "sr", "--size", "-8", "--out", "o.pt"], "--size"),
    (["finetune", "M", "--physics", "sr", "--patches", "0", "--out", "o.pt"], "--patches"),
    (["finetune", "M", "--physics", "mri", "--acceleration", "0", "--out", "o.pt"], "--acceleration"),
    (["finetune", "M", "--physics", "blur", "--blur-sigma", "0", "--out", "o.pt"], "--blur-sigma"),
    (["finetune", "M", "--physics", "sr", "--lr", "1e9", "--out", "o.pt"], "--lr"),
    (["finetune", "M", "--physics", "sr", "--lr", "nan", "--out", "o.pt"], "--lr"),
    (["finetune", "M", "--physics", "denoising", "--noise", "-0.1", "--out", "o.pt"], "--noise"),
    (["finetune", "M", "--physics", "inpainting", "--ratio", "1.5", "--out", "o.pt"], "--ratio"),
    (["train", "--out", "o.pt", "--batch-size", "0"], "--batch-size"),
    (["train", "--out", "o.pt", "--inner-momentum", "1"], "--inner-momentum"),
])
def test_out_of_range_arguments_are_refused_at_parse_time(args, message, model_file):
    code, err = run(*[model_file if a == "M" else a for a in args])
    assert code == 2 and message in err and "Traceback" not in err
    assert "allowed range" in err or "not an integer" in err or "is outside" in err


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(model_file):
    before = digest(model_file)
    code, err = run("finetune", model_file, "--physics", "sr", "--out", model_file, "--steps", "1")
    assert code == 2 and "also an input" in err and len(err.splitlines()) == 1
    assert digest(model_file) == before


def unwritable_folder():
    """A folder no one can create files in, root included (a read-only mount), or None."""
    import tempfile
    from pathlib import Path

    for folder in (Path("/sys"), Path("/proc/1")):
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError:
            return folder
    return None


def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_any_work(model_file):
    folder = unwritable_folder()
    if folder is None:
        pytest.skip("no read-only folder on this machine")
    done = subprocess.run([sys.executable, "-m", "deepinv_meta.cli", "finetune", str(model_file), "--physics", "sr",
                           "--size", "16", "--patches", "2", "--steps", "1", "--out", str(folder / "adapted.pt")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not writable" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "fine-tuning" not in done.stdout  # refused before the work, not after it


def test_json_over_a_model_is_refused_without_force(model_file, tmp_path):
    other = save(MetaPDNet(depth=2, channels=4), tmp_path / "other.pt")
    before = digest(other)
    code, err = run("evaluate", model_file, "--physics", "sr", "--size", "32", "--json", other)
    assert code == 2 and "not overwriting" in err and "--force" in err
    assert digest(other) == before


def test_train_refuses_the_same_file_for_model_and_checkpoint(tmp_path):
    code, err = run("train", "--out", tmp_path / "x.pt", "--checkpoint", tmp_path / "x.pt", "--steps", "1")
    assert code == 2 and "same file" in err


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"hello, not a checkpoint\n", "cannot be read"),
    (b"PK\x03\x04truncated", "cannot be read"),
])
def test_broken_model_files_get_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    code, err = run("finetune", bad, "--physics", "sr", "--out", tmp_path / "o.pt", "--steps", "1")
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_tensor_file_and_a_folder_are_not_models(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    code, err = run("finetune", tmp_path / "t.pt", "--physics", "sr", "--out", tmp_path / "o.pt")
    assert code == 2 and "not a deepinv-meta model" in err
    code, err = run("finetune", tmp_path, "--physics", "sr", "--out", tmp_path / "o.pt")
    assert code == 2 and "folder" in err


def test_a_malicious_pickle_is_refused_and_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))
    torch.save({"class": "MetaPDNet", "config": {}, "state_dict": Payload()}, tmp_path / "evil.pt")
    code, err = run("finetune", tmp_path / "evil.pt", "--physics", "sr", "--out", tmp_path / "o.pt")
    assert code == 2 and "not a safe checkpoint" in err
    assert not (tmp_path / "pwned").exists()


def test_non_image_files_in_an_image_folder_are_named(tmp_path, model_file):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "notes.png").write_text("not an image")
    code, err = run("finetune", model_file, "--physics", "sr", "--images", folder, "--out", tmp_path / "o.pt")
    assert code in (1, 2) and "notes.png" in err and "Traceback" not in err


def test_a_zoo_name_is_a_model():
    code, err = run("finetune", "no-such-zoo-model", "--physics", "sr", "--out", "/tmp/never.pt")
    assert code == 2 and "neither a file nor a zoo name" in err


def test_a_terminated_training_releases_its_lock_and_leaves_no_temporaries(tmp_path):
    import signal
    import time

    out = tmp_path / "meta.pt"
    proc = subprocess.Popen([sys.executable, "-m", "deepinv_meta.cli", "train", "--out", str(out), "--depth", "2",
                             "--channels", "4", "--patch-size", "16", "--batch-size", "2", "--steps", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "meta.pt.trainer.pt.lock"
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert lock.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert not lock.exists() and not list(tmp_path.glob("*.tmp"))


def test_downscaled_pairs_on_an_operator_without_scales_is_refused(tmp_path, model_file):
    code, err = run("finetune", model_file, "--physics", "mri", "--pairs", "--out", tmp_path / "o.pt")
    assert code in (1, 2) and "--pairs" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.pt").exists()

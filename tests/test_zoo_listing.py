"""`deepinv-meta zoo`: the list of pretrained models, one model's record, and hash verification."""

import shutil
import subprocess
import sys

import pytest
from helpers import flip_a_byte

from deepinv_meta import pretrained


def zoo_command(*args):
    return subprocess.run([sys.executable, "-m", "deepinv_meta.cli", "zoo", *args], capture_output=True, text=True)


def test_the_zoo_command_lists_every_model_and_shows_one_record():
    done = zoo_command("--verify")
    assert done.returncode == 0, done.stderr
    for name in ("meta-prior-unsupervised", "meta-prior-supervised", "metadip", "meta-red-deblur", "variational-mnist"):
        assert name in done.stdout
    assert "all weight files match their SHA-256" in done.stdout
    done = zoo_command("metadip", "--verify")
    assert done.returncode == 0, done.stderr
    assert "training_data:" in done.stdout and "(SHA-256 verified)" in done.stdout
    assert "MetaDIP.from_pretrained('metadip')" in done.stdout


def test_an_unknown_name_is_one_line_listing_the_names():
    done = zoo_command("metadipp")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "available: [" in done.stderr and "Traceback" not in done.stderr


def test_verify_names_a_damaged_weight_file(tmp_path):
    shutil.copy(pretrained.HERE / pretrained.REGISTRY, tmp_path / pretrained.REGISTRY)
    shutil.copytree(pretrained.HERE / "weights", tmp_path / "weights")
    assert "metadip" in pretrained.describe(verify=True, zoo=tmp_path)
    flip_a_byte(tmp_path / "weights" / "metadip.pt")
    with pytest.raises(ValueError, match="'metadip'.*do not match their registered SHA-256"):
        pretrained.describe(verify=True, zoo=tmp_path)
    assert "metadip" in pretrained.describe(zoo=tmp_path)  # listing alone reads no weights

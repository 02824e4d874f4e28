"""The zoo ships inside the package: a non-editable install (a built wheel) loads every entry offline."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import deepinv_meta

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_built_wheel_holds_and_loads_the_whole_zoo(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("deepinv_meta-*.whl"))
    names = deepinv_meta.pretrained.available()
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "deepinv_meta/pretrained/registry.json" in files
    assert {f"deepinv_meta/pretrained/weights/{entry['file']}" for entry in names.values()} <= files
    script = ("import deepinv_meta, sys; assert deepinv_meta.__file__.startswith(sys.argv[1]), deepinv_meta.__file__\n"
              "for name, entry in deepinv_meta.pretrained.available().items():\n"
              "    try:\n"
              "        print(name, type(deepinv_meta.pretrained.load(name)).__name__)\n"
              "    except FileNotFoundError:  # weights we do not ship (Meta-RED's DnCNN) and no offline data\n"
              "        assert entry.get('external'), name\n"
              "        print(name, 'needs the offline data')")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "site")], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin",
                              "DEEPINV_META_DATA": str(ROOT.parent / "shared" / "data")}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.stdout.splitlines()) == len(names) >= 5

"""The documentation builds offline, warnings as errors (a broken docstring or page fails CI)."""

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("pydata_sphinx_theme")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-D", "plot_gallery=0", str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True, cwd=DOCS)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (tmp_path / "html" / "zoo.html").is_file() and (tmp_path / "html" / "performance.html").is_file()

"""Sphinx configuration for deepinv-meta (builds offline)."""

import deepinv_meta

project = "deepinv-meta"
release = deepinv_meta.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]
autodoc_member_order = "bysource"
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
}
html_theme = "pydata_sphinx_theme"
exclude_patterns = ["_build"]

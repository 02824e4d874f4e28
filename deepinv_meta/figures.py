"""Figures written to files: tight layout, written atomically (a reader never sees half a PNG), closed."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to ``path`` (format from the suffix, PNG by default) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=dpi, format=path.suffix[1:] or "png")
    plt.close(fig)
    tmp.replace(path)
    return path

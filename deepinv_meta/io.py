"""Saving and loading: atomic writes, ``weights_only=True`` loads, meta-models rebuilt from their config."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def safe_load(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(..., weights_only=True)`` with a clear error when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    return torch.load(path, map_location=map_location, weights_only=True)


def _model_classes():
    from .models import LinearModel, MetaDIP, MetaPDNet, MetaRED, MetaSIREN, VariationalReconstructor

    classes = (MetaPDNet, LinearModel, MetaDIP, MetaSIREN, MetaRED, VariationalReconstructor)
    return {cls.__name__: cls for cls in classes}


def save(model: torch.nn.Module, path: str | os.PathLike, **metadata) -> Path:
    """Save a meta-model's weights and constructor config (``model.config``) atomically.

    :Examples:

    >>> import tempfile, os
    >>> from deepinv_meta import MetaPDNet, save, load
    >>> model = MetaPDNet(depth=2, channels=4)
    >>> path = save(model, os.path.join(tempfile.mkdtemp(), "meta.pt"))
    >>> load(path).depth
    2
    """
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no `config`; save its state_dict() with atomic_save.")
    payload = {"class": type(model).__name__, "config": config, "state_dict": model.state_dict()}
    payload["metadata"] = metadata
    return atomic_save(payload, path)


def load(path: str | os.PathLike, map_location="cpu", return_metadata: bool = False):
    """Rebuild a meta-model saved with :func:`save` (or the model of a :class:`MetaTrainer` checkpoint).

    :param bool return_metadata: also return the keyword metadata given to :func:`save` (``{}`` if none).
    """
    payload = safe_load(path, map_location)
    metadata = payload.get("metadata", {})
    if "model_class" in payload:  # a MetaTrainer checkpoint
        payload = {"class": payload["model_class"], "config": payload["model_config"], "state_dict": payload["model"]}
    classes = _model_classes()
    if payload.get("class") not in classes:
        raise ValueError(f"{path}: unknown model class {payload.get('class')!r}; known: {sorted(classes)}.")
    cls = classes[payload["class"]]
    model = getattr(cls, "from_config", cls)(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return (model, metadata) if return_metadata else model

"""Saving and loading: atomic writes, ``weights_only=True`` loads, meta-models rebuilt from their config."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
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


def model_classes() -> dict:
    """``{class name: class}`` of the models :func:`load` can rebuild."""
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
    payload = payload_of(model)
    payload["metadata"] = metadata
    return atomic_save(payload, path)


def payload_of(model: torch.nn.Module) -> dict:
    """What :func:`save` writes: ``{"class", "config", "state_dict"}``."""
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no `config`; save its state_dict() with atomic_save.")
    return {"class": type(model).__name__, "config": config, "state_dict": model.state_dict()}


def load(path: str | os.PathLike, map_location="cpu", return_metadata: bool = False):
    """Rebuild a meta-model saved with :func:`save` (or the model of a :class:`MetaTrainer` checkpoint).

    :param bool return_metadata: also return the keyword metadata given to :func:`save` (``{}`` if none).
    """
    payload = safe_load(path, map_location)
    metadata = payload.get("metadata", {})
    if "model_class" in payload:  # a MetaTrainer checkpoint
        payload = {"class": payload["model_class"], "config": payload["model_config"], "state_dict": payload["model"]}
    classes = model_classes()
    if payload.get("class") not in classes:
        raise ValueError(f"{path}: unknown model class {payload.get('class')!r}; known: {sorted(classes)}.")
    cls = classes[payload["class"]]
    model = getattr(cls, "from_config", cls)(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return (model, metadata) if return_metadata else model


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileLock:
    """An exclusive lock on a file path, held by this process while in a ``with`` block.

    The lock is a ``PATH.lock`` file holding the owner's pid, created atomically (``O_EXCL``). A second
    holder is refused with an error naming the pid; the lock of a process that no longer runs (killed
    with ``kill -9``, a machine that went down) is taken over with a warning.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(str(path) + ".lock")

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise RuntimeError(
                        f"{self.path} is held by process {owner}, which is still running: another run uses "
                        "the same files. Wait for it to end, or use another path."
                    ) from None
                warnings.warn(f"taking over the stale lock {self.path} of process {owner}, which no longer runs.")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise RuntimeError(f"could not take the lock {self.path}; remove it if no run uses these files.")

    def __exit__(self, *exc) -> None:
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or -1)
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete ``PATH*.tmp`` files that :func:`atomic_save` left behind when its writer was killed.

    Call it only while holding the path's :class:`FileLock`, so that no live writer owns them.
    """
    path = Path(path)
    leftovers = sorted(path.parent.glob(path.name + "*.tmp")) if path.parent.is_dir() else []
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers

"""Saving and loading: atomic writes, ``weights_only=True`` loads, meta-models rebuilt from their config."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
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
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a saved model is an ordinary file
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if _disk_full(error):  # torch's zip writer reports it as "enforce fail at inline_container.cc"
            raise OSError(errno.ENOSPC, f"could not write {path}: no space left on its disk (the file there, if any, "
                                        "is unchanged); free some space or write elsewhere") from None
        raise
    return path


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and "inline_container" in text and "write" in text.lower()


def atomic_write_json(value, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``value`` as JSON to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=indent) + "\n")
    os.replace(tmp, path)
    return path


def safe_load(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(..., weights_only=True)`` with one clear error for a missing, empty, truncated, foreign or
    unsafe file (a pickle that would run code is refused, never executed)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file.")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (a write that did not finish?); it is not a checkpoint.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} is not a safe checkpoint: it holds objects a weights-only load refuses "
                         f"({str(error).splitlines()[0][:120]}). deepinv-meta never loads such files.") from None
    except (RuntimeError, EOFError, OSError, KeyError, AttributeError, ValueError) as error:
        raise ValueError(f"{path} cannot be read as a torch checkpoint (truncated or not a checkpoint): "
                         f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}") from None


# the models load() can rebuild, filled by the model classes themselves (@register_model), so that this ground
# floor never imports the models above it
MODEL_CLASSES: dict[str, type] = {}


def register_model(cls: type) -> type:
    """Class decorator: let :func:`load` rebuild ``cls`` by name from a saved ``config``."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def model_classes() -> dict:
    """``{class name: class}`` of the models :func:`load` can rebuild."""
    return dict(MODEL_CLASSES)


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
    check_plain(metadata)
    payload = payload_of(model)
    payload["metadata"] = metadata
    payload["sha256"] = weights_checksum(payload["state_dict"])
    return atomic_save(payload, path)


def weights_checksum(state_dict: dict) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes (stored by :func:`save`, verified by :func:`load`)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(state_dict[name].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_plain(value, where: str = "metadata") -> None:
    """Refuse values that a ``weights_only=True`` load could not read back (plain numbers, strings, lists,
    tuples, dicts with string keys, ``None`` and tensors only)."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}; use string keys.")
            check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}, which a safe (weights_only) load cannot read back; "
                    "store plain numbers, strings, lists or dicts.")


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
    if not isinstance(payload, dict) or not ({"class", "state_dict"} <= set(payload) or "model_class" in payload):
        raise ValueError(f"{path} is not a deepinv-meta model or trainer checkpoint (it holds a "
                         f"{type(payload).__name__}); save models with deepinv_meta.save.")
    if "sha256" in payload and weights_checksum(payload["state_dict"]) != payload["sha256"]:
        raise ValueError(f"{path}: the weights do not match the checksum saved with them: the file is damaged. "
                         "Restore it from a copy or retrain.")
    metadata = payload.get("metadata", {})
    if "model_class" in payload:  # a MetaTrainer checkpoint
        payload = {"class": payload["model_class"], "config": payload["model_config"], "state_dict": payload["model"]}
    model = model_from_payload(payload, path)
    return (model, metadata) if return_metadata else model


def model_from_payload(payload: dict, path, left_out=()) -> torch.nn.Module:
    """The model a ``{"class", "config", "state_dict"}`` payload describes; weights whose names start with one of
    ``left_out`` may be missing (they are filled elsewhere, e.g. the zoo's external weights)."""
    classes = model_classes()
    if payload.get("class") not in classes:
        raise ValueError(f"{path}: unknown model class {payload.get('class')!r}; known: {sorted(classes)}.")
    model = getattr(classes[payload["class"]], "from_config", classes[payload["class"]])(**payload["config"])
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith(tuple(left_out))]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit {payload['class']} (missing {missing}, unexpected {unexpected}).")
    return model


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

r"""The zoo: meta-models trained by the project's campaigns, shipped inside the package.

Each entry of ``registry.json`` names a weight file of ``weights/`` (written by
:func:`deepinv_meta.io.save`), its SHA-256 and its provenance (training data, tasks, outer steps,
CPU / GPU minutes, validation score, date, commit). :func:`load` verifies the hash before reading the
file with ``weights_only=True``. An entry may also give a ``url`` (deepinv's hub convention) for
weights too large to ship; they are then downloaded once into torch's hub cache and verified the same way.

Weights the project does not own are never shipped: an entry lists them under ``external`` (e.g. the
KAIR DnCNN inside Meta-RED), and :func:`load` reads them from a local file (argument, or the offline
data folder ``$DEEPINV_META_DATA``).

:Examples:

>>> import deepinv_meta
>>> "meta-prior-unsupervised" in deepinv_meta.pretrained.available()
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..io import atomic_save, atomic_write_json, model_from_payload, payload_of, safe_load, sha256_file
from ..models import zoo as _zoo

HERE = Path(__file__).resolve().parent
REGISTRY = "registry.json"


def read_registry(zoo: str | os.PathLike = HERE) -> dict:
    """``{name: entry}`` of the zoo folder ``zoo`` (the package's own by default)."""
    path = Path(zoo) / REGISTRY
    return json.loads(path.read_text()) if path.is_file() else {}


def available() -> dict:
    """The zoo's models: ``{name: metadata}`` (file, SHA-256, class, training data, tasks, steps,
    CPU/GPU minutes, device, validation, date, commit)."""
    return read_registry()


def _entry(registry: dict, name: str) -> dict:
    """Entry ``name`` of ``registry``; an unknown name is an error listing the known ones."""
    if name not in registry:
        raise ValueError(f"no pretrained model named {name!r}; available: {sorted(registry)}.")
    return registry[name]


def weights_path(name: str, zoo: str | os.PathLike = HERE) -> Path:
    """The verified local weight file of zoo entry ``name`` (downloaded first if it has a ``url`` only)."""
    entry = _entry(read_registry(zoo), name)
    path = Path(zoo) / "weights" / entry["file"]
    if not path.is_file() and entry.get("url"):
        path = Path(torch.hub.get_dir()) / "deepinv_meta" / entry["file"]
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(entry["url"], str(path), progress=True)
    if not path.is_file():
        raise FileNotFoundError(f"the weights of {name!r} ({path}) are missing: reinstall deepinv-meta.")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ValueError(
            f"the weights of {name!r} ({path}) do not match their registered SHA-256 (file {digest[:12]}..., "
            f"registry {entry['sha256'][:12]}...): the file is damaged or was replaced. Reinstall deepinv-meta."
        )
    return path


def load(name: str, device="cpu", *, denoiser: str | os.PathLike | None = None, zoo: str | os.PathLike = HERE):
    """The zoo model ``name``, on ``device``, in ``eval()`` mode.

    :param str name: a name of :func:`available`, e.g. ``"meta-prior-unsupervised"``.
    :param str device: where to put the model.
    :param str denoiser: for entries with external weights (Meta-RED's DnCNN): their local file; default
        the file named by the entry under the offline data folder ``$DEEPINV_META_DATA``.
    """
    path = weights_path(name, zoo)
    entry = read_registry(zoo)[name]
    external = entry.get("external", {})
    model = model_from_payload(safe_load(path), path, left_out=tuple(external))
    for prefix, source in external.items():
        _load_external(model, prefix, source, denoiser, name)
    return model.to(device).eval()


def _load_external(model, prefix: str, source: dict, local, name: str) -> None:
    from ..data import data_root
    from ..weights import load_denoiser

    if local is None:
        try:
            local = data_root() / source["data_file"]
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{name!r} needs {source['description']}, which deepinv-meta does not ship: pass "
                f"denoiser=PATH (from {source['origin']}) or set DEEPINV_META_DATA to the offline data folder."
            ) from error
    module = model.get_submodule(prefix.rstrip("."))
    module.load_state_dict(load_denoiser(local).state_dict())


def describe(name: str | None = None, *, verify: bool = False, zoo: str | os.PathLike = HERE) -> str:
    """What ``deepinv-meta zoo`` prints: a table of the zoo's models, or every field of entry ``name``.

    :param bool verify: also check each weight file against its SHA-256 (a mismatch is an error naming it).

    :Examples:

    >>> from deepinv_meta.pretrained import describe
    >>> "meta-prior-supervised" in describe()
    True
    """
    registry = read_registry(zoo)
    if name is not None:
        entry = _entry(registry, name)
        if verify:
            weights_path(name, zoo)
        lines = [f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
                 for key, value in entry.items() if key != "external"]
        lines += [f"not shipped: {source['description']} (from {source['origin']}; offline: "
                  f"$DEEPINV_META_DATA/{source['data_file']})" for source in entry.get("external", {}).values()]
        lines += [f"weights: {Path(zoo) / 'weights' / entry['file']}" + (" (SHA-256 verified)" if verify else ""),
                  f"load: deepinv_meta.pretrained.load({name!r}) or {entry['class']}.from_pretrained({name!r}); on the "
                  f"command line, {name} wherever a model file is taken"]
        return "\n".join(lines)
    rows = [("name", "class", "outer steps", "CPU + GPU min", "held-out PSNR", "updated")]
    for key, entry in registry.items():
        if verify:
            weights_path(key, zoo)
        rows.append((key, entry["class"], str(entry.get("outer_steps", "-")),
                     f"{entry.get('cpu_minutes', 0):g} + {entry.get('gpu_minutes', 0):g}",
                     f"{entry['validation_psnr']} dB" if "validation_psnr" in entry else "-", entry.get("date", "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(table + ["", ("all weight files match their SHA-256. " if verify else "")
                             + "`deepinv-meta zoo NAME` shows a model's provenance (data, tasks, validation) "
                               "and how to load it."])


def export(model, name: str, *, metadata: dict, zoo: str | os.PathLike = HERE, external: dict | None = None) -> dict:
    """Write ``model`` as zoo entry ``name`` (weights file and registry entry, both atomically).

    :param dict metadata: provenance stored in the registry (plain JSON values).
    :param dict external: ``{state-dict prefix: source}`` for weights left out of the file (see :func:`load`).
    :return: the registry entry.
    """
    zoo = Path(zoo)
    payload = payload_of(model)
    external = dict(external or {})
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items()
                             if not any(k.startswith(prefix) for prefix in external)}
    file = f"{name}.pt"
    atomic_save(payload, zoo / "weights" / file)
    entry = {"file": file, "sha256": sha256_file(zoo / "weights" / file), "class": payload["class"],
             **metadata, "url": None}
    if external:
        entry["external"] = external
    registry = read_registry(zoo)
    registry[name] = entry
    atomic_write_json(dict(sorted(registry.items())), zoo / REGISTRY)
    return entry


_zoo.ZOO_LOADER = load  # Model.from_pretrained (deepinv_meta.models.zoo) calls it

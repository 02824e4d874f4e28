"""``Model.from_pretrained(name)``: the zoo (:mod:`deepinv_meta.pretrained`) from the model classes.

The zoo sits above the models (it rebuilds any of them), so the models do not import it: the zoo registers its
loader here when it is imported (``import deepinv_meta`` does).
"""

from __future__ import annotations

ZOO_LOADER = None  # set by deepinv_meta.pretrained: load(name, device=..., **kwargs) -> model


class FromPretrained:
    """Mixin giving a model class ``from_pretrained(name)``, which checks that the zoo entry is of that class."""

    @classmethod
    def from_pretrained(cls, name: str, device="cpu", **kwargs):
        """The zoo model ``name`` (see :func:`deepinv_meta.pretrained.available`), verified and in ``eval()``
        mode; ``kwargs`` go to :func:`deepinv_meta.pretrained.load` (e.g. ``denoiser=`` for Meta-RED)."""
        if ZOO_LOADER is None:
            raise RuntimeError("the zoo is not loaded: import deepinv_meta (or deepinv_meta.pretrained) first.")
        model = ZOO_LOADER(name, device=device, **kwargs)
        if not isinstance(model, cls):
            raise ValueError(f"zoo model {name!r} is a {type(model).__name__}, not a {cls.__name__}; "
                             f"use {type(model).__name__}.from_pretrained or deepinv_meta.pretrained.load.")
        return model

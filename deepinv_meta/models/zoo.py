"""``Model.from_pretrained(name)``: the zoo (:mod:`deepinv_meta.pretrained`) from the model classes."""

from __future__ import annotations


class FromPretrained:
    """Mixin giving a model class ``from_pretrained(name)``, which checks that the zoo entry is of that class."""

    @classmethod
    def from_pretrained(cls, name: str, device="cpu", **kwargs):
        """The zoo model ``name`` (see :func:`deepinv_meta.pretrained.available`), verified and in ``eval()``
        mode; ``kwargs`` go to :func:`deepinv_meta.pretrained.load` (e.g. ``denoiser=`` for Meta-RED)."""
        from ..pretrained import load  # the zoo sits above the models (it rebuilds any of them)

        model = load(name, device=device, **kwargs)
        if not isinstance(model, cls):
            raise ValueError(f"zoo model {name!r} is a {type(model).__name__}, not a {cls.__name__}; "
                             f"use {type(model).__name__}.from_pretrained or deepinv_meta.pretrained.load.")
        return model

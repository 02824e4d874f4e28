"""A benchmark's settings: its full or quick configuration with the user's ``--set KEY=VALUE`` overrides."""

from __future__ import annotations

import ast


def configure(base: dict, overrides: dict | None = None) -> dict:
    """A copy of ``base`` with ``overrides`` applied; an unknown key is an error (a typo must not be ignored).

    :Examples:

    >>> configure({"train_minutes": 10.0, "img_size": 64}, {"train_minutes": 2})
    {'train_minutes': 2, 'img_size': 64}
    """
    cfg = dict(base)
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise KeyError(f"unknown benchmark setting {key!r}; this benchmark's settings are: {', '.join(sorted(cfg))}.")
        cfg[key] = value
    return cfg


def per_model(value, name: str):
    """A setting given per model, dataset or task (``{"MetaDIP": 1e-4, "MetaSIREN": 1e-3}``, ``{"lorenz63": 30000,
    "lorenz96": 3000}``) or once for all (``1e-3``).

    :Examples:

    >>> per_model({"MetaDIP": 20.0, "MetaSIREN": 10.0}, "MetaDIP"), per_model(5.0, "MetaDIP")
    (20.0, 5.0)
    """
    if isinstance(value, dict):
        if name not in value:
            raise KeyError(f"the setting {value!r} has no value for {name!r}; give one for each model, dataset or task, or a single value.")
        return value[name]
    return value


def parse_setting(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` -> ``(KEY, value)``, the value read as a Python literal (``10``, ``[1, 5]``, ``None``)
    or kept as a string.

    :Examples:

    >>> parse_setting("curve_steps=[1, 5, 20]")
    ('curve_steps', [1, 5, 20])
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"a setting is KEY=VALUE (e.g. train_minutes=10), got {text!r}.")
    try:
        value = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        value = value.strip()  # a bare word, e.g. a file name
    return key.strip(), value

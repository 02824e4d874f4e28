"""Meta-learnable reconstructors, all ``deepinv.models.Reconstructor`` (``model(y, physics)``)."""

from .linear import LinearModel
from .pdnet import MetaPDNet

__all__ = ["MetaPDNet", "LinearModel"]

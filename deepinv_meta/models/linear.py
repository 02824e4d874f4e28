r"""Linear reconstructor :math:`f_\theta(y) = \theta y`, the model of Meta-Prior's theory (section 3)."""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import nn
from ..io import register_model


@register_model
class LinearModel(dinv.models.Reconstructor):
    r"""Linear map from measurements to images, :math:`f_\theta(y) = \theta\,\mathrm{vec}(y)`.

    :math:`\theta \in \mathbb{R}^{n \times m}` with :math:`n` image pixels and :math:`m` measurements.
    Used for the linear-Gaussian theory of Meta-Prior (Theorem 3.1, Lemma 3.2).

    :param tuple img_size: image shape ``(C, H, W)``.
    :param tuple meas_size: measurement shape (default: ``img_size``, e.g. inpainting).
    :param str init: ``"zeros"``, ``"identity"`` (needs ``m == n``) or ``"random"``.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.models import LinearModel
    >>> model = LinearModel((1, 4, 4), init="identity")
    >>> physics = dinv.physics.Inpainting(img_size=(1, 4, 4), mask=0.5)
    >>> y = physics(torch.rand(2, 1, 4, 4))
    >>> torch.allclose(model(y, physics), y)
    True
    """

    def __init__(self, img_size, meas_size=None, init: str = "zeros"):
        super().__init__()
        self.config = dict(img_size=tuple(img_size), meas_size=meas_size and tuple(meas_size), init=init)
        self.img_size = tuple(img_size)
        self.meas_size = tuple(meas_size or img_size)
        n, m = math.prod(self.img_size), math.prod(self.meas_size)
        if init == "zeros":
            theta = torch.zeros(n, m)
        elif init == "identity":
            if n != m:
                raise ValueError(f"init='identity' needs as many measurements as pixels ({m} != {n}).")
            theta = torch.eye(n)
        elif init == "random":
            theta = torch.randn(n, m) / math.sqrt(m)
        else:
            raise ValueError(f"init must be 'zeros', 'identity' or 'random', got {init!r}.")
        self.theta = nn.Parameter(theta)

    def forward(self, y: torch.Tensor, physics=None, **kwargs) -> torch.Tensor:
        if tuple(y.shape[1:]) != self.meas_size:
            raise ValueError(
                f"LinearModel expects measurements of shape (B, {', '.join(map(str, self.meas_size))}), "
                f"got {tuple(y.shape)}."
            )
        return (y.reshape(len(y), -1) @ self.theta.T).reshape(len(y), *self.img_size)

"""Input checks shared by the reconstructors: clear errors instead of deep broadcasting failures."""

from __future__ import annotations

import deepinv as dinv
import torch


def require_linear(physics, model_name: str) -> None:
    """Raise a ``TypeError`` unless ``physics`` is a deepinv ``LinearPhysics``."""
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise TypeError(
            f"{model_name} needs a linear operator (it uses the adjoint A^T), got "
            f"{type(physics).__name__}, which is not a deepinv.physics.LinearPhysics. Use a linear "
            "physics, or a model that supports non-linear ones."
        )


def require_dtype(y: torch.Tensor, weights: torch.Tensor, model_name: str) -> None:
    """Raise a ``TypeError`` naming both precisions when ``y`` and the model's weights differ."""
    if torch.is_floating_point(y) and y.dtype != weights.dtype:
        raise TypeError(f"{model_name}: y is {y.dtype} but the model's weights are {weights.dtype}; convert one to "
                        f"the other (y.to({weights.dtype}) or model.to({y.dtype})).")


def require_samples(y: torch.Tensor, model_name: str) -> None:
    """Raise a ``ValueError`` for an empty batch (it would otherwise surface as a NaN mean loss)."""
    if isinstance(y, torch.Tensor) and y.dim() > 0 and y.shape[0] == 0:
        raise ValueError(f"{model_name}: y holds no measurement (batch of size 0); give at least one.")


def adjoint_image(physics, y: torch.Tensor, model_name: str) -> torch.Tensor:
    """``physics.A_adjoint(y)`` as a 4-D image batch, with an error that names the shape problem."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{model_name}: y must be a torch.Tensor, got {type(y).__name__}.")
    require_samples(y, model_name)
    if not torch.is_floating_point(y):
        raise TypeError(
            f"{model_name}: y must be a real floating-point tensor, got {y.dtype}; deepinv stores "
            "complex data as two real channels."
        )
    try:
        x0 = physics.A_adjoint(y)
    except (RuntimeError, ValueError, IndexError) as error:
        raise ValueError(
            f"{model_name}: physics {type(physics).__name__} cannot be applied to y of shape "
            f"{tuple(y.shape)} ({error}). Make y with this physics (y = physics(x)) for images of "
            "the size the physics was built for (img_size)."
        ) from error
    if x0.dim() != 4:
        raise ValueError(
            f"{model_name} works on 2-D images (B, C, H, W); A^T y has shape {tuple(x0.shape)}."
        )
    return x0

r"""Test-time optimisers: reconstructors whose forward pass *is* a short optimisation.

MetaSIREN, MetaRED (Zhao) and MetaDIP share one structure: a network :math:`g_\theta` generates
the image (from pixel coordinates, or from a fixed latent code), and for each measurement
:math:`y` the weights are adapted for :math:`m` steps on the data fidelity, starting from the
meta-learned :math:`\theta^*` (Zhao, Algorithm 1):

.. math::

    \theta_0 = \theta^*, \qquad
    \theta_{k+1} = \theta_k - \alpha_k \nabla_\theta\Big(\operatorname{mean}\|A\,g_{\theta_k} - y\|^2
    + R(g_{\theta_k})\Big), \qquad f(y, A) = g_{\theta_m}.

The :math:`m` steps run through the shared :class:`~deepinv_meta.bilevel.InnerLoop` (with its
learned learning rates, Meta-SGD or momentum), so meta-training is plain supervised training of
the forward pass: :class:`~deepinv_meta.MetaTrainer` with ``inner_steps=0``, or any deepinv
training loop. The meta-weights are never modified by a forward pass (unlike
``deepinv.models.DeepImagePrior``, which keeps its fitted weights between calls).
"""

from __future__ import annotations

import deepinv as dinv
import torch
from torch import nn

from ..bilevel.inner import InnerLoop, check_finite
from ..losses import measurement_consistency_loss
from ..physics import to_physics_input
from .checks import require_dtype, require_samples
from .zoo import FromPretrained


class TestTimeOptimizer(FromPretrained, dinv.models.Reconstructor):
    r"""Base class: :math:`m` inner steps on the data fidelity from meta-learned weights.

    Subclasses implement :meth:`generate` (the image made by the network with given weights) and
    may add a regulariser :math:`R` (:meth:`regularizer`).

    Every image of a batch gets its own fast weights (the images are independent problems), so
    the physics must apply the same operator to every image of the batch.

    The meta-gradient is tracked (second order, through all :math:`m` steps) only in training
    mode with gradients enabled, i.e. during meta-training; in ``eval()`` mode or under
    ``torch.no_grad()`` (as in ``deepinv.test``) the inner steps still run, with gradients
    enabled internally, and the result is detached.

    :param torch.nn.Module net: the network :math:`g_\theta`; its weights are the meta-weights.
    :param deepinv_meta.bilevel.InnerLoop inner: the inner-loop settings (steps, learning rates).
    :param tuple img_size: ``(C, H, W)`` of the reconstructed images.
    :param bool complex_physics: cast the (real) image to complex before the physics, for physics
        that take complex images such as ``deepinv.physics.RandomPhaseRetrieval``.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, net: nn.Module, inner: InnerLoop, img_size, complex_physics: bool = False):
        super().__init__()
        self.complex_physics = complex_physics
        if len(tuple(img_size)) != 3:
            raise ValueError(f"img_size must be (C, H, W), got {img_size!r}.")
        self.net = net
        self.inner = inner
        self.img_size = tuple(int(s) for s in img_size)

    def generate(self, net, y: torch.Tensor, physics) -> torch.Tensor:
        """The image (1, C, H, W) for measurement ``y`` made by ``net`` (a callable with the current weights)."""
        raise NotImplementedError

    def regularizer(self, x: torch.Tensor) -> torch.Tensor | float:
        """Penalty :math:`R(x)` added to the data fidelity in the inner loop (default: none)."""
        return 0.0

    def physics_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the physics is applied to: the image, cast to complex if ``complex_physics``."""
        return to_physics_input(x, self.complex_physics)

    def fidelity_scale(self, y: torch.Tensor, physics) -> float:
        """Divisor of the data fidelity for measurement ``y`` (default 1; see :class:`~deepinv_meta.models.MetaDIP`)."""
        return 1.0

    def inner_loss(self, x: torch.Tensor, y: torch.Tensor, physics, scale: float = 1.0) -> torch.Tensor:
        r""":math:`\operatorname{mean}\|Ax - y\|^2 / s + R(x)`, with :math:`s` the :meth:`fidelity_scale`."""
        return measurement_consistency_loss(self.physics_input(x), y, physics) / scale + self.regularizer(x)

    def check_inputs(self, y: torch.Tensor, physics) -> None:
        """Clear errors for measurements or operators that do not fit the model."""
        name = type(self).__name__
        if not isinstance(y, torch.Tensor) or not torch.is_floating_point(y):
            raise TypeError(
                f"{name}: y must be a real floating-point tensor (deepinv stores complex data "
                f"as two real channels), got {getattr(y, 'dtype', type(y).__name__)}."
            )
        require_samples(y, name)
        require_dtype(y, next(self.net.parameters()), name)
        probe = self.physics_input(torch.zeros((1, *self.img_size), dtype=y.dtype, device=y.device))
        try:
            with torch.no_grad():
                y_probe = physics.A(probe)
        except (RuntimeError, ValueError, IndexError) as error:
            if "complex" in str(error).lower() and not probe.is_complex():
                raise TypeError(
                    f"{type(physics).__name__} takes complex images but {name} makes real ones ({error}); "
                    "build the model with complex_physics=True to cast its images to complex before the physics."
                ) from error
            raise ValueError(
                f"{name} makes images of size {self.img_size} but {type(physics).__name__} cannot be applied to "
                f"them ({error}). Build the model with the img_size of the physics."
            ) from error
        if y_probe.shape[0] != 1:
            raise ValueError(
                f"{name}: the physics maps one image to a batch of {y_probe.shape[0]}, i.e. it holds per-image "
                "parameters; every image gets its own inner fit here, so call the model image by image with "
                "the matching operator."
            )
        if y_probe.shape[1:] != y.shape[1:]:
            raise ValueError(
                f"{name}: the physics maps {self.img_size} images to measurements of shape {tuple(y_probe.shape[1:])} "
                f"but y has shape {tuple(y.shape[1:])} per image; y must come from this physics."
            )

    def forward(self, y: torch.Tensor, physics, steps: int | None = None, callback=None) -> torch.Tensor:
        r"""Reconstruct each image of ``y`` by ``steps`` (default ``inner.steps``) inner steps from :math:`\theta^*`.

        :param torch.Tensor y: measurements, batch first.
        :param deepinv.physics.Physics physics: the forward operator (one operator for the whole batch).
        :param int steps: number of inner steps (at most the number of learned learning rates).
        :param Callable callback: ``callback(k, loss)`` after every inner step (convergence curves).
        :raises NonFiniteLossError: if the inner fit diverges (NaN/Inf); nothing is returned then.
        """
        self.check_inputs(y, physics)
        track = self.training and torch.is_grad_enabled()
        images = []
        for i in range(y.shape[0]):
            yi = y[i : i + 1]
            scale = self.fidelity_scale(yi, physics)

            def loss(net, k, yi=yi, scale=scale):
                return self.inner_loss(self.generate(net, yi, physics), yi, physics, scale)

            result = self.inner.run(self.net, loss, steps=steps, track_meta_grad=track, callback=callback)
            with torch.set_grad_enabled(track):
                x = self.generate(result, yi, physics)
            check_finite(x, f"{type(self).__name__} output for image {i}")
            images.append(x)
        return torch.cat(images)

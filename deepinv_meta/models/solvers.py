r"""Differentiable classical solvers run for a fixed number of iterations from a given start.

They are the operator :math:`f` of Meta-RED / MetaSIREN (Zhao, eq. 4): the meta-learned image
:math:`\phi_\theta` initialises :math:`f`, and the inner loop differentiates through it. Each is
called as ``solver(x0, y, physics)``.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import nn


class GradientDescent(nn.Module):
    r"""Gradient descent on the data term, :math:`x_{k+1} = x_k - \alpha A^\top(Ax_k - y)` (Zhao, eq. 6).

    For inpainting it only refills the observed pixels; the missing ones keep the value of the start.

    :param int iterations: number of steps (0: identity).
    :param float stepsize: :math:`\alpha`.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.models.solvers import GradientDescent
    >>> physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5)
    >>> x = torch.rand(1, 1, 8, 8)
    >>> out = GradientDescent(iterations=1, stepsize=1.0)(torch.zeros_like(x), physics(x), physics)
    >>> torch.allclose(physics(out), physics(x))
    True
    """

    def __init__(self, iterations: int = 1, stepsize: float = 0.9):
        super().__init__()
        if iterations < 0 or not stepsize > 0:
            raise ValueError(f"need iterations >= 0 and stepsize > 0, got {iterations}, {stepsize}.")
        self.iterations = iterations
        self.stepsize = stepsize

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics) -> torch.Tensor:
        for _ in range(self.iterations):
            x = x - self.stepsize * physics.A_adjoint(physics.A(x) - y)
        return x


class REDFixedPoint(nn.Module):
    r"""Regularisation by denoising, fixed-point iterations (Romano, Elad & Milanfar 2017).

    RED's stationarity condition :math:`A^\top(Ax - y) + \frac{1}{\gamma}(x - D(x)) = 0` is solved
    by freezing the denoiser output at the current iterate:

    .. math::

        x_{k+1} = \operatorname{prox}_{\gamma \frac12\|A\cdot - y\|^2}\big(D_\sigma(x_k)\big)
                = \arg\min_x \tfrac12\|Ax - y\|^2 + \tfrac{1}{2\gamma}\|x - D_\sigma(x_k)\|^2,

    using deepinv's :class:`~deepinv.optim.prior.RED` for :math:`\nabla R(x) = x - D_\sigma(x)` and
    the physics' closed-form ``prox_l2`` (blur with circular padding, inpainting, MRI...).
    The denoiser's weights are trained with the model unless ``train_denoiser=False``.

    :param torch.nn.Module denoiser: a deepinv denoiser ``denoiser(x, sigma)`` (e.g. DnCNN).
    :param int iterations: number of fixed-point iterations.
    :param float gamma: data-fidelity weight :math:`\gamma` (larger: closer fit to ``y``).
    :param float sigma: noise level passed to the denoiser.
    :param bool train_denoiser: let the denoiser's weights receive gradients (Zhao, Table 4).
    :param bool learn_gamma: one learnable :math:`\gamma_k` per iteration (stored as :math:`\log\gamma_k`,
        so it stays positive), starting at ``gamma``; trained with the model (not in Zhao's paper).

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.models.solvers import REDFixedPoint
    >>> kernel = dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0))
    >>> physics = dinv.physics.BlurFFT(img_size=(1, 16, 16), filter=kernel)
    >>> solver = REDFixedPoint(dinv.models.DnCNN(1, 1, pretrained=None, depth=3), iterations=2)
    >>> solver(torch.zeros(1, 1, 16, 16), physics(torch.rand(1, 1, 16, 16)), physics).shape
    torch.Size([1, 1, 16, 16])
    """

    def __init__(self, denoiser: nn.Module, iterations: int = 3, gamma: float = 10.0, sigma: float = 0.05,
                 train_denoiser: bool = False, learn_gamma: bool = False):
        super().__init__()
        if iterations < 0 or not gamma > 0 or not sigma > 0:
            raise ValueError(f"need iterations >= 0, gamma > 0 and sigma > 0, got {iterations}, {gamma}, {sigma}.")
        self.prior = dinv.optim.prior.RED(denoiser)
        self.iterations = iterations
        self.gamma = gamma
        self.sigma = sigma
        self.prior.denoiser.requires_grad_(train_denoiser)
        self.log_gamma = nn.Parameter(torch.full((iterations,), math.log(gamma))) if learn_gamma else None

    def gammas(self) -> list:
        r""":math:`\gamma_k` of each iteration (tensors if learned)."""
        if self.log_gamma is None:
            return [self.gamma] * self.iterations
        return list(self.log_gamma.exp())

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics) -> torch.Tensor:
        if not hasattr(physics, "prox_l2"):
            raise TypeError(f"REDFixedPoint needs a physics with a prox_l2 (got {type(physics).__name__}).")
        for gamma in self.gammas():
            denoised = x - self.prior.grad(x, self.sigma)  # D_sigma(x) through deepinv's RED prior
            x = physics.prox_l2(denoised, y, gamma)
        return x

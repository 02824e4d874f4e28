r"""SIREN and the meta-learned SIREN initialisations of classical solvers (Zhao, "Meta-learning for
solving inverse problems"): MetaSIREN (the SIREN image alone, or followed by gradient descent) and
MetaRED (followed by RED fixed-point iterations with a denoiser)."""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import nn

from ..bilevel.inner import InnerLoop
from .solvers import GradientDescent, REDFixedPoint
from .test_time import TestTimeOptimizer
from ..io import register_model


class SIREN(nn.Module):
    r"""Sinusoidal representation network over pixel coordinates (Sitzmann et al. 2020).

    .. math:: h_0 = \text{coords} \in [-1, 1]^2,\quad h_{l+1} = \sin(\omega_0 (W_l h_l + b_l)),\quad
              \text{image} = W_L h_L + b_L,

    with the SIREN initialisation: :math:`W_0 \sim U(-1/2, 1/2)`, hidden
    :math:`W_l \sim U(-\sqrt{6/n}/\omega_0, \sqrt{6/n}/\omega_0)`. Calling it returns the image
    ``(1, C, H, W)`` sampled on the grid of ``img_size``.

    :param tuple img_size: ``(C, H, W)`` of the image it represents.
    :param int hidden: width of the hidden layers (paper: 256).
    :param int layers: number of linear layers, output layer included (paper: 5).
    :param float omega0: frequency :math:`\omega_0` (30 in Sitzmann et al.).

    :Examples:

    >>> from deepinv_meta.models import SIREN
    >>> SIREN((3, 16, 16), hidden=32, layers=3)().shape
    torch.Size([1, 3, 16, 16])
    """

    def __init__(self, img_size, hidden: int = 256, layers: int = 5, omega0: float = 30.0):
        super().__init__()
        if layers < 2 or hidden < 1:
            raise ValueError(f"SIREN needs layers >= 2 and hidden >= 1, got layers={layers}, hidden={hidden}.")
        self.img_size = tuple(img_size)
        self.omega0 = omega0
        channels, height, width = self.img_size
        widths = [2] + [hidden] * (layers - 1) + [channels]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        with torch.no_grad():
            for i, linear in enumerate(self.linears):
                bound = 1 / linear.in_features if i == 0 else math.sqrt(6 / linear.in_features) / omega0
                linear.weight.uniform_(-bound, bound)
        rows, cols = torch.linspace(-1, 1, height), torch.linspace(-1, 1, width)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
        self.register_buffer("coords", grid, persistent=False)

    def forward(self) -> torch.Tensor:
        h = self.coords
        *hidden, last = list(self.linears)  # no slicing: higher's patched ModuleList cannot be sliced
        for linear in hidden:
            h = torch.sin(self.omega0 * linear(h))
        out = last(h)  # (H*W, C)
        channels, height, width = self.img_size
        return out.T.reshape(1, channels, height, width)


@register_model
class MetaSIREN(TestTimeOptimizer):
    r"""A SIREN whose meta-learned weights initialise a classical solver (Zhao, Algorithm 1).

    .. math::

        \theta_{k+1} = \theta_k - \alpha_k \nabla_\theta \operatorname{mean}\|A f(\phi_{\theta_k}) - y\|^2,
        \qquad \hat x = f(\phi_{\theta_m}),

    where :math:`\phi_\theta` is the SIREN image and :math:`f` a fixed number of iterations of a
    classical solver (``solver(x0, y, physics)``, e.g.
    :class:`~deepinv_meta.models.solvers.GradientDescent`), or the identity (``solver=None``: the
    SIREN alone). The learning rates are learned per step (``learn_lr=True``) or per weight and
    step (``"per_parameter"``, Meta-SGD). Meta-train it by supervised training of the forward pass,
    e.g. :class:`~deepinv_meta.MetaTrainer` with ``inner_steps=0`` (Zhao, Algorithm 2).

    :param tuple img_size: ``(C, H, W)``.
    :param torch.nn.Module solver: the classical solver :math:`f` (``None``: identity).
    :param int steps: inner steps :math:`m`.
    :param float lr: inner learning rate (initial value when learned).
    :param bool, str learn_lr: ``True`` (per step), ``"per_parameter"`` (Meta-SGD) or ``False``.
    :param int hidden: SIREN width.
    :param int layers: SIREN linear layers.
    :param float omega0: SIREN frequency.
    :param bool complex_physics: cast the image to complex before the physics (phase retrieval).

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.models import MetaSIREN
    >>> physics = dinv.physics.Inpainting(img_size=(1, 16, 16), mask=0.5)
    >>> model = MetaSIREN((1, 16, 16), steps=3, hidden=32, layers=3).eval()
    >>> x_hat = model(physics(torch.rand(2, 1, 16, 16)), physics)
    >>> x_hat.shape
    torch.Size([2, 1, 16, 16])
    """

    def __init__(self, img_size, solver: nn.Module | None = None, steps: int = 5, lr: float = 1e-2,
                 learn_lr: bool | str = True, hidden: int = 256, layers: int = 5, omega0: float = 30.0,
                 complex_physics: bool = False):
        siren = SIREN(img_size, hidden=hidden, layers=layers, omega0=omega0)
        inner = InnerLoop(steps=steps, lr=lr, optimizer="sgd", learn_lr=learn_lr,
                          parameters=siren.parameters() if learn_lr == "per_parameter" else None)
        super().__init__(siren, inner, img_size, complex_physics=complex_physics)
        self.solver = solver
        self._arguments = dict(img_size=tuple(img_size), steps=steps, lr=lr, learn_lr=learn_lr, hidden=hidden,
                               layers=layers, omega0=omega0)

    @property
    def config(self) -> dict | None:
        """Constructor arguments for :func:`deepinv_meta.save` / :func:`deepinv_meta.load`
        (``None`` when the solver is not a :class:`~deepinv_meta.models.solvers.GradientDescent`)."""
        if self.solver is not None and not isinstance(self.solver, GradientDescent):
            return None
        solver = None if self.solver is None else dict(iterations=self.solver.iterations, stepsize=self.solver.stepsize)
        return dict(self._arguments, solver=solver, complex_physics=self.complex_physics)

    @classmethod
    def from_config(cls, solver=None, **config):
        return cls(solver=None if solver is None else GradientDescent(**solver), **config)

    def generate(self, net, y: torch.Tensor, physics) -> torch.Tensor:
        x0 = net()
        return x0 if self.solver is None else self.solver(x0, y, physics)


@register_model
class MetaRED(MetaSIREN):
    r"""MetaSIREN with RED fixed-point iterations as the classical solver (Zhao, section 4.2).

    :math:`f` is ``red_iterations`` iterations of :class:`~deepinv_meta.models.solvers.REDFixedPoint`
    with ``denoiser`` (e.g. a DnCNN), fixed or trained with the meta-weights (``train_denoiser``).
    With the paper's 3 SIREN updates and 3 RED iterations, one reconstruction costs
    :math:`3 \times (3 + 1) = 12` solver iterations.

    :param torch.nn.Module denoiser: ``denoiser(x, sigma)``.
    :param int red_iterations: RED iterations per evaluation of :math:`f`.
    :param float gamma: RED data-fidelity weight.
    :param float sigma: denoiser noise level.
    :param bool train_denoiser: fine-tune the denoiser in meta-training (Table 4).
    :param bool learn_gamma: meta-learn one RED weight :math:`\gamma_k` per RED iteration (not in the paper).

    Other parameters as :class:`MetaSIREN` (default ``learn_lr="per_parameter"``, as the paper).
    """

    def __init__(self, img_size, denoiser: nn.Module, red_iterations: int = 3, gamma: float = 10.0,
                 sigma: float = 0.05, train_denoiser: bool = False, steps: int = 3, lr: float = 1e-2,
                 learn_lr: bool | str = "per_parameter", hidden: int = 256, layers: int = 5, omega0: float = 30.0,
                 learn_gamma: bool = False):
        solver = REDFixedPoint(denoiser, iterations=red_iterations, gamma=gamma, sigma=sigma,
                               train_denoiser=train_denoiser, learn_gamma=learn_gamma)
        super().__init__(img_size, solver=solver, steps=steps, lr=lr, learn_lr=learn_lr, hidden=hidden,
                         layers=layers, omega0=omega0)
        self._arguments.update(red_iterations=red_iterations, gamma=gamma, sigma=sigma, train_denoiser=train_denoiser,
                               learn_gamma=learn_gamma)

    @property
    def config(self) -> dict | None:
        """Constructor arguments for :func:`deepinv_meta.save` / :func:`deepinv_meta.load`; the denoiser
        is saved as a ``deepinv.models.DnCNN`` architecture (``None`` for other denoisers)."""
        denoiser = self.solver.prior.denoiser
        if not isinstance(denoiser, dinv.models.DnCNN):
            return None
        return dict(self._arguments, denoiser=dict(in_channels=denoiser.in_conv.in_channels,
                                                   out_channels=denoiser.out_conv.out_channels,
                                                   depth=denoiser.depth, nf=denoiser.in_conv.out_channels,
                                                   bias=denoiser.in_conv.bias is not None))

    @classmethod
    def from_config(cls, denoiser, **config):
        return cls(denoiser=dinv.models.DnCNN(**denoiser, pretrained=None), **config)

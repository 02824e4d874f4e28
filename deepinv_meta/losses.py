r"""Inner and outer losses of the bilevel problem (Terris & Moreau, eq. 1-2).

All data terms are mean squared errors (averaged over batch and pixels), so that the same
``lr`` and ``lam`` work across image sizes and batch sizes.

.. math::

    \mathcal{L}_{\mathrm{sup}}(f_\phi) = \operatorname{mean} \|f_\phi(y, A) - x\|^2, \qquad
    \mathcal{L}_{\mathrm{uns}}(f_\phi) = \operatorname{mean} \|A f_\phi(y, A) - y\|^2,

and the proximal term tying the fast weights :math:`\phi` to the meta-weights :math:`\theta` is
:math:`\frac{\lambda}{2}\|\phi - \theta\|^2` (a plain sum over all parameters). The ``"equivariant"``
inner loss, not in the paper, adds equivariant imaging (:func:`equivariant_loss`) to
:math:`\mathcal{L}_{\mathrm{uns}}`: still no ground truth, but the null space of :math:`A` is no longer free.
Wherever an inner loss is asked for, deepinv's own losses may be given too (:func:`data_loss`).
"""

from __future__ import annotations

import functools
import warnings

import torch

import deepinv as dinv

INNER_LOSSES = ("supervised", "unsupervised", "equivariant")


def check_loss_name(loss):
    """Return ``loss`` if it is a known inner loss: one of :data:`INNER_LOSSES`, a ``deepinv.loss.Loss`` or a list of
    them (see :func:`data_loss`); else raise a ``ValueError`` listing the options."""
    if isinstance(loss, str):
        if loss not in INNER_LOSSES:
            raise ValueError(
                f"Unknown inner loss {loss!r}. Use one of {INNER_LOSSES}: 'supervised' needs "
                "ground truth x, 'unsupervised' only the measurements y (||A f(y) - y||^2), 'equivariant' "
                "adds shift-equivariant imaging to it (no ground truth either); or pass deepinv losses, "
                "e.g. [dinv.loss.MCLoss(), dinv.loss.EILoss(dinv.transform.Rotate())]."
            )
        return loss
    deepinv_losses(loss)
    return loss


def deepinv_losses(loss) -> list:
    """``loss`` (a ``deepinv.loss.Loss`` or a non-empty list or tuple of them) as a list."""
    losses = list(loss) if isinstance(loss, (list, tuple)) else [loss]
    if not losses or not all(isinstance(term, dinv.loss.Loss) for term in losses):
        raise ValueError(
            f"An inner loss must be one of {INNER_LOSSES}, a deepinv.loss.Loss or a list of them; got {loss!r}."
        )
    return losses


def loss_label(loss) -> str:
    """A short name of an inner loss, for logs and stored configurations (``"MCLoss+EILoss"`` for deepinv losses)."""
    return loss if isinstance(loss, str) else "+".join(type(term).__name__ for term in deepinv_losses(loss))


def supervised_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Mean squared error :math:`\operatorname{mean}\|\hat x - x\|^2`."""
    if x_hat.shape != x.shape:
        raise ValueError(
            f"Reconstruction has shape {tuple(x_hat.shape)} but the target has shape "
            f"{tuple(x.shape)}; check that the physics matches the images of the task."
        )
    return torch.mean((x_hat - x) ** 2)


def l1_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Mean absolute error :math:`\operatorname{mean}|\hat x - x|` (an outer loss of Zhao, Table 3)."""
    if x_hat.shape != x.shape:
        raise ValueError(f"Reconstruction has shape {tuple(x_hat.shape)} but the target has shape {tuple(x.shape)}.")
    return torch.mean(torch.abs(x_hat - x))


OUTER_LOSSES = {"l2": supervised_loss, "l1": l1_loss}


def outer_loss_function(loss):
    """The outer loss by name (``"l2"``: MSE, ``"l1"``) or a callable ``loss(x_hat, x)`` returned as is."""
    if callable(loss):
        return loss
    if loss not in OUTER_LOSSES:
        raise ValueError(f"Unknown outer loss {loss!r}; use one of {tuple(OUTER_LOSSES)} or a callable loss(x_hat, x).")
    return OUTER_LOSSES[loss]


def measurement_consistency_loss(x_hat: torch.Tensor, y: torch.Tensor, physics) -> torch.Tensor:
    r"""Unsupervised loss :math:`\operatorname{mean}\|A\hat x - y\|^2` (needs no ground truth)."""
    y_hat = physics.A(x_hat)
    if y_hat.shape != y.shape:
        raise ValueError(
            f"physics.A(x_hat) has shape {tuple(y_hat.shape)} but y has shape {tuple(y.shape)}; "
            "y must be measurements produced by this physics."
        )
    return torch.mean((y_hat - y) ** 2)


class _Scale(dinv.transform.Scale):
    """deepinv's ``Scale`` with its random parameters as plain tensors: deepinv's tensor subclass would otherwise
    flow from the sampling grid into the gradients and from there into the adapted weights (whose next use fails)."""

    def _transform(self, x, **params):
        with warnings.catch_warnings():  # deepinv calls torch.meshgrid without indexing= (its default is the one meant)
            warnings.filterwarnings("ignore", message="torch.meshgrid")
            return super()._transform(x, **{k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v
                                             for k, v in params.items()})


def equivariance_transform(name: str = "shift", rng: torch.Generator | None = None):
    """The deepinv transform of equivariant imaging by name: ``"shift"`` (random integer circular shifts),
    ``"rotate"`` (random integer angles, bilinear, image size kept: deepinv's ``Rotate``, as Chen et al. use
    for MRI, where shifts only change the phase of k-space and teach nothing) or ``"scale"`` (random
    down-scalings by 1/2 or 3/4 about a random centre: deepinv's ``Scale``, the scale-equivariant imaging of
    Scanvic et al. for super-resolution, where the transformed images carry finer detail than the
    measurements); names joined by ``*`` compose, e.g. ``"shift*scale"``. ``rng`` draws them."""
    if "*" in name:
        first, *rest = [equivariance_transform(part.strip(), rng) for part in name.split("*")]
        for transform in rest:
            first = first * transform
        return first
    if name == "shift":
        return dinv.transform.Shift(rng=rng)
    if name == "rotate":
        return dinv.transform.Rotate(rng=rng, interpolation_mode="bilinear")
    if name == "scale":
        return _Scale(rng=rng)
    raise ValueError(f"unknown equivariance transform {name!r}; use 'shift', 'rotate', 'scale' or a composition "
                     "such as 'shift*scale'.")


def equivariance_term(transform: str = "shift", rng: torch.Generator | None = None) -> dinv.loss.EILoss:
    """The equivariant-imaging term of :func:`equivariant_loss` as a deepinv loss: ``EILoss`` with
    :func:`equivariance_transform` ``(transform, rng)``, the transformed image re-measured without noise."""
    return dinv.loss.EILoss(transform=equivariance_transform(transform, rng), apply_noise=False)


def equivariant_loss(x_hat: torch.Tensor, y: torch.Tensor, physics, model, rng: torch.Generator | None = None,
                     transform: str = "shift") -> torch.Tensor:
    r"""Measurement consistency plus equivariant imaging (Chen, Tachella & Davies, 2021), no ground truth:

    .. math:: \operatorname{mean}\|A\hat x - y\|^2 + \operatorname{mean}\|T\hat x - f(A T\hat x)\|^2,

    with :math:`\hat x = f(y)` and :math:`T` a random integer circular shift (deepinv's ``EILoss`` with
    ``Shift``) or rotation (``transform="rotate"``, :func:`equivariance_transform`). The first term leaves
    the null space of :math:`A` free (decimation: the pixels that are not sampled); the second asks the
    network to reconstruct transformed images too, which moves other pixels into the sampled positions.

    :param model: the reconstructor ``model(y, physics)`` that gave ``x_hat``.
    :param torch.Generator rng: draws the transforms (on ``x_hat``'s device; default: deepinv's).
    :param str transform: ``"shift"`` or ``"rotate"``.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.losses import equivariant_loss
    >>> from deepinv_meta.physics import decimation
    >>> physics, x = decimation((1, 8, 8)), torch.rand(1, 1, 8, 8)
    >>> y = physics(x)
    >>> zero_filled = lambda y, physics: physics.A_adjoint(y)  # consistent with y, not with odd shifts
    >>> rng = torch.Generator().manual_seed(0)
    >>> max(equivariant_loss(zero_filled(y, physics), y, physics, zero_filled, rng).item() for _ in range(8)) > 0
    True
    """
    return measurement_consistency_loss(x_hat, y, physics) + equivariance_term(transform, rng)(x_hat, physics, model)


class DownscaledPairsLoss(dinv.loss.Loss):
    r"""Zero-shot pairs of super-resolution (the internal learning of Shocher, Cohen & Irani, 2018), no ground
    truth: each measurement, measured once more by the same operator built for images of its own size, is the
    target of the reconstruction of that smaller measurement,

    .. math:: \operatorname{mean}\|f(A_\downarrow y) - y\|^2,

    with :math:`A_\downarrow` = ``operator_at(y's spatial size, device)``. It teaches the network what the
    operator removes one scale down, where the answer is known (the measurement itself); equivariant imaging
    alone leaves that to the image model. Meant for super-resolution, where the operator exists at every size.

    :param Callable operator_at: ``operator_at(size, device)`` returns the operator for images of spatial size
        ``size`` (e.g. ``lambda size, device: OperatorSpec.named("sr", factor=2).build(size, device)``); built
        once per size and device.
    :param float weight: weight of the term.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.losses import DownscaledPairsLoss
    >>> from deepinv_meta.physics import decimation
    >>> pairs = DownscaledPairsLoss(lambda size, device: decimation((1, *size), device=device))
    >>> y = torch.rand(2, 1, 8, 8)
    >>> nearest = lambda y, physics: y.repeat_interleave(2, -1).repeat_interleave(2, -2)
    >>> pairs(y=y, model=nearest).shape  # one value per measurement
    torch.Size([2])
    """

    def __init__(self, operator_at, weight: float = 1.0):
        super().__init__()
        self.operator_at = functools.lru_cache(maxsize=None)(operator_at)  # one operator per size and device
        self.weight = weight

    def forward(self, y: torch.Tensor, model, **kwargs) -> torch.Tensor:
        smaller = self.operator_at(tuple(y.shape[-2:]), y.device)
        return self.weight * ((model(smaller.A(y), smaller) - y) ** 2).flatten(1).mean(1)


def equivariant_objective(transform: str = "shift", rng: torch.Generator | None = None, pairs=None):
    """The inner loss to give :func:`~deepinv_meta.bilevel.finetune` for equivariant fine-tuning with ``transform``:
    the name ``"equivariant"`` for shifts, else measurement consistency plus :func:`equivariance_term` as deepinv
    losses (the same two terms as :func:`equivariant_loss`, with ``rng`` drawing the transforms). ``pairs``, an
    ``operator_at(size, device)`` callable, adds :class:`DownscaledPairsLoss` (super-resolution).

    :Examples:

    >>> from deepinv_meta.losses import equivariant_objective
    >>> equivariant_objective("shift")
    'equivariant'
    >>> [type(term).__name__ for term in equivariant_objective("rotate")]
    ['MCLoss', 'EILoss']
    >>> [type(term).__name__ for term in equivariant_objective("shift", pairs=lambda size, device: None)]
    ['MCLoss', 'EILoss', 'DownscaledPairsLoss']
    """
    if transform == "shift" and pairs is None:
        return "equivariant"
    terms = [dinv.loss.MCLoss(), equivariance_term(transform, rng)]
    return terms + ([DownscaledPairsLoss(pairs)] if pairs is not None else [])


def data_loss(
    name, x_hat: torch.Tensor, y: torch.Tensor, physics, x: torch.Tensor | None = None, model=None,
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """Inner data term: ``"supervised"`` (needs ``x``), ``"unsupervised"`` or ``"equivariant"`` (needs the
    ``model``, :func:`equivariant_loss`; ``rng`` draws its shifts).

    ``name`` may also be a ``deepinv.loss.Loss`` or a list of them, whose batch means are summed: any of deepinv's
    self-supervised losses (``MCLoss``, ``EILoss`` with the transform of your choice, ``SureGaussianLoss``, ...) then
    drives meta-training or fine-tuning. They are called as ``loss(x_net=x_hat, x=x, y=y, physics=physics,
    model=model)``, ``model`` being the fast-weight reconstructor.
    """
    if not isinstance(name, str):
        terms = deepinv_losses(name)
        if x is None and any(isinstance(term, dinv.loss.SupLoss) for term in terms):
            raise ValueError("dinv.loss.SupLoss needs ground truth x; pass x=... or use a self-supervised loss.")
        return sum(term(x_net=x_hat, x=x, y=y, physics=physics, model=model).mean() for term in terms)
    check_loss_name(name)
    if name == "supervised":
        if x is None:
            raise ValueError(
                "The 'supervised' loss needs ground truth x; pass x=... or use loss='unsupervised'."
            )
        return supervised_loss(x_hat, x)
    if name == "equivariant":
        if model is None:
            raise ValueError("The 'equivariant' loss needs the reconstructor: data_loss(..., model=f).")
        return equivariant_loss(x_hat, y, physics, model, rng)
    return measurement_consistency_loss(x_hat, y, physics)


def proximal_penalty(fast_params, meta_params, lam: float) -> torch.Tensor:
    r""":math:`\frac{\lambda}{2}\sum_j\|\phi_j - \theta_j\|^2` over matching parameter lists."""
    total = 0.0
    for phi, theta in zip(fast_params, meta_params):
        total = total + torch.sum((phi - theta) ** 2)
    return 0.5 * lam * total


class VariationalLoss:
    r"""End-to-end loss of a learned variational solver (Fablet et al., eq. 5):

    .. math::

        \mathcal{L}(x, \tilde x) = \nu_1 \operatorname{mean}\|x - \tilde x\|^2 + \nu_2 \operatorname{mean}\|x - \Phi(x)\|^2
        + \nu_3 \operatorname{mean}\|\tilde x - \Phi(\tilde x)\|^2,

    a callable ``loss(x_hat, x)`` usable as ``MetaTrainer(outer_loss=...)``.

    :param torch.nn.Module prior: the operator :math:`\Phi` of the variational cost.
    :param tuple nu: :math:`(\nu_1, \nu_2, \nu_3)` (paper: 1, 0.05, 0.05).

    :Examples:

    >>> import torch
    >>> from deepinv_meta.losses import VariationalLoss
    >>> loss = VariationalLoss(torch.nn.Identity())
    >>> loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    tensor(1.)
    """

    __name__ = "variational"  # the name MetaTrainer records in its configuration

    def __init__(self, prior, nu=(1.0, 0.05, 0.05)):
        if len(nu) != 3 or any(n < 0 for n in nu):
            raise ValueError(f"nu must be three weights >= 0, got {nu!r}.")
        self.prior, self.nu = prior, tuple(float(n) for n in nu)

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loss = self.nu[0] * supervised_loss(x_hat, x)
        if self.nu[1]:
            loss = loss + self.nu[1] * torch.mean((x - self.prior(x)) ** 2)
        if self.nu[2]:
            loss = loss + self.nu[2] * torch.mean((x_hat - self.prior(x_hat)) ** 2)
        return loss

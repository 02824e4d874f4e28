r"""Few-step adaptation of a meta-model to one task (the inner problem of eq. 2, solved at test time)."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..losses import check_loss_name, data_loss, loss_label
from ..progress import Progress
from .backends import convolution_backend
from .inner import DataTermInParts, InnerLoop, legacy_inner_loop


# the keywords finetune took before `inner=` -> (InnerLoop argument, default)
LEGACY_SETTINGS = {"lr": ("lr", 1e-3), "optimizer": ("optimizer", "adam"), "lam": ("lam", 0.0)}


def finetune(
    model: nn.Module,
    physics,
    y: torch.Tensor,
    *,
    x: torch.Tensor | None = None,
    inner: InnerLoop | None = None,
    steps: int | None = None,
    loss: str = "unsupervised",
    batch_size: int | None = None,
    chunk_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    return_losses: bool = False,
    on_step=None,
    **legacy,
):
    r"""Fine-tune a copy of ``model`` on measurements ``y`` of ``physics``; ``model`` is not modified.

    Solves, with ``steps`` optimizer steps started at the meta-weights :math:`\theta^*`,

    .. math:: \min_\phi\ \ell(f_\phi) + \frac{\lambda}{2}\|\phi - \theta^*\|^2,

    where :math:`\ell` is ``mean ||A f(y) - y||^2`` (``loss="unsupervised"``, no ground truth),
    that plus shift-equivariant imaging (``loss="equivariant"``, :func:`~deepinv_meta.losses.equivariant_loss`,
    no ground truth either) or ``mean ||f(y) - x||^2`` (``loss="supervised"``). It runs the same inner-loop engine as
    meta-training (:class:`~deepinv_meta.bilevel.InnerLoop`), without meta-gradients, and works
    under ``torch.no_grad()`` too.

    :param torch.nn.Module model: a meta-trained reconstructor, ``model(y, physics)``.
    :param deepinv.physics.Physics physics: the forward operator of the new task (shared by all ``y``).
    :param torch.Tensor y: fine-tuning measurements, shape ``(N, ...)``.
    :param torch.Tensor x: ground truth, needed for ``loss="supervised"``.
    :param InnerLoop inner: the optimiser of the fine-tuning steps (learning rate, ``"adam"`` or ``"sgd"``,
        heavy-ball momentum, proximal weight :math:`\lambda`), default ``InnerLoop(steps=50, lr=1e-3)`` (Adam);
        e.g. ``trainer.inner`` of a :class:`~deepinv_meta.MetaTrainer` with learned step sizes, which
        fine-tuning then follows (more ``steps`` than it learned need ``repeat_last=True``). The keywords of
        earlier versions (``lr``, ``optimizer``, ``momentum``, ``lam``, ``inner_loop``) still work, with a
        ``DeprecationWarning``.
    :param int steps: number of fine-tuning steps (>= 0); default ``inner.steps`` (50 without ``inner``).
    :param str loss: ``"unsupervised"``, ``"equivariant"`` or ``"supervised"``; or a ``deepinv.loss.Loss`` or a list
        of them, e.g. ``[dinv.loss.MCLoss(), dinv.loss.EILoss(dinv.transform.Rotate())]`` (equivariant imaging with
        rotations, :func:`~deepinv_meta.losses.data_loss`).
    :param int batch_size: if set, each step uses a random mini-batch of that size.
    :param int chunk_size: if set, each step evaluates and differentiates its batch that many measurements at a
        time and sums the gradients (:class:`~deepinv_meta.bilevel.inner.DataTermInParts`): the same step (the
        equivariant loss draws its transforms per chunk) with the memory of one chunk.
    :param int seed: seed of the mini-batch sampling.
    :param bool progress: show progress (a bar on a terminal, a line a minute otherwise).
    :param bool return_losses: also return the list of inner losses.
    :param Callable on_step: called as ``on_step(k, current)`` after step ``k`` (1-based), where
        ``current(y, physics)`` reconstructs with the weights reached so far (fine-tuning curves in
        one run).
    :return: the adapted copy (a reconstructor like ``model``), and the losses if asked.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta import MetaPDNet, finetune
    >>> model = MetaPDNet(depth=2, channels=4)
    >>> physics = dinv.physics.Inpainting(img_size=(1, 16, 16), mask=0.5)
    >>> y = physics(torch.rand(2, 1, 16, 16))
    >>> adapted = finetune(model, physics, y, steps=3, loss="unsupervised")
    >>> adapted(y, physics).shape
    torch.Size([2, 1, 16, 16])
    """
    check_loss_name(loss)
    if isinstance(y, torch.Tensor) and y.dim() > 0 and y.shape[0] == 0:
        raise ValueError("finetune: y holds no measurement (batch of size 0); give at least one.")
    if loss == "supervised" and x is None:
        raise ValueError("loss='supervised' needs the ground truth x=...; or use loss='unsupervised'.")
    if x is not None and x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}; they must match.")
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value is not None and not 0 < value:
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
    if "inner_loop" in legacy:  # the earlier name of `inner`
        if inner is not None:
            raise ValueError("finetune got inner= and inner_loop=: pass inner= only.")
        inner = legacy.pop("inner_loop")
        warnings.warn("finetune(inner_loop=...) is deprecated: use inner=.", DeprecationWarning, stacklevel=2)
    inner = legacy_inner_loop("finetune", inner, legacy, LEGACY_SETTINGS, "momentum", steps=50)
    steps = inner.steps if steps is None else steps
    adapted = copy.deepcopy(model)
    rng = torch.Generator().manual_seed(seed)
    shifts = torch.Generator(y.device).manual_seed(seed + 1)  # the equivariant loss's random shifts

    current = {}

    def batch_loss(fmodel, k):
        current["model"] = fmodel
        if batch_size is None or batch_size >= y.shape[0]:
            yb, xb = y, x
        else:
            idx = torch.randperm(y.shape[0], generator=rng)[:batch_size].to(y.device)
            yb, xb = y[idx], None if x is None else x[idx]
        if chunk_size is None or chunk_size >= len(yb):
            return data_loss(loss, fmodel(yb, physics), yb, physics, xb, model=fmodel, rng=shifts)

        def part(start):  # the chunk's share of the batch mean
            yc, xc = yb[start:start + chunk_size], None if xb is None else xb[start:start + chunk_size]
            return lambda: data_loss(loss, fmodel(yc, physics), yc, physics, xc, model=fmodel, rng=shifts) * (
                len(yc) / len(yb))

        return DataTermInParts([part(start) for start in range(0, len(yb), chunk_size)])

    bar = Progress(f"fine-tuning ({loss_label(loss)})", steps, enabled=progress)

    def after_step(k, value):
        bar.step(k + 1, value)
        if on_step is not None:
            on_step(k + 1, current["model"])

    with convolution_backend(model):
        result = inner.run(adapted, batch_loss, steps=steps, track_meta_grad=False, callback=after_step)
    bar.close()
    if result.params is not None:  # None: zero steps, nothing to copy
        with torch.no_grad():
            for p, phi in zip(adapted.parameters(), result.params):
                p.copy_(phi)
    return (adapted, result.losses) if return_losses else adapted

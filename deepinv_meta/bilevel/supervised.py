r"""Plain supervised training over tasks: for models whose forward pass is the whole solver."""

from __future__ import annotations

from torch import nn

from .inner import InnerLoop
from .trainer import LEGACY_INNER_SETTINGS, MetaTrainer


class SupervisedTrainer(MetaTrainer):
    r"""Supervised training of a reconstructor over imaging tasks, with no inner loop:

    .. math:: \min_\theta\ \sum_i \mathbb{E}_{x, A_i}\ \ell\big(f_\theta(A_i x + n, A_i),\ x\big).

    This is what meta-trains the test-time optimisers, whose forward pass runs their own inner loop from the
    learned weights (:class:`~deepinv_meta.models.MetaDIP`, :class:`~deepinv_meta.models.MetaSIREN`,
    :class:`~deepinv_meta.models.MetaRED`), and the learned variational solvers trained end to end
    (:func:`~deepinv_meta.bilevel.train_end_to_end`). It is :class:`~deepinv_meta.MetaTrainer` with
    ``inner=InnerLoop(steps=0)``, with everything that comes with it: episodes drawn per task and step,
    atomic and locked checkpoints (interchangeable with that trainer's), NaN guards, ``torchrun``,
    :meth:`validate`, keep-best and :meth:`rollback`.

    :param torch.nn.Module model: a reconstructor ``model(y, physics)``.
    :param list tasks: :class:`~deepinv_meta.tasks.Task` objects; the loss compares the reconstruction of each
        episode's test batch with its target.
    :param OuterOptimizer outer: the optimiser (Adam: learning rate, per-group scales, cosine decay, gradient
        clipping); default ``OuterOptimizer(lr=1e-3)``.
    :param outer_loss: ``"l2"`` (default), ``"l1"`` or a callable ``loss(x_hat, x)``.

    The other parameters (``batch_size``, ``device``, ``seed``, ``checkpoint``, ...) are
    :class:`~deepinv_meta.MetaTrainer`'s; its inner-loop ones are refused.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta import SupervisedTrainer, Task
    >>> from deepinv_meta.models import MetaDIP
    >>> task = Task("denoising", dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)), torch.rand(4, 1, 16, 16),
    ...             torch.rand(4, 1, 16, 16))
    >>> trainer = SupervisedTrainer(MetaDIP((1, 16, 16), steps=2, train_steps=2, channels=(8, 16)), [task],
    ...                             batch_size=2, progress=False)
    >>> len(trainer.train(steps=1))
    1
    """

    def __init__(self, model: nn.Module, tasks, **settings):
        inner = sorted(k for k in settings if k.startswith("inner") or k in LEGACY_INNER_SETTINGS)
        if inner:
            raise TypeError(f"SupervisedTrainer has no inner loop, so no {', '.join(inner)}; use MetaTrainer for that.")
        super().__init__(model, tasks, inner=InnerLoop(steps=0), **settings)

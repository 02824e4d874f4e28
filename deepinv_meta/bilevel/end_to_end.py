r"""End-to-end training of a learned variational solver (Fablet, Drumetz & Rousseau, eq. 5).

.. math::

    \min_{\Phi, \Gamma} \sum_n \mathcal{L}(x_n, \tilde x_n), \qquad
    \tilde x_n = \Psi_{\Phi, \Gamma}(x_n^{(0)}, y_n, \Omega_n),

with :math:`\mathcal{L}` the :class:`~deepinv_meta.losses.VariationalLoss`, by a
:class:`~deepinv_meta.bilevel.SupervisedTrainer` (no inner weight adaptation: the solver's iterations act on
the image inside the model's forward), so it inherits the trainer's NaN guards, atomic checkpoints, resume
and progress bar.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ..losses import VariationalLoss
from .inner import check_finite
from .supervised import SupervisedTrainer
from .trainer import OuterOptimizer, default_device


def iteration_schedule(start: int, stop: int, every: int = 5) -> list[int]:
    """Solver iteration counts used in turn while training: ``start, start+every, ..., stop``."""
    if not 1 <= start <= stop:
        raise ValueError(f"need 1 <= start <= stop, got iterations=({start}, {stop}).")
    counts = list(range(start, stop, every)) + [stop]
    return counts


def train_end_to_end(
    model,
    tasks,
    steps: int,
    *,
    iterations: tuple[int, int] | None = (5, 20),
    joint: bool = True,
    prior_lr_scale: float = 0.5,
    nu=(1.0, 0.05, 0.05),
    lr: float = 1e-3,
    batch_size: int = 32,
    max_time: float | None = None,
    device=None,
    seed: int = 0,
    checkpoint=None,
    progress: bool = True,
    validations: int = 0,
    grad_clip: float | None = None,
) -> SupervisedTrainer:
    r"""Train a :class:`~deepinv_meta.models.variational.VariationalReconstructor` end to end.

    :param model: the reconstructor (cost :math:`U_\Phi` and solver :math:`\Gamma`).
    :param list tasks: :class:`~deepinv_meta.tasks.Task` objects (data and masks).
    :param int steps: total Adam steps, split evenly over the iteration schedule.
    :param tuple iterations: ``(first, last)`` solver iterations, grown by 5 during training (paper:
        5 to 20); ``None`` keeps the solver's own count (e.g. :class:`FixedPoint`).
    :param bool joint: train :math:`\Phi` (and learnable :math:`\lambda`) with the solver; ``False``
        freezes the cost (a pre-trained or fitted prior, "sequential" learning).
    :param float prior_lr_scale: learning-rate factor of :math:`\Phi` in joint training (paper: 0.5).
    :param tuple nu: weights of the :class:`~deepinv_meta.losses.VariationalLoss`.
    :param float lr: Adam learning rate.
    :param float max_time: time budget in seconds, split evenly over the schedule (then ``steps``
        is only an upper bound).
    :param int validations: if > 0, the last phase (the final iteration count) is cut into this many
        chunks; after each, the loss on fixed episodes of the tasks (:meth:`~deepinv_meta.MetaTrainer.validate`)
        is measured and the weights with the lowest one are kept at the end (``trainer.validation``,
        ``trainer.selected_step``): a late blow-up of the loss (:doc:`/notes`) must not replace a good model.
    :param float grad_clip: clip the gradient norm (see :class:`~deepinv_meta.MetaTrainer`).
    :return: the :class:`~deepinv_meta.bilevel.SupervisedTrainer` (``.history``, ``.step``).

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta import Task
    >>> from deepinv_meta.bilevel import train_end_to_end
    >>> from deepinv_meta.models.variational import LSTMSolver, TwoScaleCNN, VariationalCost, VariationalReconstructor
    >>> model = VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=4)), LSTMSolver(1))
    >>> task = Task("inpainting", dinv.physics.Inpainting((1, 8, 8), mask=0.7), torch.rand(16, 1, 8, 8), torch.rand(16, 1, 8, 8))
    >>> trainer = train_end_to_end(model, [task], steps=4, iterations=(1, 2), batch_size=2, progress=False)
    >>> trainer.step, model.solver.iterations
    (4, 2)
    """
    if not joint:
        model.cost.requires_grad_(False)
    trainable_prior = any(p.requires_grad for p in model.cost.prior.parameters())
    outer = OuterOptimizer(lr=lr, grad_clip=grad_clip,
                           lr_scales={"cost.prior.": prior_lr_scale} if trainable_prior and prior_lr_scale != 1 else None)
    trainer = SupervisedTrainer(model, tasks, outer=outer, outer_loss=VariationalLoss(model.cost.prior, nu),
                                batch_size=batch_size, device=device, seed=seed, checkpoint=checkpoint, progress=progress)
    schedule = iteration_schedule(*iterations) if iterations is not None else [None]
    for phase, count in enumerate(schedule):
        if count is not None:
            model.solver.iterations = count
        validate = validations > 0 and phase == len(schedule) - 1
        chunks = validations if validate else 1
        if max_time is None:
            begin, end = steps * phase // len(schedule), steps * (phase + 1) // len(schedule)
        else:  # a timed phase may stop early: count from where it starts
            begin, end = trainer.step, trainer.step + steps // len(schedule)
        for chunk in range(1, chunks + 1):
            trainer.train(steps=begin + (end - begin) * chunk // chunks,
                          max_time=None if max_time is None else max_time / len(schedule) / chunks)
            if validate:
                trainer.validate()
    if validations:
        trainer.restore_best()
    return trainer


def fit_prior(prior, images: torch.Tensor, steps: int, *, lr: float = 1e-3, batch_size: int = 64,
              max_time: float | None = None, device=None, seed: int = 0, progress: bool = True) -> list[float]:
    r"""Pre-train a prior alone on clean data, :math:`\min_\Phi \operatorname{mean}\|x - \Phi(x)\|^2` (sequential learning).

    :return: the loss of every step. A non-finite loss stops training with
        :class:`~deepinv_meta.NonFiniteLossError` before the weights are updated.
    """
    device = torch.device(device) if device is not None else default_device()
    prior.to(device).train()
    optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    losses, start = [], time.perf_counter()
    for _ in tqdm(range(steps), desc="pre-training the prior", disable=not progress):
        x = images[torch.randint(len(images), (batch_size,), generator=rng)].to(device)
        loss = torch.mean((x - prior(x)) ** 2)
        check_finite(loss, "prior pre-training loss")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if max_time is not None and time.perf_counter() - start > max_time:
            break
    prior.eval()
    return losses

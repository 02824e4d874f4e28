r"""MetaTrainer: the outer loop of the bilevel problem (Terris & Moreau, eq. 2).

.. math::

    \theta^* = \arg\min_\theta \sum_i \mathcal{L}_{\mathrm{sup}}(f_{\phi_i}, \mathcal{D}_i^{test})
    \quad\text{s.t.}\quad \phi_i = \text{InnerLoop}\big(\mathcal{L}_{\mathrm{inner}}(f_\phi, \mathcal{D}_i^{train})
    + \tfrac{\lambda}{2}\|\phi - \theta\|^2\big).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io import FileLock, atomic_save, remove_stale_temporaries, safe_load, weights_checksum
from ..progress import Progress
from ..losses import check_loss_name, data_loss, loss_label, outer_loss_function, supervised_loss
from .backends import convolution_backend
from .inner import InnerLoop, NonFiniteLossError, check_finite, legacy_inner_loop, settings_object
from .selection import KeepBest

logger = logging.getLogger("deepinv_meta")

CHECKPOINT_FORMAT = "deepinv_meta.MetaTrainer/1"


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# the keywords MetaTrainer took before `inner=` -> (InnerLoop argument, default)
LEGACY_INNER_SETTINGS = {"inner_steps": ("steps", 1), "inner_lr": ("lr", 1e-3), "inner_optimizer": ("optimizer", "adam"),
                         "lam": ("lam", 0.0), "first_order": ("first_order", False), "implicit": ("implicit", False),
                         "cg_steps": ("cg_steps", 10), "learn_inner_lr": ("learn_lr", False)}


@dataclass
class OuterOptimizer:
    r"""The optimiser of the meta-weights :math:`\theta` (and of the inner loop's learned settings): Adam.

    :param float lr: learning rate.
    :param dict lr_scales: multiply the learning rate of some weights, ``{name prefix: factor}`` with prefixes of
        ``model.named_parameters()`` or ``"inner."`` for the learned inner settings, e.g. ``{"cost.prior.": 0.5}``
        (Fablet et al.: halved learning rate for :math:`\Phi`). The first matching prefix applies.
    :param int decay_steps: if set, a cosine decay of the learning rate from ``lr`` to 0 over this many outer
        steps (a function of the step only, so resuming is exact).
    :param float grad_clip: clip the meta-gradient norm to this value (``None``: no clipping; ``inf``: record
        the norm only).
    """

    lr: float = 1e-3
    lr_scales: dict | None = None
    decay_steps: int | None = None
    grad_clip: float | None = None

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"outer_lr must be > 0, got {self.lr!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:  # a negative bound would flip the meta-gradient
            raise ValueError(f"grad_clip must be > 0 or None (no clipping), got {self.grad_clip!r}.")
        if self.decay_steps is not None and (not isinstance(self.decay_steps, int) or self.decay_steps < 0):
            raise ValueError(f"decay_steps must be an integer >= 0 or None (no decay), got {self.decay_steps!r}.")


# the keywords MetaTrainer took before `outer=` -> OuterOptimizer argument
LEGACY_OUTER_SETTINGS = {"outer_lr": "lr", "lr_scales": "lr_scales", "outer_lr_decay_steps": "decay_steps",
                         "grad_clip": "grad_clip"}


def legacy_outer_optimizer(outer: OuterOptimizer | None, legacy: dict) -> OuterOptimizer:
    """``outer``, or the :class:`OuterOptimizer` the keywords of earlier versions describe."""
    if settings_object("MetaTrainer", outer, legacy, "outer=OuterOptimizer(...)") is not None:
        return outer
    return OuterOptimizer(**{LEGACY_OUTER_SETTINGS[k]: v for k, v in legacy.items()})


class MetaTrainer:
    r"""Meta-train a model over imaging tasks with MAML through :mod:`higher`.

    Every outer step draws one episode per task (new operator, train batch, test batch), adapts
    the model to each with :class:`~deepinv_meta.bilevel.InnerLoop` on the inner loss, evaluates
    the supervised outer loss of the adapted model on the test batch, and takes one optimizer step
    on the meta-weights :math:`\theta` (and the learned inner learning rates, if any).

    A non-finite inner loss, outer loss, meta-gradient or updated weight skips the step (logged,
    counted in ``history``); the meta-weights are never updated with NaN/Inf. After
    ``max_skipped`` consecutive skips training stops with an error.

    :param torch.nn.Module model: a reconstructor ``model(y, physics)``.
    :param list tasks: :class:`~deepinv_meta.tasks.Task` objects.
    :param str inner_loss: ``"supervised"``, ``"unsupervised"`` (:math:`\|Af(y)-y\|^2`) or ``"equivariant"``
        (that plus shift-equivariant imaging, :func:`~deepinv_meta.losses.equivariant_loss`); or deepinv losses
        (a ``deepinv.loss.Loss`` or a list of them, :func:`~deepinv_meta.losses.data_loss`).
    :param InnerLoop inner: the inner loop (steps, learning rate, optimizer, proximal weight
        :math:`\lambda`, first-order / implicit meta-gradients, learned step sizes); default
        ``InnerLoop(steps=1, lr=1e-3, optimizer="adam")``. Its learned settings are meta-learned with the
        weights. The keywords of earlier versions (``inner_steps``, ``inner_lr``, ``inner_optimizer``,
        ``inner_momentum``, ``lam``, ``first_order``, ``implicit``, ``cg_steps``, ``learn_inner_lr``) still
        build it, with a ``DeprecationWarning``.
    :param str outer_loss: ``"l2"`` (mean squared error, default), ``"l1"``, or a callable
        ``loss(x_hat, x)``.
    :param OuterOptimizer outer: the optimiser of the meta-weights (Adam: learning rate, per-group scales, cosine
        decay, gradient clipping); default ``OuterOptimizer(lr=1e-3)``. The keywords of earlier versions
        (``outer_lr``, ``lr_scales``, ``outer_lr_decay_steps``, ``grad_clip``) still build it, with a
        ``DeprecationWarning``.
    :param int batch_size: images per train/test batch of each episode.
    :param str device: ``"cuda"``/``"cpu"``; default CUDA when available.
    :param int seed: seeds every episode (step ``k`` always sees the same episodes, so resuming
        from a checkpoint reproduces an uninterrupted run).
    :param str checkpoint: path of the checkpoint file; written every ``checkpoint_every`` steps
        and at the end of :meth:`train`. If the file exists and ``resume`` is true, training resumes
        from it.
    :param bool progress: show progress (a bar on a terminal, a line a minute in a log; :class:`~deepinv_meta.progress.Progress`).

    **Several processes** (e.g. one per GPU, launched by ``torchrun``): when ``torch.distributed`` is
    initialised before the trainer is built, every outer step splits the tasks over the processes
    (task ``i`` on rank ``i mod world size``), sums their meta-gradients with ``all_reduce`` and takes
    the same update everywhere, so the run equals a single-process one up to float rounding (the reduction sums
    in another order; tested with two processes: weights within 1e-5 relative after 3 steps).
    Rank 0 broadcasts its initial weights, writes the checkpoints and shows the progress bar; a
    non-finite loss on any rank skips the step on all. Give each process its own ``device``.

    :Examples:

    >>> import torch
    >>> from deepinv_meta import MetaPDNet, MetaTrainer
    >>> from deepinv_meta.tasks import meta_prior_tasks
    >>> tasks = meta_prior_tasks(torch.rand(8, 1, 16, 16))
    >>> trainer = MetaTrainer(MetaPDNet(depth=2, channels=4), tasks, batch_size=2, progress=False)
    >>> history = trainer.train(steps=2)
    >>> len(history), sorted(history[-1]["tasks"])
    (2, ['deblurring', 'denoising', 'inpainting', 'tv_estimation'])
    """

    def __init__(
        self,
        model: nn.Module,
        tasks,
        *,
        inner: InnerLoop | None = None,
        outer: "OuterOptimizer | None" = None,
        inner_loss: str = "supervised",
        outer_loss="l2",
        batch_size: int = 8,
        device=None,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 50,
        resume: bool = True,
        max_skipped: int = 20,
        progress: bool = True,
        **legacy,
    ):
        self.inner_loss = check_loss_name(inner_loss)
        tasks = list(tasks)
        if not tasks:
            raise ValueError("MetaTrainer needs at least one task.")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        outer = legacy_outer_optimizer(outer, {k: legacy.pop(k) for k in list(legacy) if k in LEGACY_OUTER_SETTINGS})
        for name, value in (("checkpoint_every", checkpoint_every), ("max_skipped", max_skipped)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device)
        self.tasks = [task.to(self.device) for task in tasks]
        self.inner = legacy_inner_loop("MetaTrainer", inner, legacy, LEGACY_INNER_SETTINGS, "inner_momentum",
                                       steps=1).to(self.device)
        self.outer_loss = outer_loss
        self._outer_loss_fn = outer_loss_function(outer_loss)
        # only trainable weights (e.g. a frozen denoiser inside a model is not meta-learned)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        named += [(f"inner.{n}", p) for n, p in self.inner.named_parameters() if p.requires_grad]
        self.meta_params = [p for _, p in named]
        self.outer = outer
        self.lr_scales = dict(outer.lr_scales or {})
        self.outer_lr = outer.lr
        self.optimizer = torch.optim.Adam(self._param_groups(named), lr=outer.lr)
        self.outer_lr_decay_steps = outer.decay_steps
        self.batch_size = batch_size
        self.seed = seed
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.grad_clip = outer.grad_clip
        self.max_skipped = max_skipped
        self.progress = progress
        self.step = 0
        self.history: list[dict] = []
        self.selection = KeepBest()  # validate(): the losses and the states at the lowest one
        self.lr_factor = 1.0  # outer learning rate multiplier, lowered by rollback()
        self.rollbacks: list[dict] = []  # {"step", "to_step", "lr_factor"} per call of rollback()
        self._restored_step = None  # the step restore_best() went back to, until the next outer step
        self._consecutive_skips = 0
        if self.checkpoint is not None and resume and self.checkpoint.is_file():
            self.load(self.checkpoint)
            logger.info("resumed from %s at step %d", self.checkpoint, self.step)
        self.rank, self.world_size = process_group()
        if self.world_size > len(self.tasks):
            logger.warning("%d processes for %d tasks: ranks %d and above compute nothing in an outer step.",
                           self.world_size, len(self.tasks), len(self.tasks))
        if self.world_size > 1:  # every process starts from rank 0's weights
            for tensor in list(self.model.state_dict().values()) + list(self.inner.state_dict().values()):
                torch.distributed.broadcast(tensor, src=0)

    # ------------------------------------------------------------------ configuration
    @property
    def config(self) -> dict:
        """The settings that define the run (stored in checkpoints and checked on resume)."""
        inner = self.inner
        return {
            "inner_loss": loss_label(self.inner_loss),
            "inner_steps": inner.steps,
            "inner_lr": inner.lr,
            "inner_optimizer": inner.optimizer,
            "inner_momentum": inner.optimizer_kwargs.get("momentum", 0.0),
            "lam": inner.lam,
            "first_order": inner.first_order,
            "implicit": inner.implicit,
            "cg_steps": inner.cg_steps,
            "learn_inner_lr": inner.learn_lr,
            "outer_loss": self.outer_loss if isinstance(self.outer_loss, str) else getattr(self.outer_loss, "__name__", "custom"),
            "outer_lr": self.outer_lr,
            "lr_scales": self.lr_scales,
            "outer_lr_decay_steps": self.outer_lr_decay_steps,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "tasks": [t.name for t in self.tasks],
            "model": type(self.model).__name__,
        }

    def _param_groups(self, named) -> list[dict]:
        """One Adam parameter group per learning-rate scale (``lr_scale`` 1 for unmatched weights)."""
        unused = set(self.lr_scales)
        groups: dict[float, list] = {}
        for name, p in named:
            prefix = next((k for k in self.lr_scales if name.startswith(k)), None)
            unused.discard(prefix)
            scale = float(self.lr_scales[prefix]) if prefix is not None else 1.0
            if not scale > 0:
                raise ValueError(f"lr_scales[{prefix!r}] must be > 0, got {scale!r}.")
            groups.setdefault(scale, []).append(p)
        if unused:
            raise ValueError(f"lr_scales prefixes {sorted(unused)} match no trainable weight; names look like "
                             f"{[n for n, _ in named[:3]]}.")
        return [{"params": params, "lr": self.outer_lr * scale, "lr_scale": scale} for scale, params in groups.items()]

    def current_outer_lr(self) -> float:
        """Outer learning rate of the coming step (cosine decay when ``outer_lr_decay_steps`` is set)."""
        if not self.outer_lr_decay_steps:
            return self.outer_lr * self.lr_factor
        progress = min(self.step / self.outer_lr_decay_steps, 1.0)
        return 0.5 * self.outer_lr * self.lr_factor * (1 + math.cos(math.pi * progress))

    def episode_seed(self, step: int, task_index: int) -> int:
        """Seed of the episode of task ``task_index`` at outer step ``step``."""
        return (self.seed * 1_000_003 + step) * 101 + task_index

    # ------------------------------------------------------------------ one outer step
    def adapt(self, episode, track_meta_grad: bool = True):
        """Run the inner loop on an episode's training batch; returns the :class:`InnerResult`."""

        shifts = torch.Generator(self.device).manual_seed(self.seed + self.step)  # equivariant loss; resumable

        def loss(fmodel, k):
            x_hat = fmodel(episode.y_train, episode.physics)
            return data_loss(self.inner_loss, x_hat, episode.y_train, episode.physics, episode.target_train,
                             model=fmodel, rng=shifts)

        return self.inner.run(self.model, loss, track_meta_grad=track_meta_grad)

    def outer_step(self) -> dict:
        """One meta-update over all tasks. Returns the history record of the step."""
        start = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        record = {"step": self.step + 1, "tasks": {}, "inner_first": {}, "inner_last": {}}
        error = None
        try:
            with convolution_backend(self.model):  # the backward passes too
                for i, task in enumerate(self.tasks):
                    if i % self.world_size != self.rank:  # another process's task
                        continue
                    episode = task.episode(self.batch_size, seed=self.episode_seed(self.step, i))
                    result = self.adapt(episode)
                    outer = self._outer_loss_fn(result(episode.y_test, episode.physics), episode.target_test)
                    check_finite(outer, f"outer loss of task {task.name!r}")
                    (outer / len(self.tasks)).backward()
                    record["tasks"][task.name] = outer.item()
                    if result.losses:
                        record["inner_first"][task.name] = result.losses[0]
                        record["inner_last"][task.name] = result.losses[-1]
        except NonFiniteLossError as failure:
            error = failure
        if self.world_size > 1:
            error = self._gather_step(record, error)
        if error is None:
            try:
                self._check_gradients()
                for group in self.optimizer.param_groups:
                    group["lr"] = self.current_outer_lr() * group["lr_scale"]
                if self.grad_clip is not None:  # the norm before clipping is recorded (inf: measure only)
                    record["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.meta_params, self.grad_clip).item()
                self._guarded_update()
            except NonFiniteLossError as failure:
                error = failure
        if error is not None:
            self._skip(record, error)
        else:
            self._consecutive_skips = 0
            record["skipped"] = False
            record["outer_loss"] = sum(record["tasks"].values()) / len(self.tasks)
        self.step += 1
        self._restored_step = None
        record["time_s"] = time.perf_counter() - start
        if self.inner.learn_lr:
            record["inner_lrs"] = self.inner.step_lrs()
        self.history.append(record)
        return record

    def _gather_step(self, record: dict, error):
        """Sum the meta-gradients of all processes and share their losses and failures (collective)."""
        dist = torch.distributed
        names = [t.name for t in self.tasks]
        values = torch.zeros(4, len(names), dtype=torch.float64, device=self.device)  # failed, outer, first, last
        values[0, 0] = float(error is not None)
        for row, key in ((1, "tasks"), (2, "inner_first"), (3, "inner_last")):
            for name, value in record[key].items():
                values[row, names.index(name)] = value
        dist.all_reduce(values)
        for p in self.meta_params:  # the same tensors in the same order on every rank
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
        if error is None and values[0, 0] > 0:
            error = NonFiniteLossError("a non-finite loss in another process")
        record["tasks"] = dict(zip(names, values[1].tolist()))
        if record["inner_first"] or values[2].any():
            record["inner_first"] = dict(zip(names, values[2].tolist()))
            record["inner_last"] = dict(zip(names, values[3].tolist()))
        return error

    def _check_gradients(self) -> None:
        for p in self.meta_params:
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise NonFiniteLossError("meta-gradient contains NaN/Inf")

    def _guarded_update(self) -> None:
        """Optimizer step that is undone if it would write a non-finite value into the weights."""
        # Snapshots cost one copy of the meta-parameters and Adam moments: small next to the
        # second-order backward pass of the step.
        before = [p.detach().clone() for p in self.meta_params]
        state = {
            key: {name: v.clone() if torch.is_tensor(v) else v for name, v in values.items()}
            for key, values in self.optimizer.state.items()
        }
        self.optimizer.step()
        if all(torch.isfinite(p).all() for p in self.meta_params):
            self._last_good = (self.step, before, state)  # restored if the steps after this one all fail
            return
        self._restore(before, state)
        raise NonFiniteLossError("the meta-update produced NaN/Inf weights (undone)")

    def _restore(self, weights: list, state: dict) -> None:
        with torch.no_grad():
            for p, old in zip(self.meta_params, weights):
                p.copy_(old)
        self.optimizer.state.clear()
        self.optimizer.state.update(state)

    def _skip(self, record: dict, error: Exception) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._consecutive_skips += 1
        record["skipped"] = True
        record["outer_loss"] = float("nan")
        record["error"] = str(error)
        logger.warning("outer step %d skipped, meta-weights unchanged: %s", self.step + 1, error)
        if self._consecutive_skips >= self.max_skipped:
            restored = ""
            if getattr(self, "_last_good", None) is not None:
                # finite weights can still be too large for the model's output to stay finite (a huge outer lr):
                # leave the model as it was before the last update, whose own losses were finite
                step, weights, state = self._last_good
                self._restore(weights, state)
                restored = f" The meta-weights were restored to those before outer step {step + 1}."
            raise NonFiniteLossError(
                f"{self._consecutive_skips} consecutive outer steps had non-finite losses or "
                f"gradients (last: {error}).{restored} Lower inner_lr/outer_lr or check the data."
            ) from error

    # ------------------------------------------------------------------ training loop
    def train(self, steps: int, max_time: float | None = None) -> list[dict]:
        """Train until ``self.step == steps`` (so a resumed run continues to the same total).

        :param int steps: total number of outer steps.
        :param float max_time: stop earlier after this many seconds (checkpointing first).
        :return: the history, one record per outer step.
        """
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}.")
        if self.checkpoint is None or self.rank != 0:
            return self._train(steps, max_time)
        with FileLock(self.checkpoint):  # one trainer per checkpoint file; a second one is refused
            remove_stale_temporaries(self.checkpoint)  # a killed writer's leftovers (the lock is ours)
            return self._train(steps, max_time)

    def _train(self, steps: int, max_time: float | None) -> list[dict]:
        start = time.perf_counter()
        bar = Progress("meta-training", steps, self.step, max_time, enabled=self.progress and self.rank == 0)
        try:
            while self.step < steps:
                record = self.outer_step()
                bar.step(self.step, None if record["skipped"] else record["outer_loss"])
                if self.checkpoint is not None and self.step % self.checkpoint_every == 0:
                    self.save(self.checkpoint)
                if max_time is not None and time.perf_counter() - start > max_time:
                    break
        finally:
            bar.close()
        if self.checkpoint is not None:
            self.save(self.checkpoint)
        return self.history

    def validate(self, rollback_above: float | None = None, tasks=None) -> float:
        """Mean adapted loss over the tasks on the fixed held-out episodes of :meth:`evaluate`.

        It is appended to ``self.validation`` and the weights with the lowest finite value are kept
        aside, so that :meth:`restore_best` can undo a late blow-up of training.

        :param float rollback_above: if set, a loss above this multiple of the lowest finite one so far
            (or not finite) is taken for a blow-up and training goes back to the best weights with half
            the outer learning rate (:meth:`rollback`, recorded in ``self.rollbacks``).
        :param list tasks: validate on these tasks instead of the training tasks (e.g. tasks whose both
            splits are held-out images, for models whose outer loss uses the training tasks' test split).
        """
        scores = self.evaluate() if tasks is None else self.evaluate(tasks=tasks)
        loss = sum(s["adapted"] for s in scores.values()) / len(scores)
        self.selection.record(self.step, loss, {"model": self.model.state_dict(), "inner": self.inner.state_dict(),
                                                "optimizer": self.optimizer.state_dict()})
        if self.selection.blew_up(loss, rollback_above):
            self.rollback()
        return loss

    @property
    def validation(self) -> list[dict]:
        """``{"step", "loss"}`` per call of :meth:`validate`."""
        return self.selection.history

    def restore_best(self) -> int:
        """Load the weights of the lowest :meth:`validate` loss (if not the current ones); return their step.

        :raises NonFiniteLossError: if no validation loss was finite.
        """
        step, states = self.selection.best_states()
        if step != self.step:
            self.model.load_state_dict(states["model"])
            self.inner.load_state_dict(states["inner"])
        self._restored_step = step
        return step

    def rollback(self, lr_factor: float = 0.5) -> int:
        """Undo a blow-up of meta-training and go on more slowly: load the weights, learned inner rates and
        Adam state of the lowest :meth:`validate` loss, and multiply the outer learning rate by
        ``lr_factor`` from now on. Returns the step gone back to; ``self.step`` keeps counting the outer
        steps performed, and ``self.rollbacks`` records each call.

        :raises NonFiniteLossError: if no validation loss was finite.
        """
        if not 0 < lr_factor <= 1:
            raise ValueError(f"lr_factor must be in (0, 1], got {lr_factor!r}.")
        step = self.restore_best()
        self.optimizer.load_state_dict(self.selection.best_states()[1]["optimizer"])
        self.lr_factor *= lr_factor
        self.rollbacks.append({"step": self.step, "to_step": step, "lr_factor": self.lr_factor})
        return step

    @property
    def selected_step(self) -> int:
        """The outer step whose weights the model holds: the last one, or the one :meth:`restore_best` loaded."""
        return self.step if self._restored_step is None else self._restored_step

    @torch.no_grad()
    def evaluate(self, episodes: int = 2, seed: int = 10**9, metric=None, tasks=None) -> dict:
        """Score the meta-model and the adapted (inner) model per task on fixed held-out episodes.

        :param int episodes: episodes per task, drawn with seeds from ``seed`` (disjoint from the
            training seeds for any realistic run length).
        :param Callable metric: ``metric(x_hat, target)`` per image (e.g. ``deepinv.loss.metric.PSNR()``);
            default: the outer loss (MSE) of each episode.
        :param list tasks: score these tasks instead of the training tasks.
        :return: ``{task: {"meta": mean, "adapted": mean, "meta_std": std, "adapted_std": std}}``.
        """
        # the global random state is left as found: an evaluation between outer steps (validate(), at
        # time-based points in the benchmarks) must not change the training run (measured: it did, by 1e-8
        # after 6 steps, which hundreds of steps of a chaotic meta-training turned into different runs)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self._evaluate(episodes, seed, metric, self.tasks if tasks is None else
                                  [task.to(self.device) for task in tasks])

    def _evaluate(self, episodes: int, seed: int, metric, tasks) -> dict:
        self.model.eval()

        def score(x_hat, target):
            if metric is None:
                return [supervised_loss(x_hat, target).item()]
            return metric(x_hat, target).flatten().tolist()

        scores = {}
        for i, task in enumerate(tasks):
            values = {"meta": [], "adapted": []}
            for e in range(episodes):
                episode = task.episode(self.batch_size, seed=seed + 101 * e + i)
                with torch.no_grad():
                    values["meta"] += score(self.model(episode.y_test, episode.physics), episode.target_test)
                result = self.adapt(episode, track_meta_grad=False)
                with torch.no_grad():
                    values["adapted"] += score(result(episode.y_test, episode.physics), episode.target_test)
            scores[task.name] = {}
            for key, vals in values.items():
                vals = torch.tensor(vals)
                scores[task.name][key] = vals.mean().item()
                scores[task.name][f"{key}_std"] = vals.std().item() if len(vals) > 1 else 0.0
        return scores

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model_class": type(self.model).__name__,
            "model_config": getattr(self.model, "config", None),
            "model": self.model.state_dict(),
            "inner": self.inner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "config": self.config,
            "lr_factor": self.lr_factor,
            "rollbacks": self.rollbacks,
            "data_fingerprint": self.data_fingerprint(),
        }

    def data_fingerprint(self) -> str:
        """SHA-256 of the tasks' training and test images (stored in checkpoints; a resume on other data is refused)."""
        if getattr(self, "_fingerprint", None) is None:
            data = {}
            for task in self.tasks:
                data[f"{task.name}.train"], data[f"{task.name}.test"] = task.train_data, task.test_data
            self._fingerprint = weights_checksum(data)
        return self._fingerprint

    def save(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint atomically (default path: the ``checkpoint`` argument); with several
        processes only rank 0 writes (the others hold the same state)."""
        path = path or self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path: pass one to save() or checkpoint=... to MetaTrainer.")
        return atomic_save(self.state_dict(), path) if self.rank == 0 else Path(path)

    def load(self, path: str | Path) -> None:
        """Restore model, learned learning rates, optimizer state, step and history from a checkpoint."""
        state = safe_load(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a MetaTrainer checkpoint (format {state.get('format')!r}).")
        # checkpoints older than outer_loss / lr_scales / implicit / inner_momentum used the MSE / one learning
        # rate / MAML / no momentum
        saved = {"outer_loss": "l2", "lr_scales": {}, "implicit": False, "cg_steps": 10, "inner_momentum": 0.0,
                 **state["config"]}
        if saved.get("learn_inner_lr") is True:  # older checkpoints stored True for per-step learning rates
            saved["learn_inner_lr"] = "per_step"
        differing = {k: (v, saved.get(k)) for k, v in self.config.items() if saved.get(k) != v}
        if differing:
            raise ValueError(
                f"checkpoint {path} was written with a different configuration "
                f"(now, in checkpoint): {differing}. Use the same settings, or another checkpoint path."
            )
        # config entries that training itself changes (learned weights kept in the config, e.g. the learned lambdas
        # of a VariationalReconstructor) are not part of what must match
        learned = getattr(self.model, "learned_config_keys", ())

        def comparable(config):
            return {k: v for k, v in config.items() if k not in learned} if isinstance(config, dict) else config

        model_now = (type(self.model).__name__, comparable(getattr(self.model, "config", None)))
        model_saved = (state.get("model_class"), comparable(state.get("model_config")))
        if model_now[1] is not None and model_saved[1] is not None and model_now != model_saved:
            raise ValueError(
                f"checkpoint {path} holds {model_saved[0]}({model_saved[1]}) but the model to train is "
                f"{model_now[0]}({model_now[1]}). Build the same model, or use another checkpoint path."
            )
        saved_data = state.get("data_fingerprint")  # checkpoints before it have none: nothing to compare
        if saved_data is not None and saved_data != self.data_fingerprint():
            raise ValueError(f"checkpoint {path} was trained on other task data (the images differ from the ones "
                             "given now). Give the same images to resume, or use another checkpoint path.")
        self.model.load_state_dict(state["model"])
        self.inner.load_state_dict(state["inner"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # older checkpoints have one group and no lr_scale
            group.setdefault("lr_scale", 1.0)
        self.step = state["step"]
        self.history = list(state["history"])
        self.lr_factor = state.get("lr_factor", 1.0)  # older checkpoints: no rollback
        self.rollbacks = list(state.get("rollbacks", []))

r"""The differentiable inner loop: the one engine every meta-model, trainer and fine-tuner uses.

Starting from the meta-weights :math:`\theta` of a model, it runs ``steps`` optimizer steps on

.. math:: \mathcal{L}_{\mathrm{inner}}(\phi) = \ell(f_\phi) + \frac{\lambda}{2}\|\phi - \theta\|^2

through :func:`higher.innerloop_ctx`, and returns the fast weights :math:`\phi` together with the
functional model that evaluates :math:`f_\phi`. Three gradient modes:

- ``first_order=False`` (MAML): the graph of every inner step is kept, so an outer loss evaluated at
  :math:`\phi` back-propagates to :math:`\theta` (and to learned learning rates) exactly.
- ``first_order=True`` (FOMAML): the inner steps are run without a graph and the meta-gradient is
  :math:`\nabla_\phi\mathcal{L}_{\mathrm{outer}}(\phi)`. ``higher``'s ``track_higher_grads=False``
  alone would give :math:`\theta` *no* gradient (it detaches :math:`\phi`); we re-attach
  :math:`\phi` to :math:`\theta` through :math:`\theta + (\phi - \theta)_{\mathrm{detached}}`,
  whose Jacobian with respect to :math:`\theta` is the identity.
- ``implicit=True`` (iMAML, Rajeswaran et al. 2019): if the inner steps reach the minimiser
  :math:`\phi^*` of the inner loss (which needs :math:`\lambda > 0`), its optimality condition
  :math:`\nabla\ell(\phi^*) + \lambda(\phi^* - \theta) = 0` gives
  :math:`d\phi^*/d\theta = (I + \nabla^2\ell(\phi^*)/\lambda)^{-1}`, so the meta-gradient is
  that matrix applied to :math:`\nabla_\phi\mathcal{L}_{\mathrm{outer}}(\phi^*)`, solved by
  ``cg_steps`` conjugate-gradient iterations with Hessian-vector products of the inner data loss at
  the last step's batch. The inner steps keep no graph (memory independent of their number), but
  the meta-gradient is only as exact as the inner minimisation: use enough inner steps.
- ``track_meta_grad=False`` in :meth:`InnerLoop.run`: plain fine-tuning, no meta-gradient at all.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import higher
import torch
from torch import nn

from ..losses import proximal_penalty
from .optimizers import check_optimizer_name, make_optimizer


class NonFiniteLossError(FloatingPointError):
    """Raised when an inner or outer loss is NaN or infinite; the meta-weights are left untouched."""


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming ``where`` if ``loss`` is NaN or infinite."""
    finite = torch.isfinite(loss)
    if not finite.all():
        value = loss.detach().cpu().tolist() if loss.numel() <= 8 else f"non-finite in {(~finite).sum().item()} of {loss.numel()} entries"
        raise NonFiniteLossError(
            f"{where} is {value}. Lower the learning rate (inner lr or "
            "outer lr), check the inputs for NaN/Inf, or normalise the images to [0, 1]."
        )


@dataclass
class InnerResult:
    """Outcome of :meth:`InnerLoop.run`: fast weights and the functional model evaluating them.

    Calling the result, ``result(y, physics)``, evaluates :math:`f_\\phi(y, A)`.
    """

    fmodel: nn.Module
    params: list
    losses: list = field(default_factory=list)

    def __call__(self, *args, **kwargs):
        if self.params is None:  # zero inner steps: the meta-model itself
            return self.fmodel(*args, **kwargs)
        return self.fmodel(*args, params=self.params, **kwargs)


def momentum_kwargs(optimizer: str, momentum: float) -> dict | None:
    """Optimizer arguments for a heavy-ball ``momentum`` (``None`` when 0); only ``"sgd"`` takes one."""
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
    if momentum and optimizer != "sgd":
        raise ValueError(f"momentum={momentum} needs optimizer 'sgd' (got {optimizer!r}); Adam has its own betas.")
    return {"momentum": momentum} if momentum else None


class InnerLoop(nn.Module):
    r"""Differentiable inner optimisation of a model's weights, built on :mod:`higher`.

    It holds the inner-loop configuration and the learned optimiser settings (meta-parameters,
    passed to higher through ``override``): per-step learning rates :math:`\alpha_k = e^{s_k}`
    (``learn_lr=True``), per-parameter per-step learning rates as in Meta-SGD (Li et al. 2017,
    ``learn_lr="per_parameter"``, elementwise :math:`\alpha_{k} \odot \nabla`), and per-step
    momentum :math:`\mu_k = \mathrm{sigmoid}(t_k)` for SGD (``learn_momentum=True``).

    :param int steps: number of inner optimizer steps (0 evaluates the meta-model itself).
    :param float lr: inner learning rate (initial value of the learned ones if ``learn_lr``).
    :param str optimizer: ``"adam"`` (torch-exact, see :mod:`.optimizers`) or ``"sgd"``.
    :param float lam: weight :math:`\lambda` of the proximal term :math:`\frac{\lambda}{2}\|\phi-\theta\|^2`.
    :param bool first_order: first-order MAML (see module docstring).
    :param bool implicit: implicit meta-gradient (iMAML, see module docstring); needs ``lam > 0``.
    :param int cg_steps: conjugate-gradient iterations of the implicit meta-gradient.
    :param bool, str learn_lr: ``False``, ``True`` (one learning rate per inner step) or
        ``"per_parameter"`` (Meta-SGD: one per weight and step; needs ``parameters``). Learned
        settings need ``first_order=False`` and ``implicit=False``. With ``"sgd"`` on a quadratic inner
        loss (a linear model, squared loss, the same batch at every step), per-step rates started equal
        stay equal: the product of the :math:`(I - \alpha_k H)` does not depend on their order, so every
        rate gets the same meta-gradient (:doc:`/notes`).
    :param bool learn_momentum: learn one SGD momentum per inner step (``optimizer="sgd"``),
        initialised at ``optimizer_kwargs["momentum"]`` (default 0.9).
    :param parameters: the parameters the inner loop will adapt; only for ``learn_lr="per_parameter"``,
        whose learning rates take their shapes.
    :param bool repeat_last: allow runs longer than ``steps`` with learned settings, reusing the last
        learned ones for the extra steps (e.g. MetaDIP: 20 steps meta-trained, 50 at test time).
    :param dict optimizer_kwargs: extra arguments of the torch optimizer (``betas``, ``momentum``...).
    :param str schedule: ``"constant"`` (``lr`` at every step) or ``"cosine"``: step :math:`k` of a run of
        :math:`n` uses :math:`\frac{\alpha}{2}(1 + \cos(\pi k / n))`, from ``lr`` down to almost 0, so a
        run with noisy mini-batches ends on small steps instead of wherever its last large one landed. Fixed
        learning rates only (learned ones have their own per-step values).

    :Examples:

    >>> import torch
    >>> from deepinv_meta.bilevel import InnerLoop
    >>> model = torch.nn.Linear(3, 3)
    >>> x = torch.randn(4, 3)
    >>> inner = InnerLoop(steps=2, lr=0.1, optimizer="sgd", lam=0.5)
    >>> result = inner.run(model, lambda f, k: ((f(x) - x) ** 2).mean())
    >>> outer = ((result(x) - x) ** 2).mean()
    >>> outer.backward()  # meta-gradient, through both inner steps
    >>> model.weight.grad.shape
    torch.Size([3, 3])
    """

    def __init__(
        self,
        steps: int = 1,
        lr: float = 1e-3,
        optimizer: str = "adam",
        lam: float = 0.0,
        first_order: bool = False,
        learn_lr: bool | str = False,
        learn_momentum: bool = False,
        parameters=None,
        implicit: bool = False,
        cg_steps: int = 10,
        repeat_last: bool = False,
        optimizer_kwargs: dict | None = None,
        schedule: str = "constant",
    ):
        super().__init__()
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"inner steps must be an integer >= 0, got {steps!r}.")
        if not lr > 0:
            raise ValueError(f"inner lr must be > 0, got {lr!r}.")
        if not lam >= 0:
            raise ValueError(f"lam (weight of lam/2 ||phi - theta||^2) must be >= 0, got {lam!r}.")
        if learn_lr not in (False, True, "per_step", "per_parameter"):
            raise ValueError(f"learn_lr must be False, True/'per_step' or 'per_parameter', got {learn_lr!r}.")
        if (learn_lr or learn_momentum) and (first_order or implicit):
            raise ValueError(
                "learned learning rates or momentum need second-order meta-gradients: first-order and "
                "implicit MAML give them no gradient. Use first_order=False, implicit=False."
            )
        if implicit and first_order:
            raise ValueError("choose one of first_order=True and implicit=True.")
        if implicit and not lam > 0:
            raise ValueError("implicit=True needs lam > 0: the implicit meta-gradient (I + H/lam)^-1 g "
                             "comes from the proximal term lam/2 ||phi - theta||^2.")
        if not isinstance(cg_steps, int) or cg_steps < 1:
            raise ValueError(f"cg_steps must be a positive integer, got {cg_steps!r}.")
        check_optimizer_name(optimizer)
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}.")
        if schedule != "constant" and learn_lr:
            raise ValueError(f"schedule={schedule!r} applies to a fixed learning rate; learned ones (learn_lr) "
                             "have their own value at each step.")
        if learn_momentum and optimizer != "sgd":
            raise ValueError(f"learn_momentum=True needs optimizer='sgd' (got {optimizer!r}).")
        self.steps = steps
        self.lr = lr
        self.optimizer = optimizer
        self.lam = lam
        self.first_order = first_order
        self.implicit = implicit
        self.cg_steps = cg_steps
        self.learn_lr = "per_step" if learn_lr is True else learn_lr
        self.learn_momentum = learn_momentum
        self.repeat_last = repeat_last
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.schedule = schedule
        n = max(steps, 1)
        if self.learn_lr == "per_step":
            self.log_lr = nn.Parameter(torch.full((n,), math.log(lr)))
        elif self.learn_lr == "per_parameter":
            if parameters is None:
                raise ValueError("learn_lr='per_parameter' needs `parameters` (those the inner loop adapts) for their shapes.")
            self.log_lr = nn.ParameterList(
                nn.Parameter(torch.full((n, *p.shape), math.log(lr))) for p in parameters
            )
        if learn_momentum:
            momentum = self.optimizer_kwargs.setdefault("momentum", 0.9)
            if not 0 < momentum < 1:
                raise ValueError(f"the initial momentum must be in (0, 1) to be learned, got {momentum!r}.")
            self.momentum_logit = nn.Parameter(torch.full((n,), math.log(momentum / (1 - momentum))))

    def extra_repr(self) -> str:
        return (
            f"steps={self.steps}, lr={self.lr}, optimizer={self.optimizer!r}, lam={self.lam}, "
            f"first_order={self.first_order}, implicit={self.implicit}, learn_lr={self.learn_lr}, "
            f"learn_momentum={self.learn_momentum}, schedule={self.schedule!r}"
        )

    def step_lrs(self) -> list[float]:
        """The learning rate used at each inner step (mean over the weights for Meta-SGD)."""
        if self.learn_lr == "per_step":
            return self.log_lr.detach().exp().tolist()
        if self.learn_lr == "per_parameter":
            lrs = torch.cat([p.detach().exp().flatten(1) for p in self.log_lr], dim=1)
            return lrs.mean(dim=1).tolist()
        return [self._scheduled_lr(k, self.steps) for k in range(self.steps)]

    def _scheduled_lr(self, k: int, steps: int) -> float:
        """The fixed learning rate of step ``k`` of a run of ``steps``."""
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * k / steps))
        return self.lr

    def step_momenta(self) -> list[float]:
        """The SGD momentum used at each inner step."""
        if self.learn_momentum:
            return torch.sigmoid(self.momentum_logit.detach()).tolist()
        return [self.optimizer_kwargs.get("momentum", 0.0)] * self.steps

    def _learned_steps(self) -> int | None:
        """Number of inner steps with learned settings (``None`` if nothing is learned)."""
        if self.learn_lr == "per_step":
            return len(self.log_lr)
        if self.learn_lr == "per_parameter":
            return len(self.log_lr[0])
        return self.momentum_logit.numel() if self.learn_momentum else None

    def _override(self, k: int, steps: int) -> dict | None:
        """higher's ``override`` of inner step ``k`` of ``steps``: the learned or scheduled settings, one entry per
        param group."""
        override = {}
        if self.schedule != "constant":
            override["lr"] = [self._scheduled_lr(k, steps)]
        learned = self._learned_steps()
        if learned is not None and self.repeat_last:
            k = min(k, learned - 1)
        if self.learn_lr == "per_step":
            override["lr"] = [self.log_lr[k].exp()]
        elif self.learn_lr == "per_parameter":
            override["lr"] = [lr[k].exp() for lr in self.log_lr]
        if self.learn_momentum:
            override["momentum"] = [torch.sigmoid(self.momentum_logit[k])]
        return override or None

    def run(
        self,
        model: nn.Module,
        data_loss: Callable[[nn.Module, int], torch.Tensor],
        *,
        steps: int | None = None,
        track_meta_grad: bool = True,
        callback: Callable[[int, float], None] | None = None,
    ) -> InnerResult:
        r"""Adapt ``model``'s weights by minimising ``data_loss`` plus the proximal term.

        :param torch.nn.Module model: the meta-model; its parameters are :math:`\theta` and are
            never modified in place.
        :param Callable data_loss: ``data_loss(fmodel, k)`` returns the data term at inner step
            ``k``, evaluating the network through ``fmodel(...)`` (current fast weights); or, without
            second-order meta-gradients, a list of functions whose losses sum to it (e.g. one per chunk of
            a batch): they are evaluated and differentiated one at a time, so a step holds the memory of
            one part only (:class:`DataTermInParts`).
        :param int steps: override the number of steps (e.g. longer fine-tuning).
        :param bool track_meta_grad: keep the dependency of :math:`\phi` on :math:`\theta`
            (MAML or first-order). ``False`` for plain fine-tuning.
        :param Callable callback: called as ``callback(k, loss)`` after each step (progress bars).
        :return: :class:`InnerResult`.
        :raises NonFiniteLossError: if an inner loss is NaN or infinite.
        """
        steps = self.steps if steps is None else steps
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"inner steps must be an integer >= 0, got {steps!r}.")
        learned_steps = self._learned_steps()
        if learned_steps is not None and steps > learned_steps and not self.repeat_last:
            raise ValueError(
                f"{steps} steps requested but learned settings exist for {learned_steps} steps only: ask for at most "
                f"{learned_steps} steps, or set repeat_last=True to reuse the last learned settings."
            )
        if steps == 0:  # the meta-model itself; no higher context needed
            return InnerResult(fmodel=model, params=None)
        if torch.is_inference_mode_enabled():
            raise RuntimeError("the inner loop optimises weights, which torch.inference_mode() forbids (tensors made "
                               "there can never require gradients); call it under torch.no_grad() instead, where "
                               "it enables gradients itself.")
        second_order = track_meta_grad and not (self.first_order or self.implicit)
        meta_params = [p for p in model.parameters()]
        if self.learn_lr == "per_parameter":
            if [p.shape for p in meta_params] != [lr.shape[1:] for lr in self.log_lr]:
                raise ValueError("the model's parameters do not match the shapes the per-parameter "
                                 "learning rates were built for (`parameters` at construction).")
            groups = [{"params": [p]} for p in meta_params]  # one group per tensor: elementwise lr
        else:
            groups = meta_params
        template = make_optimizer(self.optimizer, groups, self.lr, **self.optimizer_kwargs)
        losses = []
        with torch.enable_grad():  # callers may sit under no_grad (dinv.test, Trainer eval)
            with higher.innerloop_ctx(
                model, template, copy_initial_weights=False, track_higher_grads=second_order
            ) as (fmodel, diffopt):
                for k in range(steps):
                    loss = data_loss(fmodel, k)
                    parts = None
                    if isinstance(loss, DataTermInParts):
                        if second_order:
                            raise ValueError("a data term in parts cannot be differentiated twice: use it for "
                                             "fine-tuning (track_meta_grad=False) or first-order MAML only.")
                        parts, loss = loss.all_but_first(fmodel.fast_params, k), loss.parts[0]()
                    check_finite(loss, f"inner loss at inner step {k}")
                    if self.lam > 0:
                        reg = proximal_penalty(fmodel.fast_params, meta_params, self.lam)
                        loss = loss + reg
                    diffopt.step(loss, override=self._override(k, steps),
                                 grad_callback=None if parts is None else parts.add_to)
                    losses.append(loss.item() + (0.0 if parts is None else parts.value))
                    if callback is not None:
                        callback(k, losses[-1])
                params = list(fmodel.fast_params)
                if track_meta_grad and self.first_order and steps > 0:
                    params = [theta + (phi - theta).detach() for phi, theta in zip(params, meta_params)]
                elif track_meta_grad and self.implicit:
                    phis = [p.detach() for p in params]
                    solve = _ImplicitSolve(fmodel, data_loss, phis, steps - 1, self.lam, self.cg_steps)
                    params = list(_ImplicitMetaGradient.apply(solve, phis, *meta_params))
                elif not track_meta_grad:
                    params = [p.detach() for p in params]
        return InnerResult(fmodel=fmodel, params=params, losses=losses)


class DataTermInParts:
    """A data term given as ``parts``, functions whose losses sum to it (e.g. one per chunk of a batch), that
    :meth:`InnerLoop.run` differentiates one at a time: the memory of one part instead of the whole batch.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.bilevel import InnerLoop
    >>> from deepinv_meta.bilevel.inner import DataTermInParts
    >>> model, x = torch.nn.Linear(2, 2), torch.randn(8, 2)
    >>> whole = lambda f, k: ((f(x) - x) ** 2).sum()
    >>> halves = lambda f, k: DataTermInParts([lambda c=c: ((f(c) - c) ** 2).sum() for c in x.split(4)])
    >>> a = InnerLoop(steps=3, lr=0.1).run(model, whole, track_meta_grad=False).params
    >>> b = InnerLoop(steps=3, lr=0.1).run(model, halves, track_meta_grad=False).params
    >>> all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a, b))
    True
    """

    def __init__(self, parts: list):
        if not parts:
            raise ValueError("a data term in parts needs at least one part.")
        self.parts = list(parts)
        self.value, self.grads = 0.0, None

    def all_but_first(self, params, k: int) -> "DataTermInParts":
        """Evaluate and differentiate the parts after the first, one at a time (their graphs freed in turn)."""
        for part in self.parts[1:]:
            loss = part()
            check_finite(loss, f"inner loss at inner step {k}")
            trainable = [p for p in params if p.requires_grad]
            found = iter(torch.autograd.grad(loss, trainable, allow_unused=True))
            grads = [next(found) if p.requires_grad else None for p in params]
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            self.grads = grads if self.grads is None else [a + b for a, b in zip(self.grads, grads)]
            self.value += loss.item()
        return self

    def add_to(self, grads):
        """higher's ``grad_callback``: the first part's gradients plus the others'."""
        if self.grads is None:
            return grads
        return [b if a is None else a + b for a, b in zip(grads, self.grads)]


class _AtParams:
    """``fmodel`` evaluated at given weights: what a ``data_loss(fmodel, k)`` closure calls."""

    def __init__(self, fmodel, params):
        self.fmodel, self.params = fmodel, params

    def __call__(self, *args, **kwargs):
        return self.fmodel(*args, params=self.params, **kwargs)


@dataclass
class _ImplicitSolve:
    r"""Solves :math:`(I + \nabla^2\ell(\phi^*)/\lambda)\,v = g` by conjugate gradient (iMAML's backward)."""

    fmodel: nn.Module
    data_loss: Callable
    phis: list
    step: int
    lam: float
    cg_steps: int

    def __call__(self, grads):
        b = [torch.zeros_like(p) if g is None else g for p, g in zip(self.phis, grads)]
        with torch.enable_grad():
            phi = [p.detach().requires_grad_(True) for p in self.phis]
            loss = self.data_loss(_AtParams(self.fmodel, phi), self.step)
            grad = torch.autograd.grad(loss, phi, create_graph=True, allow_unused=True)
            used = [i for i, g in enumerate(grad) if g is not None and g.requires_grad]  # weights the loss sees

            def matvec(v):  # (I + H / lam) v, with H v by double back-propagation
                if not used:
                    return list(v)
                hv = torch.autograd.grad([grad[i] for i in used], phi, grad_outputs=[v[i] for i in used],
                                         retain_graph=True, allow_unused=True)
                return [vi if h is None else vi + h / self.lam for vi, h in zip(v, hv)]

            return conjugate_gradient(matvec, b, self.cg_steps)


def conjugate_gradient(matvec, b: list, iterations: int, tol: float = 1e-12) -> list:
    """Solve ``matvec(x) = b`` for a symmetric positive definite operator on lists of tensors."""
    dot = lambda u, v: sum((ui * vi).sum() for ui, vi in zip(u, v))  # noqa: E731
    x = [torch.zeros_like(bi) for bi in b]
    r = [bi.clone() for bi in b]
    p = [ri.clone() for ri in r]
    rs = dot(r, r)
    for _ in range(iterations):
        if rs.sqrt() <= tol:
            break
        ap = matvec(p)
        alpha = rs / dot(p, ap)
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * api for ri, api in zip(r, ap)]
        rs_new = dot(r, r)
        p = [ri + (rs_new / rs) * pi for ri, pi in zip(r, p)]
        rs = rs_new
    return x


class _ImplicitMetaGradient(torch.autograd.Function):
    r"""Returns the fast weights :math:`\phi^*`; back-propagates :math:`(I + H/\lambda)^{-1} g` to :math:`\theta`."""

    @staticmethod
    def forward(ctx, solve, phis, *thetas):
        ctx.solve = solve
        return tuple(phi.clone() for phi in phis)

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, *ctx.solve(grads))


def settings_object(caller: str, given, legacy: dict, option: str):
    """The settings object a caller was given (``option=``, e.g. ``inner=InnerLoop(...)``), or ``None`` when the
    keywords of earlier versions (``legacy``) are to build it, with a ``DeprecationWarning``; both is an error."""
    if given is not None:
        if legacy:
            raise ValueError(f"{caller} got {option.split('=')[0]}= and {sorted(legacy)}: the object carries those "
                             "settings; pass one or the other.")
        return given
    if legacy:
        warnings.warn(f"{caller}({', '.join(sorted(legacy))}=...) is deprecated: pass {option}.",
                      DeprecationWarning, stacklevel=4)
    return None


def legacy_inner_loop(caller: str, inner: "InnerLoop | None", legacy: dict, names: dict, momentum: str,
                      steps: int) -> "InnerLoop":
    """``inner``, or the :class:`InnerLoop` that the keywords of earlier versions describe (with a
    ``DeprecationWarning``): ``names`` maps each such keyword to ``(InnerLoop argument, default)``, ``momentum``
    names the keyword of the heavy-ball momentum, ``steps`` is the default number of steps."""
    unknown = sorted(set(legacy) - set(names) - {momentum})
    if unknown:
        raise TypeError(f"{caller} got unexpected keyword arguments {unknown}.")
    if settings_object(caller, inner, legacy, "inner=InnerLoop(...)") is not None:
        return inner
    kwargs = {"steps": steps, **{name: legacy.get(key, default) for key, (name, default) in names.items()}}
    kwargs["optimizer_kwargs"] = momentum_kwargs(kwargs.get("optimizer", "adam"), legacy.get(momentum, 0.0))
    return InnerLoop(**kwargs)

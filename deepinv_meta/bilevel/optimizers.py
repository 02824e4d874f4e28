r"""Differentiable inner optimizers for :mod:`higher`.

``higher`` 0.2.1 ships a differentiable Adam whose update is

.. math:: p \leftarrow p - \mathrm{lr}\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t} + \epsilon},

i.e. :math:`\epsilon` is added *before* the bias correction of the second moment, whereas
:class:`torch.optim.Adam` computes

.. math:: p \leftarrow p - \frac{\mathrm{lr}}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}.

The two differ noticeably in the first steps (where the bias correction is large), which is
exactly the regime of few-step meta-learning. :class:`DifferentiableAdam` reproduces the torch
update and is registered with ``higher`` for :class:`torch.optim.Adam` when this module is
imported, so ``higher.innerloop_ctx(model, torch.optim.Adam(...))`` uses it.

It also guards :math:`\sqrt{v}` at :math:`v = 0` (parameters whose gradient is exactly zero,
e.g. dead ReLU units): the derivative of :math:`\sqrt{v}` is infinite there, and
:math:`\infty \cdot 0` would turn the whole meta-gradient into NaN.
"""

from __future__ import annotations

import torch
import higher
from higher.optim import DifferentiableOptimizer

INNER_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(v)`` for ``v >= 0`` whose gradient is 0 (not infinite) where ``v == 0``."""
    positive = v > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, v, torch.ones_like(v))), 0.0 * v)


class DifferentiableAdam(DifferentiableOptimizer):
    r"""Differentiable Adam that matches :class:`torch.optim.Adam` (``amsgrad=False``).

    The learning rate may be a tensor (e.g. a learned per-step learning rate passed through
    ``override={"lr": [...]}``); the meta-gradient then flows into it.

    :Examples:

    >>> import torch, higher
    >>> import deepinv_meta.bilevel.optimizers  # registers DifferentiableAdam
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.Adam(model.parameters(), lr=0.1)
    >>> with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
    ...     _ = diffopt.step(fmodel(torch.ones(1, 2)).pow(2).sum())
    ...     type(diffopt).__name__
    'DifferentiableAdam'
    """

    def _update(self, grouped_grads, **kwargs) -> None:
        for group_idx, (group, grads) in enumerate(zip(self.param_groups, grouped_grads)):
            if group.get("amsgrad", False):
                raise NotImplementedError("DifferentiableAdam does not support amsgrad=True.")
            if group.get("maximize", False):
                raise NotImplementedError("DifferentiableAdam does not support maximize=True.")
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p_idx, (p, g) in enumerate(zip(group["params"], grads)):
                if g is None:
                    continue
                state = self.state[group_idx][p_idx]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                if weight_decay != 0:
                    g = g + weight_decay * p
                exp_avg = state["exp_avg"] * beta1 + (1 - beta1) * g
                exp_avg_sq = state["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
                state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                denom = safe_sqrt(exp_avg_sq) / bias_correction2**0.5 + eps
                group["params"][p_idx] = p - (lr / bias_correction1) * exp_avg / denom


higher.register_optim(torch.optim.Adam, DifferentiableAdam)


def check_optimizer_name(name: str) -> str:
    """Return ``name`` if it is a known inner optimizer, else raise a ``ValueError`` listing them."""
    if name not in INNER_OPTIMIZERS:
        raise ValueError(f"Unknown inner optimizer {name!r}; use one of {tuple(INNER_OPTIMIZERS)}.")
    return name


def make_optimizer(name: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
    """A torch optimizer by name (``"adam"`` or ``"sgd"``), used as the template of the inner loop."""
    return INNER_OPTIMIZERS[check_optimizer_name(name)](params, lr=lr, **kwargs)

r"""MetaPDNet: the unrolled primal-dual network of Meta-Prior (Terris & Moreau, eq. 7-8)."""

from __future__ import annotations

import deepinv as dinv
import torch
import torch.nn.functional as F
from torch import nn

from .checks import adjoint_image, require_dtype, require_linear
from .zoo import FromPretrained
from ..io import register_model


def operator_sqnorm(physics, x_like: torch.Tensor, iters: int = 20) -> torch.Tensor:
    r"""Power-iteration estimate of :math:`\|A^\top A\|` at the shape of ``x_like``.

    Unlike ``physics.compute_sqnorm`` it draws its start vector from a private generator (never
    from the global RNG, so calling a model does not change the user's random stream) and does
    not warn when the fixed number of iterations is reached.

    The estimate is cached on ``physics`` for the shape, dtype and device of ``x_like``, and is
    recomputed once the operator changes: ``physics.update(...)`` replaces or writes into its
    tensors (buffers, parameters or tensor attributes, sub-physics included), and the cache is
    keyed on those tensors' identities and in-place version counters. A physics that holds no
    tensor at all (e.g. an operator given as plain functions) is never cached.
    """
    state = _operator_state(physics)
    key = (tuple(x_like.shape), x_like.dtype, x_like.device, iters)
    cached = getattr(physics, _CACHE, None)
    if state and cached is not None and cached[0] == key and _same_state(cached[1], state):
        return cached[2]
    norm = _power_iteration(physics, x_like, iters)
    if state:
        object.__setattr__(physics, _CACHE, (key, state, norm))  # not a registered buffer: never saved or moved
    return norm


_CACHE = "_deepinv_meta_sqnorm"


def _operator_state(physics) -> list:
    """What defines ``physics``: ``(tensor, version)`` of its tensors and its ``A`` / ``A_adjoint`` callables.

    Empty when it holds no tensor of its own (an operator made of closures, whose captured tensors are
    invisible here): such operators are never cached. Tensors are held, so their identities are never reused.
    """
    tensors = [t for name, t in physics.named_buffers() if not name.endswith("_device_holder")]
    tensors += [t for _, t in physics.named_parameters()]
    for module in physics.modules():
        tensors += [v for k, v in vars(module).items() if torch.is_tensor(v) and k != _CACHE]
    if not tensors:
        return []
    functions = [getattr(m, name, None) for m in physics.modules() for name in ("A", "A_adjoint")]
    return [(t, t._version) for t in tensors] + [(f, None) for f in functions]


def _same_state(old: list, new: list) -> bool:
    return len(old) == len(new) and all(
        (a is b and va == vb) if torch.is_tensor(a) else a == b for (a, va), (b, vb) in zip(old, new))


def _power_iteration(physics, x_like: torch.Tensor, iters: int) -> torch.Tensor:
    with torch.no_grad():
        rng = torch.Generator().manual_seed(0)
        v = torch.randn(x_like.shape, generator=rng, dtype=x_like.dtype).to(x_like.device)
        v = v / torch.linalg.vector_norm(v)
        norm = torch.ones((), dtype=x_like.dtype, device=x_like.device)
        for _ in range(iters):
            w = physics.A_adjoint(physics.A(v))
            norm = torch.linalg.vector_norm(w)
            if norm == 0:
                break
            v = w / norm
        return norm


class _LinfBallProjection(torch.autograd.Function):
    """clamp(v, -r, r) whose backward multiplies by two masks saved at the forward pass (1 byte an entry)."""

    generate_vmap_rule = True  # torch.func transforms (vmap, grad) work through it

    @staticmethod
    def forward(v, radius):
        return torch.clamp(v, -radius, radius)

    @staticmethod
    def setup_context(ctx, inputs, output):
        v, radius = inputs
        above, below = v > radius, v < -radius
        ctx.save_for_backward(~(above | below), above.to(torch.int8) - below.to(torch.int8))

    @staticmethod
    def backward(ctx, grad):
        # written with differentiable ops of `grad` only, so autograd differentiates it again (MAML's
        # second order); the masks are constant, as clamp's are almost everywhere
        inside, sign = ctx.saved_tensors
        return grad * inside, (grad * sign).sum()


def project_linf_ball(v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    r"""Projection of ``v`` onto :math:`[-r, r]` for a scalar tensor :math:`r \ge 0`.

    The same function as ``torch.clamp(v, -radius, radius)`` with the same first and second
    derivatives (almost everywhere), but clamp's backward with tensor bounds builds masks with
    ``masked_fill``/``logical_and``/``where`` at every call, and again when differentiated a second
    time; here two masks are computed once, in the forward pass (see ``docs/performance.rst``).
    """
    return _LinfBallProjection.apply(v, radius)


@register_model
class MetaPDNet(FromPretrained, dinv.models.Reconstructor):
    r"""Unrolled primal-dual network whose weights are meta-learned across imaging tasks.

    It unrolls the Condat-Vu primal-dual iteration for :math:`\min_x \frac12\|Ax-y\|^2 + \lambda\|Wx\|_1`
    with untied :math:`W_k, \lambda_k` (Terris & Moreau, eq. 7):

    .. math::

        x_{k+1} &= x_k - \tau A^\top(Ax_k - y) - \tau W_k^\top u_k, \\
        u_{k+1} &= \operatorname{prox}_{\gamma(\lambda_k\|\cdot\|_1)^*}\big(u_k + \gamma W_k(2x_{k+1} - x_k)\big)
                 = \Pi_{[-\lambda_k, \lambda_k]}\big(u_k + \gamma W_k(2x_{k+1} - x_k)\big),

    from :math:`x_0 = A^\top y`, :math:`u_0 = 0`. Read literally, the last dual update is never
    used, so the last layer's :math:`(W_K, \lambda_K)` would be dead weights. We run the same
    sequence of operations grouped so that layer :math:`k` first updates the dual variable with
    :math:`(W_k, \lambda_k)` and then takes the primal step with :math:`W_k^\top`
    (:math:`x_{-1} = x_0`, :math:`u_0 = 0`); every parameter then shapes the output :math:`x_K`.
    :math:`W_k` is a :math:`3\times 3` convolution from ``in_channels`` to ``channels`` feature maps
    (no bias), so a grey model has :math:`9 \cdot 40 + 1 = 361` parameters per layer.

    The primal step is :math:`\tau = 1/\max(\|A^\top A\|, 1)`, estimated at call time by power
    iteration: the gradient step on the data term is then non-expansive for every operator, and
    the learned filters see the same unit step on every operator of norm at most 1 (all the
    training tasks, super-resolution, MRI). A step :math:`1/\|A^\top A\|` would instead scale the
    learned term :math:`\tau W_k^\top u_k` by 4 on bicubic SR x2 (:math:`\|A^\top A\| \approx 1/4`),
    which ruins the transfer of a meta-model to that unseen task (:doc:`/notes`). Because the dual
    variable is projected onto :math:`[-\lambda_k, \lambda_k]`, the :math:`W_k^\top u_k` term is
    bounded whatever :math:`W_k`, so the network is stable for any :math:`\gamma` (default 1; the
    learned :math:`W_k` absorb its scale).

    With ``in_channels=1`` the same filters are applied to every image channel separately, so a
    model meta-trained on grey images also runs on colour images and on complex MRI images stored
    as (real, imaginary) channels, as in the paper's MRI experiment.

    :param int depth: number of layers :math:`K`.
    :param int channels: number of feature maps of :math:`W_k`.
    :param int in_channels: image channels seen by :math:`W_k` (1: channel-wise filters).
    :param int kernel_size: size of the :math:`W_k` filters.
    :param float gamma: dual step size :math:`\gamma`.
    :param float tau: primal step size; ``None`` uses :math:`1/\max(\|A^\top A\|, 1)`.
    :param float init_std: standard deviation of the initial filters.
    :param float init_threshold: initial thresholds :math:`\lambda_k`.
    :param int norm_iters: power iterations used to estimate :math:`\|A^\top A\|`.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta import MetaPDNet
    >>> model = MetaPDNet(depth=20, channels=40)
    >>> sum(p.numel() for p in model.parameters()) // 20  # parameters per layer
    361
    >>> physics = dinv.physics.Downsampling(img_size=(1, 32, 32), factor=2, filter="bicubic")
    >>> y = physics(torch.rand(1, 1, 32, 32))
    >>> model(y, physics).shape
    torch.Size([1, 1, 32, 32])
    """

    # its convolutions have one input or one output channel, where oneDNN is slower (bilevel.backends)
    prefers_native_convolutions = True

    def __init__(
        self,
        depth: int = 20,
        channels: int = 40,
        in_channels: int = 1,
        kernel_size: int = 3,
        gamma: float = 1.0,
        tau: float | None = None,
        init_std: float = 0.05,
        init_threshold: float = 0.01,
        norm_iters: int = 20,
        device="cpu",
    ):
        super().__init__()
        for name, value in (("depth", depth), ("channels", channels), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MetaPDNet {name} must be a positive integer, got {value!r}.")
        for name, value in (("gamma", gamma), ("init_std", init_std)):
            if not value > 0:
                raise ValueError(f"MetaPDNet {name} must be > 0, got {value!r}.")
        if tau is not None and not tau > 0:
            raise ValueError(f"MetaPDNet tau (primal step) must be > 0 or None (1 / max(||A^T A||, 1)), got {tau!r}.")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-size convolutions), got {kernel_size}.")
        self.config = dict(
            depth=depth, channels=channels, in_channels=in_channels, kernel_size=kernel_size,
            gamma=gamma, tau=tau, init_std=init_std, init_threshold=init_threshold, norm_iters=norm_iters,
        )  # rebuilds the model in deepinv_meta.load
        self.depth, self.channels, self.in_channels = depth, channels, in_channels
        self.gamma, self.tau, self.norm_iters = gamma, tau, norm_iters
        self.weight = nn.Parameter(init_std * torch.randn(depth, channels, in_channels, kernel_size, kernel_size))
        self.threshold = nn.Parameter(torch.full((depth,), float(init_threshold)))
        self.to(device)

    def step_size(self, physics, x0: torch.Tensor) -> torch.Tensor | float:
        """Primal step :math:`\\tau` (``1 / max(||A^T A||, 1)`` unless fixed at construction)."""
        if self.tau is not None:
            return self.tau
        return 1.0 / operator_sqnorm(physics, x0, self.norm_iters).clamp_min(1.0)

    def forward(self, y: torch.Tensor, physics, **kwargs) -> torch.Tensor:
        require_linear(physics, type(self).__name__)
        require_dtype(y, self.weight, type(self).__name__)
        x0 = adjoint_image(physics, y, type(self).__name__)
        channels = x0.shape[1]
        if self.in_channels not in (1, channels):
            raise ValueError(
                f"MetaPDNet was built with in_channels={self.in_channels} but the images have "
                f"{channels} channels; build it with in_channels={channels} or in_channels=1 "
                "(channel-wise filters)."
            )
        tau = self.step_size(physics, x0)
        pad = self.weight.shape[-1] // 2
        fold = self.in_channels == 1 and channels > 1  # apply grey filters to each channel

        def W(x, k):
            if fold:
                x = x.reshape(-1, 1, *x.shape[2:])
            return F.conv2d(x, self.weight[k], padding=pad)

        def Wt(u, k):
            out = F.conv_transpose2d(u, self.weight[k], padding=pad)
            return out.reshape(x0.shape) if fold else out

        x_prev, x = x0, x0
        u = None  # u_0 = 0: the first dual step is the projection of gamma W_0 x_0 alone
        for k in range(self.depth):
            lam = self.threshold[k].abs()
            step = W(2 * x - x_prev, k)
            if self.gamma != 1:  # skipped at 1: a full pass over the dual variable, forward and backward
                step = self.gamma * step
            # prox of the conjugate of lam*||.||_1: projection onto the l-inf ball of radius lam
            u = project_linf_ball(step if u is None else u + step, lam)
            x_prev, x = x, x - tau * physics.A_adjoint(physics.A(x) - y) - tau * Wt(u, k)
        return x

r"""Learned variational costs and solvers (Fablet, Drumetz & Rousseau, eqs. 2-5).

A reconstruction minimises, approximately and in a few learned steps, the variational cost

.. math::

    U_\Phi(x, y, A) = \lambda_1 \operatorname{mean}\|Ax - y\|^2 + \lambda_2 \operatorname{mean}\|x - \Phi(x)\|^2,

where :math:`A` is the deepinv physics (for a mask :math:`\Omega` this is the paper's
:math:`\|x - y\|^2_\Omega`) and :math:`\Phi` a prior operator: :class:`PCAPrior`,
:class:`AutoEncoderPrior`, :class:`TwoScaleCNN` (eq. 3) or :class:`ODEPrior` (one RK4 step of a
known ODE). The solvers take ``(cost, y, physics, x0)``: :class:`FSGD` (fixed-step gradient
descent), :class:`FixedPoint` (FP(1): :math:`\Phi(x_0)`) and :class:`LSTMSolver` (eq. 4), whose
update is

.. math::

    g^{(k+1)} = \mathrm{LSTM}\big[\alpha\,\nabla_x U_\Phi(x^{(k)}, y, A), h^{(k)}, c^{(k)}\big], \qquad
    x^{(k+1)} = x^{(k)} - \mathcal{H}(g^{(k+1)}),

with :math:`\alpha` the inverse root-mean-square of the gradient of each sample. Unlike the
test-time optimisers (MetaDIP, MetaSIREN), these solvers iterate on the image :math:`x`, not on
network weights, so they use plain autograd and no :mod:`higher` inner loop; end-to-end training
(eq. 5) goes through :func:`deepinv_meta.bilevel.train_end_to_end`.

Images are ``(B, C, H, W)``; time series ``(B, D, 1, T)`` (see :mod:`deepinv_meta.physics`), so
every module here is a 2-D module, with ``(1, k)`` kernels for series.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch
from torch import nn

from ..bilevel.inner import check_finite
from ..dynamics import SYSTEMS, rk4_step, vector_field
from ..physics import interpolate_in_time
from .zoo import FromPretrained
from ..io import register_model


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).mean(dim=1)


# ---------------------------------------------------------------------------------------- priors Φ
class PCAPrior(nn.Module):
    r"""Linear projection on the first ``components`` principal axes: :math:`\Phi(x) = \mu + P P^\top (x - \mu)`.

    Fitted once with :meth:`fit` (no gradient training); its buffers are saved with the model.

    :param tuple img_size: ``(C, H, W)``.
    :param int components: number of principal components :math:`k`.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.models.variational import PCAPrior
    >>> data = torch.randn(100, 1, 2, 1) * torch.tensor([3.0, 0.1]).view(1, 1, 2, 1)
    >>> prior = PCAPrior((1, 2, 1), components=1).fit(data)
    >>> round(prior.explained_variance_ratio, 2) > 0.99
    True
    """

    def __init__(self, img_size, components: int):
        super().__init__()
        self.img_size = tuple(img_size)
        size = math.prod(self.img_size)
        if not 1 <= components <= size:
            raise ValueError(f"components must be in [1, {size}] for images {self.img_size}, got {components}.")
        self.components = components
        self.config = {"img_size": self.img_size, "components": components}
        self.register_buffer("mean", torch.zeros(1, size))
        self.register_buffer("basis", torch.zeros(components, size))
        self.explained_variance_ratio = float("nan")

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> "PCAPrior":
        """Fit mean and principal axes to ``data`` ``(N, C, H, W)``; returns ``self``."""
        if tuple(data.shape[1:]) != self.img_size:
            raise ValueError(f"data has samples of shape {tuple(data.shape[1:])}, the prior expects {self.img_size}.")
        flat = data.flatten(1).to(self.mean)
        self.mean.copy_(flat.mean(dim=0, keepdim=True))
        _, singular, vh = torch.linalg.svd(flat - self.mean, full_matrices=False)
        self.basis.copy_(vh[: self.components])
        energy = singular**2
        self.explained_variance_ratio = (energy[: self.components].sum() / energy.sum()).item()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1) - self.mean
        return (self.mean + flat @ self.basis.T @ self.basis).view_as(x)


class AutoEncoderPrior(nn.Module):
    r"""Dense auto-encoder :math:`\Phi = \phi\circ\psi` with a ``latent``-dimensional code (paper: 20).

    Encoder and decoder have three dense layers each with ReLU activations in between.

    :param tuple img_size: ``(C, H, W)``.
    :param int latent: code dimension.
    :param tuple hidden: widths of the two hidden layers of the encoder (mirrored in the decoder).
    """

    def __init__(self, img_size, latent: int = 20, hidden=(256, 64)):
        super().__init__()
        self.img_size = tuple(img_size)
        self.config = {"img_size": self.img_size, "latent": latent, "hidden": tuple(hidden)}
        size = math.prod(self.img_size)
        widths = (size, *hidden, latent)
        self.encoder = _dense(widths)
        self.decoder = _dense(widths[::-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x.flatten(1))).view_as(x)


def _dense(widths) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BilinearBlock(nn.Module):
    r"""Convolutional block with a linear and a bilinear (product) branch (Fablet et al., ref. 14).

    :math:`h = \mathrm{ReLU}(W_0 * x)`, output :math:`W_3 * [W_1 * h,\ (W_2 * h)\odot(W_2' * h)]`
    with :math:`W_3` a 1×1 convolution.
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, kernel_size=3):
        super().__init__()
        kernel = _pair(kernel_size)
        padding = tuple(k // 2 for k in kernel)
        self.conv_in = nn.Conv2d(in_channels, hidden, kernel, padding=padding)
        self.linear = nn.Conv2d(hidden, hidden, kernel, padding=padding)
        self.left = nn.Conv2d(hidden, hidden, kernel, padding=padding)
        self.right = nn.Conv2d(hidden, hidden, kernel, padding=padding)
        self.conv_out = nn.Conv2d(2 * hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv_in(x))
        return self.conv_out(torch.cat((self.linear(h), self.left(h) * self.right(h)), dim=1))


class TwoScaleCNN(nn.Module):
    r"""Two-scale CNN prior (eq. 3): :math:`\Phi(x) = \mathrm{Up}(\Phi_1(\mathrm{Dw}(x))) + \Phi_2(x)`.

    Dw is average pooling by ``scale``, Up a transposed convolution with the same stride, and
    :math:`\Phi_{1,2}` are :class:`BilinearBlock` s.

    :param int channels: image channels (components ``D`` for time series).
    :param int hidden: channels inside the blocks (MNIST: 32, about 55k weights; Lorenz: 30).
    :param kernel_size: convolution kernel, e.g. ``3`` for images, ``(1, 3)`` for series.
    :param scale: pooling factor, e.g. ``2`` for images, ``(1, 4)`` for series.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.models.variational import TwoScaleCNN
    >>> phi = TwoScaleCNN(channels=1, hidden=8)
    >>> phi(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(self, channels: int, hidden: int = 32, kernel_size=3, scale=2):
        super().__init__()
        self.config = {"channels": channels, "hidden": hidden, "kernel_size": kernel_size, "scale": scale}
        self.scale = _pair(scale)
        self.down = nn.AvgPool2d(self.scale)
        self.coarse = BilinearBlock(channels, hidden, channels, kernel_size)
        self.up = nn.ConvTranspose2d(channels, channels, self.scale, stride=self.scale)
        self.fine = BilinearBlock(channels, hidden, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.scale[0] or x.shape[-1] % self.scale[1]:
            raise ValueError(
                f"TwoScaleCNN with scale {self.scale} needs H and W divisible by it, got {tuple(x.shape[-2:])}; "
                "crop or pad the data, or choose another scale."
            )
        return self.up(self.coarse(self.down(x))) + self.fine(x)


class ODEPrior(nn.Module):
    r"""Physics-informed prior for series ``(B, D, 1, T)``: one RK4 step of a known ODE.

    :math:`\Phi(x)_{t+1} = \mathrm{RK4}(x_t)` and :math:`\Phi(x)_0 = x_0`, so that
    :math:`\|x - \Phi(x)\|^2` measures how far :math:`x` is from a trajectory of the ODE.

    :param str system: ``"lorenz63"`` or ``"lorenz96"`` (see :mod:`deepinv_meta.dynamics`).
    :param float dt: time step of the series (default: the system's sampling step).
    :param float offset: for standardised series :math:`x = (z - \text{offset})/\text{scale}`, the
        ODE runs on the physical :math:`z`.
    :param float scale: see ``offset``.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.dynamics import sample_sequences, simulate
    >>> from deepinv_meta.models.variational import ODEPrior
    >>> x = sample_sequences(simulate("lorenz63", 300, spin_up=100), count=2, length=50)
    >>> residual = (x - ODEPrior("lorenz63")(x)).pow(2).mean() / x.var()
    >>> bool(residual < 1e-6)
    True
    """

    def __init__(self, system: str, dt: float | None = None, offset: float = 0.0, scale: float = 1.0):
        super().__init__()
        dim, default_dt, _ = SYSTEMS.get(system, (None, None, None))
        if dim is None:
            raise ValueError(f"Unknown dynamical system {system!r}; use one of {sorted(SYSTEMS)}.")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}.")
        self.system, self.dim, self.dt = system, dim, default_dt if dt is None else dt
        self.offset, self.scale = float(offset), float(scale)
        self.config = {"system": system, "dt": self.dt, "offset": self.offset, "scale": self.scale}
        self.field = vector_field(system)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim or x.shape[2] != 1:
            raise ValueError(f"ODEPrior({self.system!r}) expects series (B, {self.dim}, 1, T), got {tuple(x.shape)}.")
        series = x[:, :, 0] * self.scale + self.offset
        ahead = (rk4_step(self.field, series[..., :-1], self.dt) - self.offset) / self.scale
        return torch.cat((x[:, :, 0, :1], ahead), dim=-1)[:, :, None]


# ---------------------------------------------------------------------------------------- cost U_Φ
class VariationalCost(nn.Module):
    r"""The variational cost :math:`U_\Phi(x, y, A) = \lambda_1 \operatorname{mean}\|Ax - y\|^2 + \lambda_2 \operatorname{mean}\|x - \Phi(x)\|^2`.

    :param torch.nn.Module prior: the operator :math:`\Phi`.
    :param float lambda_data: :math:`\lambda_1`.
    :param float lambda_prior: :math:`\lambda_2`.
    :param bool learn_weights: learn :math:`\lambda_{1,2}` (stored as logarithms, so they stay positive).

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.models.variational import VariationalCost
    >>> cost = VariationalCost(nn.Identity())
    >>> physics = dinv.physics.Inpainting((1, 4, 4), mask=torch.ones(1, 4, 4))
    >>> x = torch.zeros(1, 1, 4, 4)
    >>> cost(x, torch.ones(1, 1, 4, 4), physics)
    tensor([1.])
    """

    def __init__(self, prior: nn.Module, lambda_data: float = 1.0, lambda_prior: float = 1.0, learn_weights: bool = False):
        super().__init__()
        if lambda_data <= 0 or lambda_prior <= 0:
            raise ValueError(f"lambda_data and lambda_prior must be > 0, got {lambda_data}, {lambda_prior}.")
        self.prior = prior
        self.learn_weights = learn_weights
        log_weights = torch.tensor([math.log(lambda_data), math.log(lambda_prior)])
        if learn_weights:
            self.log_weights = nn.Parameter(log_weights)
        else:
            self.register_buffer("log_weights", log_weights)

    @property
    def weights(self) -> tuple[float, float]:
        """:math:`(\\lambda_1, \\lambda_2)` as floats."""
        lam = self.log_weights.detach().exp()
        return lam[0].item(), lam[1].item()

    def forward(self, x: torch.Tensor, y: torch.Tensor, physics) -> torch.Tensor:
        """The cost of each sample, a tensor ``(B,)``."""
        lam = self.log_weights.exp()
        data = _per_sample_mean((physics.A(x) - y) ** 2)
        prior = _per_sample_mean((x - self.prior(x)) ** 2)
        return lam[0] * data + lam[1] * prior

    def gradient(self, x: torch.Tensor, y: torch.Tensor, physics, create_graph: bool = False) -> torch.Tensor:
        r""":math:`\nabla_x U_\Phi(x, y, A)`; with ``create_graph`` it stays differentiable w.r.t. the weights."""
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self(x, y, physics).sum(), x, create_graph=create_graph)
        return grad


# ---------------------------------------------------------------------------------------- solvers
def iterate(update, x0: torch.Tensor, iterations: int, callback=None) -> torch.Tensor:
    """:math:`x^{(k+1)} = \mathrm{update}(x^{(k)})` from ``x0``, calling ``callback(k + 1, x)`` after each step."""
    x = x0
    for k in range(iterations):
        x = update(x)
        if callback is not None:
            callback(k + 1, x)
    return x


class FSGD(nn.Module):
    r"""Fixed-step gradient descent on the cost: :math:`x^{(k+1)} = x^{(k)} - \tau \nabla_x U_\Phi(x^{(k)})`.

    :param int iterations: number of steps.
    :param float stepsize: :math:`\tau`.
    """

    def __init__(self, iterations: int = 100, stepsize: float = 1.0):
        super().__init__()
        if iterations < 0 or stepsize <= 0:
            raise ValueError(f"iterations must be >= 0 and stepsize > 0, got {iterations}, {stepsize}.")
        self.iterations, self.stepsize = iterations, stepsize

    @property
    def config(self) -> dict:
        return {"iterations": self.iterations, "stepsize": self.stepsize}

    def forward(self, cost, y, physics, x0, callback=None, track: bool = False):
        return iterate(lambda x: x - self.stepsize * cost.gradient(x, y, physics, create_graph=track), x0,
                       self.iterations, callback)


class FixedPoint(nn.Module):
    r"""Fixed-point iterations :math:`x^{(k+1)} = \Phi(x^{(k)})`; FP(1) is the direct inversion :math:`\Phi(x_0)`."""

    def __init__(self, iterations: int = 1):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}.")
        self.iterations = iterations

    @property
    def config(self) -> dict:
        return {"iterations": self.iterations}

    def forward(self, cost, y, physics, x0, callback=None, track: bool = False):
        return iterate(cost.prior, x0, self.iterations, callback)


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell: the four gates are one convolution of ``[input, h]``."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size=3):
        super().__init__()
        kernel = _pair(kernel_size)
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel,
                               padding=tuple(k // 2 for k in kernel))

    def forward(self, inputs: torch.Tensor, state):
        h, c = state
        i, f, o, g = self.gates(torch.cat((inputs, h), dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class LSTMSolver(nn.Module):
    r"""Learned gradient-based solver (eq. 4): a convolutional LSTM fed with the normalised gradient.

    :param int channels: image channels (components ``D`` for series).
    :param int hidden_channels: LSTM hidden channels (paper, MNIST: 5). Each update :math:`\mathcal{H}(g)`
        lies in a space of this dimension per pixel, so fewer hidden channels than ``channels``
        restricts the solver's steps (:doc:`/notes`).
    :param int iterations: solver steps (the paper grows them from 5 to 20 during training).
    :param kernel_size: LSTM convolution kernel, e.g. ``3`` for images, ``(1, 3)`` for series.
    """

    def __init__(self, channels: int, hidden_channels: int = 5, iterations: int = 10, kernel_size=3):
        super().__init__()
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}.")
        self.iterations = iterations
        self._shape = {"channels": channels, "hidden_channels": hidden_channels, "kernel_size": kernel_size}
        self.cell = ConvLSTMCell(channels, hidden_channels, kernel_size)
        self.output = nn.Conv2d(hidden_channels, channels, 1, bias=False)  # the linear map H
        # H starts at zero: the untrained solver leaves x0 unchanged instead of taking O(1) random steps
        nn.init.zeros_(self.output.weight)

    @property
    def config(self) -> dict:
        return {**self._shape, "iterations": self.iterations}

    def forward(self, cost, y, physics, x0, callback=None, track: bool = False):
        x = x0
        hidden = x0.new_zeros((x0.shape[0], self.cell.hidden_channels, *x0.shape[2:]))
        state = (hidden, hidden)
        for k in range(self.iterations):
            grad = cost.gradient(x, y, physics, create_graph=track)
            alpha = grad.flatten(1).pow(2).mean(dim=1).add(1e-12).rsqrt().view(-1, *[1] * (grad.dim() - 1))
            state = self.cell(alpha * grad, state)
            x = x - self.output(state[0])
            if callback is not None:
                callback(k + 1, x)
        return x


# ---------------------------------------------------------------------------------------- reconstructor
@register_model
class VariationalReconstructor(FromPretrained, dinv.models.Reconstructor):
    r"""A variational cost and a solver as one deepinv reconstructor: ``model(y, physics)``.

    The solver starts from the zero-filled :math:`x_0 = A^\top y` (``init="adjoint"``) or, for time
    series observed through a mask, from the observations interpolated linearly in time
    (``init="interpolation"``, :func:`deepinv_meta.physics.interpolate_in_time`, as the authors'
    Lorenz-63 code). In training mode with gradients enabled the solver's iterations are
    differentiated (end-to-end training, eq. 5); otherwise (``eval()``, ``torch.no_grad()``,
    ``deepinv.test``) the cost gradients are still computed, with gradients enabled internally, and
    the result is detached.

    :param VariationalCost cost: :math:`U_\Phi`.
    :param torch.nn.Module solver: :class:`FSGD`, :class:`FixedPoint` or :class:`LSTMSolver`.
    :param str init: the solver's starting point, ``"adjoint"`` or ``"interpolation"`` (needs a
        :class:`deepinv.physics.Inpainting` physics).
    :param tuple normalisation: ``(offset, scale)`` of the data the model was trained on, :math:`z = (x - o)/s`
        (e.g. standardised MNIST digits). The model then takes measurements of images in their own intensities
        and returns such images: with a linear :math:`A`, :math:`y_z = (y - A(o\mathbf{1}))/s` is what
        the solver sees, and :math:`\hat x = s\hat z + o`. Default ``(0, 1)``: none.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.models.variational import LSTMSolver, TwoScaleCNN, VariationalCost, VariationalReconstructor
    >>> model = VariationalReconstructor(VariationalCost(TwoScaleCNN(1, hidden=4)), LSTMSolver(1, iterations=3))
    >>> physics = dinv.physics.Inpainting((1, 8, 8), mask=0.7)
    >>> with torch.no_grad():
    ...     x_hat = model(physics(torch.rand(2, 1, 8, 8)), physics)
    >>> x_hat.shape, x_hat.requires_grad
    (torch.Size([2, 1, 8, 8]), False)
    """

    INITS = ("adjoint", "interpolation")

    def __init__(self, cost: VariationalCost, solver: nn.Module, init: str = "adjoint", normalisation=(0.0, 1.0)):
        super().__init__()
        offset, scale = (float(v) for v in normalisation)
        if not (math.isfinite(offset) and scale > 0 and math.isfinite(scale)):
            raise ValueError(f"normalisation must be (offset, scale) with a finite offset and scale > 0, got {normalisation!r}.")
        self.normalisation = (offset, scale)
        if not isinstance(cost, VariationalCost):
            raise TypeError(f"cost must be a VariationalCost, got {type(cost).__name__}.")
        if init not in self.INITS:
            raise ValueError(f"init must be one of {self.INITS}, got {init!r}.")
        self.cost = cost
        self.solver = solver
        self.init = init

    @property
    def prior(self) -> nn.Module:
        return self.cost.prior

    @property
    def learned_config_keys(self) -> tuple:
        """Entries of :attr:`config` that training changes (the learned weights of the cost), which a resumed
        trainer does not compare."""
        return ("lambda_data", "lambda_prior") if self.cost.learn_weights else ()

    @property
    def config(self) -> dict:
        """Constructor description used by :func:`deepinv_meta.save` / :func:`deepinv_meta.load`."""
        for part in (self.cost.prior, self.solver):
            if type(part).__name__ not in COMPONENTS or not hasattr(part, "config"):
                # AttributeError: ``getattr(model, "config", None)`` (save, MetaTrainer checkpoints) sees no config
                raise AttributeError(f"{type(part).__name__} cannot be rebuilt by name; save model.state_dict() instead.")
        lam = self.cost.weights
        return {
            "prior": [type(self.cost.prior).__name__, self.cost.prior.config],
            "solver": [type(self.solver).__name__, self.solver.config],
            "lambda_data": lam[0], "lambda_prior": lam[1], "learn_weights": self.cost.learn_weights,
            "init": self.init,
            # only when set: configs (and checkpoints) of models without one stay as they were
            **({"normalisation": list(self.normalisation)} if self.normalisation != (0.0, 1.0) else {}),
        }

    @classmethod
    def from_config(cls, prior, solver, lambda_data, lambda_prior, learn_weights, init="adjoint",
                    normalisation=(0.0, 1.0)) -> "VariationalReconstructor":
        """Rebuild from :attr:`config` (weights are then loaded from the state dict)."""
        build = lambda spec: COMPONENTS[spec[0]](**spec[1])  # noqa: E731
        return cls(VariationalCost(build(prior), lambda_data, lambda_prior, learn_weights), build(solver), init,
                   normalisation)

    def starting_point(self, y: torch.Tensor, physics) -> torch.Tensor:
        """:math:`x_0`: :math:`A^\\top y`, or the observations interpolated in time."""
        if self.init == "adjoint":
            return physics.A_adjoint(y)
        if not isinstance(physics, dinv.physics.Inpainting):  # other decomposable physics' masks are spectral
            raise ValueError(f"init='interpolation' needs a physics with a mask of observed entries "
                             f"(deepinv.physics.Inpainting), got {type(physics).__name__}. Use init='adjoint'.")
        return interpolate_in_time(y, physics.mask)

    def forward(self, y: torch.Tensor, physics, callback=None, **kwargs) -> torch.Tensor:
        r"""Reconstruct from ``y``; ``callback(k, x)`` is called after each solver step (energy pathways)."""
        if not isinstance(physics, dinv.physics.Physics):
            raise TypeError(f"physics must be a deepinv.physics.Physics, got {type(physics).__name__}.")
        track = self.training and torch.is_grad_enabled()
        offset, scale = self.normalisation
        normalised = (offset, scale) != (0.0, 1.0)
        if normalised:  # into the units of the training data
            with torch.no_grad():
                y = (y - physics.A(torch.full_like(physics.A_adjoint(y), offset))) / scale
        x = self.solver(self.cost, y, physics, self.starting_point(y, physics), callback=callback, track=track)
        check_finite(x, f"output of {type(self.solver).__name__}")
        if normalised:
            x = x * scale + offset
        return x if track else x.detach()


COMPONENTS = {c.__name__: c for c in (PCAPrior, AutoEncoderPrior, TwoScaleCNN, ODEPrior, FSGD, FixedPoint, LSTMSolver)}

r"""deepinv's classical and plug-and-play solvers as baselines, with a small grid search.

Every baseline is a :class:`deepinv.models.Reconstructor` (``forward(y, physics)``), so meta-models and
baselines are evaluated by the same code. The variational baselines solve

.. math:: \min_x \tfrac12\|Ax - y\|^2 + \lambda\, g(x)

by half-quadratic splitting (deepinv's ``HQS`` through ``optim_builder``): an exact data-fidelity
proximal step, then the proximal operator of :math:`g` (soft-thresholding of orthonormal wavelet
coefficients, or the TGV proximal operator), i.e. deepinv's ``WaveletDenoiser`` / ``TGVDenoiser``
with threshold :math:`\lambda`. ``dpir`` is deepinv's :class:`deepinv.optim.DPIR` with any denoiser
(here FFDNet or DnCNN weights loaded offline by :mod:`deepinv_meta.weights`).
"""

from __future__ import annotations

import copy
import itertools

import deepinv as dinv
import torch
from torch import nn

from .physics import Adjoint, Bicubic, complex_magnitude, to_physics_input  # noqa: F401 (public here too)


class ChannelwiseDenoiser(nn.Module):
    """Apply a single-channel denoiser to each channel separately (grey weights on complex MRI images).

    :param torch.nn.Module denoiser: a denoiser ``denoiser(x, sigma)`` for one-channel images.
    """

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x, sigma=None, **kwargs):
        b, c = x.shape[:2]
        out = self.denoiser(x.reshape(b * c, 1, *x.shape[2:]), sigma)
        return out.reshape(x.shape)


def hqs(denoiser: nn.Module, ths, iterations: int = 50, stepsize=1.0, init=None, unfold: bool = False
        ) -> dinv.optim.BaseOptim:
    r"""HQS with a proximal/denoising step ``denoiser(x, ths)``, as a deepinv reconstructor.

    With ``unfold=True`` the iterations are differentiable (deepinv runs them under ``no_grad``
    otherwise), so the denoiser can be trained end to end through them (Zhao, Table 4).

    :param ths: threshold (or list, one per iteration).
    :param stepsize: data-fidelity proximal step :math:`\gamma` (or list).
    :param Callable init: ``init(y, physics)`` gives the first iterate (default :math:`A^\top y`). Problems
        whose adjoint leaves pixels empty (decimation SR) need an interpolating start, as DPIR uses
        bicubic upsampling: a prior with a small threshold barely fills zeros.
    """
    return dinv.optim.optim_builder(
        "HQS",
        prior=dinv.optim.PnP(denoiser=denoiser),
        data_fidelity=dinv.optim.L2(),
        params_algo={"stepsize": stepsize, "g_param": ths, "lambda": 1.0},
        max_iter=iterations,
        early_stop=False,
        custom_init=init,
        unfold=unfold,
        trainable_params=[],
    )


def wavelet(ths: float, iterations: int = 50, wv: str = "db8", level: int = 3, init=None, device="cpu"):
    r"""Sparse orthonormal-wavelet prior :math:`\lambda\|\Psi x\|_1` (detail coefficients) solved by HQS.

    Needs the optional package ``ptwt`` (``pip install ptwt``), as deepinv's wavelets do.
    """
    try:
        import ptwt  # noqa: F401  (deepinv imports it lazily; fail here with the fix)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the wavelet baseline needs the package ptwt: pip install ptwt") from error
    denoiser = dinv.models.WaveletDenoiser(level=level, wv=wv, non_linearity="soft", device=device)
    return hqs(denoiser, ths, iterations, init=init)


def tgv(ths: float, iterations: int = 20, inner_iterations: int = 100, init=None):
    r"""Total generalised variation prior (Bredies et al., 2010) solved by HQS with deepinv's ``TGVDenoiser``."""
    return hqs(dinv.models.TGVDenoiser(n_it_max=inner_iterations), ths, iterations, init=init)


def tv(ths: float, iterations: int = 20, inner_iterations: int = 100, init=None):
    r"""Total variation prior :math:`\lambda\|\nabla x\|_{1,2}` solved by HQS with deepinv's ``TVDenoiser``."""
    return hqs(dinv.models.TVDenoiser(n_it_max=inner_iterations), ths, iterations, init=init)


def dpir(denoiser: nn.Module, sigma: float, iterations: int = 8, init=None):
    r"""DPIR (Zhang et al., 2021): HQS with the denoiser noise level decreasing geometrically from 49/255 to ``sigma``.

    The schedule is deepinv's :func:`deepinv.optim.dpir.get_DPIR_params` (data step
    :math:`\gamma_k = (\sigma_k / \max(\sigma, 0.01))^2 / 0.23`), with a free number of iterations
    (DPIR uses 8 for deblurring, 24 for super-resolution, with a bicubic start).

    :param torch.nn.Module denoiser: a noise-level-conditioned grey denoiser (FFDNet, DRUNet), applied
        channel by channel.
    :param float sigma: the final noise level (the measurement noise level; a small value for noiseless problems).
    :param int iterations: HQS iterations.
    :param Callable init: first iterate ``init(y, physics)`` (default :math:`A^\top y`).
    """
    sigmas = torch.logspace(torch.log10(torch.tensor(49.0 / 255)), torch.log10(torch.tensor(float(sigma))), iterations)
    stepsizes = (sigmas / max(0.01, sigma)) ** 2 / 0.23
    return hqs(ChannelwiseDenoiser(denoiser), sigmas.tolist(), iterations, stepsize=stepsizes.tolist(), init=init)


class PnPADMM(dinv.models.Reconstructor):
    r"""Plug-and-play ADMM (Venkatakrishnan et al.) with any denoiser, for linear and non-linear physics.

    .. math::

        x_{k+1} = \operatorname{prox}_{\gamma f}(z_k - u_k), \quad
        z_{k+1} = D_\sigma(x_{k+1} + u_k), \quad u_{k+1} = u_k + x_{k+1} - z_{k+1},

    with :math:`f(x) = \frac12\|A(x) - y\|^2`. For a linear physics the proximal step is deepinv's
    ``physics.prox_l2``; otherwise it is approximated by ``data_steps`` gradient steps with
    backtracking (as the MetaDIP paper's 10 sub-gradient steps for phase retrieval).

    :param torch.nn.Module denoiser: ``denoiser(x, sigma)``.
    :param float sigma: denoiser strength. :param float gamma: ADMM penalty (data step size).
    :param int iterations: ADMM iterations.
    :param bool complex_physics: cast images to complex before the physics (phase retrieval).
    :param Callable init: first iterate ``init(y, physics)``. Default: :math:`A^\dagger y` for a real
        physics; mid-grey for phase retrieval (``complex_physics``), whose ``A_dagger`` is a spectral
        estimate of arbitrary sign and scale, a poor start for PnP (:doc:`/notes`).
    """

    def __init__(self, denoiser, sigma: float, gamma: float, iterations: int = 20, data_steps: int = 10,
                 complex_physics: bool = False, init=None):
        super().__init__()
        self.denoiser, self.sigma, self.gamma, self.iterations = denoiser, sigma, gamma, iterations
        self.data_steps, self.complex_physics, self.init = data_steps, complex_physics, init

    def _data_prox(self, v, y, physics):
        if isinstance(physics, dinv.physics.LinearPhysics) and not self.complex_physics:
            return physics.prox_l2(v, y, self.gamma)

        def objective(x):
            ax = physics.A(to_physics_input(x, self.complex_physics))
            return 0.5 * ((ax - y) ** 2).sum() + ((x - v) ** 2).sum() / (2 * self.gamma)

        x, step = v.clone(), 1.0
        with torch.enable_grad():
            for _ in range(self.data_steps):
                x = x.detach().requires_grad_(True)
                value = objective(x)
                (grad,) = torch.autograd.grad(value, x)
                with torch.no_grad():  # backtracking: halve the step until the objective decreases enough
                    while step > 1e-12 and objective(x - step * grad) > value - 0.5 * step * (grad**2).sum():
                        step /= 2
                    x = x - step * grad
                    step *= 2
        return x.detach()

    def forward(self, y, physics, callback=None, **kwargs):
        """Run the iterations; ``callback(k, z_k)`` after iteration ``k`` (1-based) lets one run score
        every shorter iteration count too (the first ``k`` iterations do not depend on the total)."""
        if self.init is not None:
            x0 = self.init(y, physics)
        elif self.complex_physics:
            x0 = torch.full_like(physics.A_adjoint(y).real, 0.5)
        else:
            x0 = physics.A_dagger(y)
        z, u = x0.clamp(0, 1), torch.zeros_like(x0)
        for k in range(self.iterations):
            x = self._data_prox(z - u, y, physics)
            z = self.denoiser(x + u, self.sigma)
            u = u + x - z
            if callback is not None:
                callback(k + 1, z)
        return z


class VanillaDIP(dinv.models.Reconstructor):
    r"""Deep Image Prior from a random initialisation, as the MetaDIP paper runs it (Ulyanov et al.).

    For each image, a freshly initialised copy of the generator (the architecture of
    :class:`~deepinv_meta.models.MetaDIP`, same seed every call, so results do not depend on earlier
    calls, unlike ``deepinv.models.DeepImagePrior``) is fitted by Adam on :math:`\|A g_\theta(\gamma(z +
    \eta_k)) - y\|^2` with a fresh latent jitter :math:`\eta_k \sim \mathcal{N}(0, s^2)` at every
    iteration; the output is the exponential moving average of the iterates.

    :param tuple img_size: ``(C, H, W)``.
    :param int iterations: fitting iterations (paper: 50 and 1000).
    :param float lr: Adam learning rate.
    :param float jitter: standard deviation :math:`s` of the latent jitter.
    :param float ema: EMA decay of the outputs (0: last iterate).
    :param dict generator: keyword arguments of :class:`~deepinv_meta.models.MetaDIP` for the architecture.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.baselines import VanillaDIP
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> dip = VanillaDIP((1, 16, 16), iterations=3, generator={"channels": (8, 16)})
    >>> dip(physics(torch.rand(1, 1, 16, 16)), physics).shape
    torch.Size([1, 1, 16, 16])
    """

    def __init__(self, img_size, iterations: int = 1000, lr: float = 1e-2, jitter: float = 1 / 30, ema: float = 0.99,
                 generator: dict | None = None):
        from .models import MetaDIP

        super().__init__()
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}.")
        # random init, never trained; no TV: vanilla DIP fits the data term only
        self.template = MetaDIP(img_size, steps=0, **{**(generator or {}), "tv_weight": 0.0})
        self.iterations, self.lr, self.jitter, self.ema = iterations, lr, jitter, ema

    def forward(self, y, physics, callback=None, **kwargs):
        """``callback(k, x_k)`` receives the current output (EMA) after iteration ``k`` (1-based)."""
        from .bilevel.inner import check_finite

        template = self.template
        template.check_inputs(y, physics)
        outputs = []
        for i in range(y.shape[0]):
            net = copy.deepcopy(template.net)
            optimizer = torch.optim.Adam(net.parameters(), lr=self.lr)
            rng = torch.Generator(device=y.device).manual_seed(i)
            average = None
            with torch.enable_grad():
                for k in range(self.iterations):
                    noise = torch.randn(template.z.shape, generator=rng, device=y.device, dtype=y.dtype)
                    x = net(template.fourier(template.z + self.jitter * noise))
                    loss = template.inner_loss(x, y[i: i + 1], physics)
                    check_finite(loss, f"DIP loss at iteration {k}")
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    x = x.detach()
                    average = x if average is None else self.ema * average + (1 - self.ema) * x
                    if callback is not None:
                        callback(k + 1, average)
            outputs.append(average)
        return torch.cat(outputs)


class FromAdjoint(dinv.models.Reconstructor):
    r"""Start ``module`` from :math:`x_0 = A^\top y`: a solver ``module(x0, y, physics)`` (e.g.
    :class:`~deepinv_meta.models.REDFixedPoint`), or with ``image_only=True`` a network ``module(x0)``
    (the supervised UNet baseline of Zhao, Tables 1-2)."""

    def __init__(self, module: nn.Module, image_only: bool = False):
        super().__init__()
        self.module, self.image_only = module, image_only

    def forward(self, y, physics, **kwargs):
        x0 = physics.A_adjoint(y)
        return self.module(x0) if self.image_only else self.module(x0, y, physics)


def BackProjectionNet(net: nn.Module) -> FromAdjoint:
    r"""A network applied to :math:`A^\top y` (``FromAdjoint(net, image_only=True)``)."""
    return FromAdjoint(net, image_only=True)


class SparseCodingInpainter(dinv.models.Reconstructor):
    r"""Dictionary-learning inpainting by iterative coding-decoding (Mairal et al.; Fablet et al., Table 1 "DICT").

    Each image is coded on a dictionary learnt on clean training images (scikit-learn's
    ``MiniBatchDictionaryLearning``), decoded, and its observed pixels are put back; the last
    decoding is returned as is. The physics must be a mask (``physics.mask``, e.g. ``Inpainting``).

    :param numpy.ndarray dictionary: atoms ``(K, C*H*W)``.
    :param numpy.ndarray mean: the training mean ``(C*H*W,)`` removed before coding.
    :param str algorithm: ``"omp"`` (``sparsity`` non-zero coefficients) or ``"lasso"`` (penalty ``alpha``).
    :param int iterations: coding-decoding rounds.
    """

    def __init__(self, dictionary, mean, algorithm: str = "omp", sparsity: int = 10, alpha: float = 0.1,
                 iterations: int = 10):
        super().__init__()
        if algorithm not in ("omp", "lasso"):
            raise ValueError(f"algorithm must be 'omp' or 'lasso', got {algorithm!r}.")
        self.dictionary, self.mean = dictionary, mean
        self.algorithm, self.sparsity, self.alpha, self.iterations = algorithm, sparsity, alpha, iterations

    @classmethod
    def fit(cls, images: torch.Tensor, atoms: int = 100, seed: int = 0, **kwargs) -> "SparseCodingInpainter":
        """Learn ``atoms`` atoms on clean images ``(N, C, H, W)`` (needs scikit-learn)."""
        try:
            from sklearn.decomposition import MiniBatchDictionaryLearning
        except ImportError as error:
            raise ImportError("SparseCodingInpainter needs scikit-learn: pip install scikit-learn") from error
        flat = images.flatten(1).double().numpy()
        mean = flat.mean(axis=0)
        learner = MiniBatchDictionaryLearning(n_components=atoms, batch_size=256, max_iter=20, random_state=seed)
        dictionary = learner.fit(flat - mean).components_
        return cls(dictionary, mean, **kwargs)

    def code_decode(self, flat):
        from sklearn.decomposition import sparse_encode

        if self.algorithm == "omp":
            codes = sparse_encode(flat - self.mean, self.dictionary, algorithm="omp", n_nonzero_coefs=self.sparsity)
        else:
            codes = sparse_encode(flat - self.mean, self.dictionary, algorithm="lasso_lars", alpha=self.alpha)
        return codes @ self.dictionary + self.mean

    def forward(self, y, physics, **kwargs):
        mask = getattr(physics, "mask", None)
        if mask is None:
            raise TypeError(f"SparseCodingInpainter needs a mask physics (e.g. Inpainting), got {type(physics).__name__}.")
        shape = y.shape
        mask = torch.broadcast_to(mask, shape).flatten(1).double().cpu().numpy()
        observed = physics.A_adjoint(y).flatten(1).double().cpu().numpy()
        x = observed + (1 - mask) * self.mean
        for k in range(self.iterations):
            decoded = self.code_decode(x)
            x = decoded if k == self.iterations - 1 else mask * observed + (1 - mask) * decoded
        return torch.from_numpy(x).to(y).view(shape)


def psnr_per_image(reconstructor, physics, y, x, *, magnitude: bool = False, batch_size: int = 8) -> torch.Tensor:
    r"""PSNR of ``reconstructor(y, physics)`` against ``x`` for each image (``magnitude=True``: of
    :math:`|x|` for two-channel complex images, as MRI is scored), computed without gradients."""
    metric = dinv.loss.metric.PSNR()
    values = []
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            x_hat = reconstructor(y[start: start + batch_size], physics)
            target = x[start: start + batch_size]
            if magnitude:
                x_hat, target = complex_magnitude(x_hat), complex_magnitude(target)
            values.append(metric(x_hat.clamp(0, 1), target))
    return torch.cat(values)


# the tunable baselines by name, with the grids the command line searches (the benchmarks store their own)
BASELINE_GRIDS = {
    "wavelet": {"ths": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]},
    "tv": {"ths": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]},
    "tgv": {"ths": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]},
    "dpir": {"sigma": [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255], "iterations": [8, 24]},
}


def baseline_builder(name: str, *, denoiser: nn.Module | None = None, init=None, device="cpu",
                     wavelet_iterations: int = 50, tgv_iterations: int = 10):
    r"""``build(**params)`` for the baseline ``name`` (``"wavelet"``, ``"tv"``, ``"tgv"`` or ``"dpir"``), whose grid
    is :data:`BASELINE_GRIDS` ``[name]``; ``dpir`` needs a ``denoiser`` (:func:`deepinv_meta.weights.load_denoiser`).

    :param Callable init: first iterate ``init(y, physics)``, e.g. :class:`Bicubic` for decimation SR.
    :param int tgv_iterations: HQS iterations of ``tv`` and ``tgv`` (each runs an inner proximal solver).

    :Examples:

    >>> from deepinv_meta.baselines import BASELINE_GRIDS, baseline_builder
    >>> build = baseline_builder("tgv")
    >>> solver = build(ths=BASELINE_GRIDS["tgv"]["ths"][0])
    """
    if name == "wavelet":
        return lambda ths: wavelet(ths, iterations=wavelet_iterations, init=init, device=device)
    if name == "tv":
        return lambda ths: tv(ths, iterations=tgv_iterations, init=init)
    if name == "tgv":
        return lambda ths: tgv(ths, iterations=tgv_iterations, init=init)
    if name == "dpir":
        if denoiser is None:
            raise ValueError("the dpir baseline needs a denoiser: deepinv_meta.weights.load_denoiser(path or 'drunet').")
        return lambda sigma, iterations: dpir(denoiser, sigma, iterations, init=init)
    raise ValueError(f"unknown baseline {name!r}; choose among {sorted(BASELINE_GRIDS)}.")


def grid_edges(params: dict, grid: dict) -> list[str]:
    """The names of ``params`` whose best value is the smallest or largest of its ``grid`` (of two or more
    values): the optimum may lie outside the grid, so the baseline may be under-tuned.

    >>> grid_edges({"ths": 0.1, "iterations": 8}, {"ths": [0.01, 0.1, 1.0], "iterations": [8, 24]})
    ['iterations']
    """
    return [k for k, v in params.items() if len(grid[k]) > 1 and v in (min(grid[k]), max(grid[k]))]


def grid_search(build, grid: dict, physics, y, x, *, magnitude: bool = False, progress=None):
    r"""Try every combination of ``grid`` (``build(**params)`` makes a reconstructor) on ``(y, x)``.

    :return: ``(best_params, best_mean_psnr, trials)`` where ``trials`` lists ``(params, mean_psnr)``.
    """
    names = list(grid)
    trials = []
    for values in itertools.product(*(grid[name] for name in names)):
        params = dict(zip(names, values))
        score = psnr_per_image(build(**params), physics, y, x, magnitude=magnitude).mean().item()
        trials.append((params, score))
        if progress:
            progress(params, score)
    best_params, best_score = max(trials, key=lambda trial: trial[1])
    return best_params, best_score, trials

r"""Operators: unseen-task operators by name, and the physics pieces deepinv lacks.

- :class:`OperatorSpec` is an operator by name (``"sr"``, ``"mri"``, ...) with its parameters, noise and
  seed: the one description that the command line, the demo, ``reconstruct`` and the benchmarks build
  from (:func:`build_physics`), store with adapted models and read back. It owns the rules that travel
  with an operator: super-resolution is the Meta-Prior paper's decimation (:func:`decimation`), MRI takes
  two-channel complex images (:func:`as_complex`) and is scored on their magnitude
  (:func:`complex_magnitude`), and each operator comes with its no-learning reconstructions
  (:class:`Adjoint`, and :class:`Bicubic` for super-resolution). :class:`BorderPadded` and :class:`Projected`
  wrap a reconstructor: the border rule of super-resolution, the projection onto noiseless measurements.
- Mask generators for partially observed data (Fablet, Drumetz & Rousseau, section 4), and the
  real-to-complex cast for physics built on complex matrices.

Both draw masks for deepinv's :class:`deepinv.physics.Inpainting`, whose measurements are
:math:`y = \Omega \odot (x + n)`, through the usual ``physics.update(**generator.step(batch_size))``.

Time series of ``D`` components and ``T`` time steps are stored as ``(B, D, 1, T)`` tensors: the
components are channels and time is the width of a one-pixel-high image, so that deepinv's
``Inpainting``, the task machinery and 2-D convolutions with ``(1, k)`` kernels apply unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import deepinv as dinv
import torch
from deepinv.physics.generator import PhysicsGenerator

# operator name -> its parameters and their defaults (the command line's --physics choices)
PHYSICS = {
    "sr": {"factor": 2},
    "inpainting": {"ratio": 0.5},
    "mri": {"acceleration": 4, "center_fraction": 0.08},
    "blur": {"blur_sigma": 1.0},
    "denoising": {},
    "cs": {"ratio": 0.25},
}


def physics_parameters(name: str, **params) -> dict:
    """The parameters of the operator ``name`` (:data:`PHYSICS` defaults updated by ``params``); an
    unknown name or parameter is an error that lists the valid ones."""
    if name not in PHYSICS:
        raise ValueError(f"unknown physics {name!r}; choose among {sorted(PHYSICS)}.")
    unknown = set(params) - set(PHYSICS[name])
    if unknown:
        raise ValueError(f"physics {name!r} takes {sorted(PHYSICS[name]) or 'no parameters'}, not {sorted(unknown)}.")
    return {**PHYSICS[name], **params}


def build_physics(name: str, size: tuple[int, int], *, channels: int = 1, noise: float = 0.0, seed: int = 0,
                  device="cpu", mask: torch.Tensor | None = None, **params) -> dinv.physics.Physics:
    r"""A deepinv operator for an unseen task, by name, for images of spatial size ``size``.

    - ``"sr"``: noiseless decimation by ``factor`` (:func:`decimation`, the
      Meta-Prior paper's super-resolution);
    - ``"inpainting"``: a fixed random pixel mask keeping a fraction ``ratio`` of the pixels;
    - ``"mri"``: single-coil Cartesian MRI (deepinv ``MRI``) with a fixed random mask of acceleration
      ``acceleration`` and a fully sampled centre ``center_fraction``; it takes two-channel complex
      images ``(B, 2, H, W)`` (:func:`as_complex`), whatever ``channels`` says;
    - ``"blur"``: Gaussian blur of standard deviation ``blur_sigma`` pixels, circular boundary;
    - ``"denoising"``: the identity (with ``noise`` > 0);
    - ``"cs"``: compressed sensing with a fixed Gaussian matrix (deepinv ``CompressedSensing``) taking
      ``ratio`` × H × W measurements of each channel (its memory grows as the square of H × W).

    Random masks are drawn from ``seed``, so that the same call gives the same operator (fine-tune and
    evaluate at the same ``size`` to keep the very same mask), unless ``mask`` (``(1, H, W)``, 1 where
    observed) gives the inpainting or MRI mask. ``noise`` is the standard deviation of additive Gaussian
    noise (0: noiseless).

    :Examples:

    >>> import torch
    >>> from deepinv_meta.physics import build_physics
    >>> physics = build_physics("sr", (16, 16), factor=2)
    >>> physics(torch.rand(1, 1, 16, 16)).shape
    torch.Size([1, 1, 8, 8])
    >>> mri = build_physics("mri", (16, 16), acceleration=4)
    >>> mri(torch.rand(1, 2, 16, 16)).shape
    torch.Size([1, 2, 16, 16])
    """
    params = physics_parameters(name, **params)
    if not noise >= 0:
        raise ValueError(f"noise (a standard deviation) must be >= 0, got {noise!r}.")
    height, width = size
    img_size = (channels, height, width)
    rng = torch.Generator().manual_seed(seed)
    if name in ("inpainting", "cs") and not 0 < params["ratio"] <= 1:
        raise ValueError(f"{name} ratio (fraction of pixels kept / measured) must be in (0, 1], got {params['ratio']!r}.")
    if mask is not None and name not in ("inpainting", "mri"):
        raise ValueError(f"a mask only applies to inpainting and mri, not to {name!r}.")
    if name == "sr":
        if height % params["factor"] or width % params["factor"]:
            raise ValueError(f"sr with factor {params['factor']} needs a size divisible by it, got {tuple(size)}.")
        physics = decimation(img_size, factor=params["factor"], device=device)
    elif name == "inpainting":
        if mask is None:
            mask = (torch.rand((1, height, width), generator=rng) < params["ratio"]).float()
        physics = dinv.physics.Inpainting(img_size=img_size, mask=mask.to(device), device=device)
    elif name == "mri":
        if mask is None:
            generator = dinv.physics.generator.RandomMaskGenerator(
                img_size=(height, width), acceleration=params["acceleration"], center_fraction=params["center_fraction"],
                rng=rng)
            mask = generator.step(batch_size=1)["mask"][0]
        physics = dinv.physics.MRI(mask=mask.to(device), img_size=(2, height, width), device=device)
    elif name == "cs":
        measurements = max(1, round(params["ratio"] * height * width))
        physics = dinv.physics.CompressedSensing(m=measurements, img_size=img_size, channelwise=True, device=device,
                                                 rng=torch.Generator(device).manual_seed(seed))
    elif name == "blur":
        kernel = dinv.physics.blur.gaussian_blur(sigma=params["blur_sigma"], device=device)
        physics = dinv.physics.BlurFFT(img_size=img_size, filter=kernel, device=device)
    else:
        physics = dinv.physics.Denoising()
    physics.noise_model = (dinv.physics.GaussianNoise(sigma=noise, rng=torch.Generator(device).manual_seed(seed + 1))
                           if noise > 0 else dinv.physics.ZeroNoise())
    return physics


@dataclass(frozen=True)
class OperatorSpec:
    r"""An unseen-task operator by name: what to build, store with an adapted model and rebuild.

    :param str name: one of :data:`PHYSICS` (``"sr"``, ``"inpainting"``, ``"mri"``, ``"blur"``,
        ``"denoising"``, ``"cs"``).
    :param dict params: its parameters (:data:`PHYSICS` defaults filled in by :meth:`named`).
    :param float noise: standard deviation of additive Gaussian noise (0: noiseless).
    :param int seed: seed of its random masks / matrices and of its noise.
    :param int channels: image channels (1 grey, 3 RGB; MRI images are complex, two channels, whatever this says).

    :Examples:

    >>> import torch
    >>> from deepinv_meta.physics import OperatorSpec
    >>> sr = OperatorSpec.named("sr", factor=2)
    >>> sr.build((16, 16))(torch.rand(1, 1, 16, 16)).shape
    torch.Size([1, 1, 8, 8])
    >>> [name for name, _ in sr.references()]
    ['adjoint A^T y', 'bicubic upsampling']
    >>> OperatorSpec.from_dict(sr.to_dict()) == sr
    True
    """

    name: str
    params: dict = field(default_factory=dict)
    noise: float = 0.0
    seed: int = 0
    channels: int = 1

    @classmethod
    def named(cls, name: str, *, noise: float = 0.0, seed: int = 0, color: bool = False, **params) -> "OperatorSpec":
        """The operator ``name`` with ``params`` over its defaults; unknown names, parameters, negative noise and
        colour MRI are refused with the valid choices."""
        if color and name == "mri":
            raise ValueError("mri takes grey images (as complex ones); drop --color.")
        if not noise >= 0:
            raise ValueError(f"noise (a standard deviation) must be >= 0, got {noise!r}.")
        return cls(name, physics_parameters(name, **params), float(noise), int(seed), 3 if color else 1)

    @classmethod
    def from_dict(cls, stored: dict) -> "OperatorSpec":
        """The inverse of :meth:`to_dict` (the ``physics`` entry stored with models adapted by ``finetune``)."""
        return cls(stored["name"], dict(stored["params"]), stored.get("noise", 0.0), stored.get("seed", 0),
                   stored.get("channels", 1))

    def to_dict(self) -> dict:
        return asdict(self)

    def build(self, size, device="cpu", mask: torch.Tensor | None = None) -> dinv.physics.Physics:
        """The deepinv operator for images of spatial size ``size`` (:func:`build_physics`)."""
        return build_physics(self.name, tuple(size), channels=self.channels, noise=self.noise, seed=self.seed,
                             device=device, mask=mask, **self.params)

    @property
    def complex(self) -> bool:
        """Whether it takes two-channel complex images and is scored on their magnitude (MRI)."""
        return self.name == "mri"

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """Real images ``(N, 1, H, W)`` as the operator takes them (complex for MRI)."""
        return as_complex(x) if self.complex else x

    def image_size(self, measurement_shape) -> tuple[int, int]:
        """The spatial size of the images behind measurements of shape ``(..., h, w)``."""
        h, w = measurement_shape[-2:]
        if self.name == "cs":
            raise ValueError("cs measurements do not say the image size; give the size of the images.")
        factor = self.params["factor"] if self.name == "sr" else 1
        return h * factor, w * factor

    def references(self) -> list:
        """``[(name, reconstructor)]``: the no-learning reconstructions every method is compared with."""
        return [("adjoint A^T y", Adjoint())] + ([("bicubic upsampling", Bicubic(self.params["factor"]))]
                                                 if self.name == "sr" else [])

    def __str__(self) -> str:
        return f"{self.name} {self.params} (noise {self.noise}, seed {self.seed})"


def decimation(img_size: tuple, factor: int = 2, device="cpu") -> dinv.physics.Downsampling:
    r"""Noiseless super-resolution by decimation, :math:`y = x[::f, ::f]` (the paper's SR operator).

    Built as deepinv's ``Downsampling`` with a centred 3x3 delta filter and circular padding: the same
    operator as ``Downsampling(filter=None)``, but with deepinv's closed-form ``prox_l2`` (deepinv 0.5
    fails in ``prox_l2`` when ``filter=None``, which HQS/DPIR baselines need).

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.physics import decimation
    >>> x = torch.rand(1, 1, 8, 8)
    >>> torch.equal(decimation((1, 8, 8))(x), x[..., ::2, ::2])
    True
    """
    delta = torch.zeros(1, 1, 3, 3, device=device)
    delta[..., 1, 1] = 1.0
    return dinv.physics.Downsampling(img_size=img_size, factor=factor, filter=delta, padding="circular", device=device)


def as_complex(images: torch.Tensor) -> torch.Tensor:
    """Real images ``(N, 1, H, W)`` as deepinv's two-channel complex layout ``(N, 2, H, W)`` (zero imaginary part)."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected real images of shape (N, 1, H, W), got {tuple(images.shape)}.")
    return torch.cat([images, torch.zeros_like(images)], dim=1)


def complex_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|x|`` of a (B, 2, H, W) real/imaginary tensor, as (B, 1, H, W)."""
    if x.shape[1] != 2:
        raise ValueError(f"expected 2 channels (real, imaginary), got shape {tuple(x.shape)}.")
    return x.pow(2).sum(1, keepdim=True).sqrt()


class Adjoint(dinv.models.Reconstructor):
    r"""The no-learning baseline :math:`A^\top y` (zero-filled reconstruction for MRI and inpainting)."""

    def forward(self, y, physics, **kwargs):
        return physics.A_adjoint(y)


class Bicubic(dinv.models.Reconstructor):
    """Bicubic interpolation for decimation SR: low-resolution pixel ``j`` sits at high-resolution pixel ``factor * j``."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, y, physics=None, **kwargs):
        h, w = y.shape[-2:]
        rows = torch.arange(h * self.factor, device=y.device) / self.factor / max(h - 1, 1) * 2 - 1
        cols = torch.arange(w * self.factor, device=y.device) / self.factor / max(w - 1, 1) * 2 - 1
        grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1).expand(len(y), -1, -1, -1)
        return torch.nn.functional.grid_sample(y, grid, mode="bicubic", padding_mode="border", align_corners=True)


class BorderPadded(dinv.models.Reconstructor):
    r"""Reconstruct super-resolution measurements from their border-replicated extension, then crop.

    Decimation samples the first row and column of an image but not its last ones, which only have a neighbour
    on one side; a network with zero-padded convolutions then reconstructs them against a black border. This
    wrapper extends the measurement by ``pad`` replicated pixels on every side (the border rule of
    :class:`Bicubic`), reconstructs it with ``model`` and the operator built for the extended image, and crops
    the image back to the measurement's own size.

    With ``self_ensemble=True`` it averages the reconstructions of the 8 flips and transposes of the measurement,
    each mapped back (the geometric self-ensemble of Timofte et al., 2016). A flip moves decimation's samples
    from the first pixel of each block of :math:`f` to the last one: the flipped measurement is the decimation
    of the flipped image shifted by :math:`f - 1` pixels, so its reconstruction is cropped :math:`f - 1` pixels
    earlier, which keeps every sample where it was measured.

    :param model: a reconstructor ``model(y, physics)`` (its ``physics`` argument here is ignored: the operator is
        rebuilt for the extended size).
    :param OperatorSpec operator: the ``sr`` operator (a factor, no mask) that produced the measurements.
    :param int pad: low-resolution pixels added on each side.
    :param bool self_ensemble: average over the 8 flips and transposes (8 reconstructions instead of 1).

    :Examples:

    >>> import torch
    >>> from deepinv_meta.physics import Adjoint, BorderPadded, OperatorSpec
    >>> sr = OperatorSpec.named("sr", factor=2)
    >>> physics = sr.build((8, 8))
    >>> y = physics(torch.rand(1, 1, 8, 8))
    >>> torch.equal(BorderPadded(Adjoint(), sr)(y, physics), Adjoint()(y, physics))  # zero-filling: same crop
    True
    >>> torch.allclose(BorderPadded(Adjoint(), sr, self_ensemble=True)(y, physics), Adjoint()(y, physics))
    True
    """

    def __init__(self, model, operator: "OperatorSpec", pad: int = 1, self_ensemble: bool = False):
        super().__init__()
        if operator.name != "sr":
            raise ValueError(f"BorderPadded extends super-resolution measurements; got the operator {operator.name}.")
        if pad < 1:
            raise ValueError(f"pad must be a positive number of pixels, got {pad!r}.")
        self.model, self.operator, self.pad, self.self_ensemble = model, operator, pad, self_ensemble
        # one operator per extended size and device: a model's operator-norm cache is keyed on the physics object
        self._operator_at = functools.lru_cache(maxsize=None)(operator.build)

    def forward(self, y, physics=None, **kwargs):
        if not self.self_ensemble:
            return self._reconstruct(y, flipped=())
        total = 0
        for transpose in (False, True):
            y_t = y.transpose(-1, -2) if transpose else y
            for flipped in ((), (-1,), (-2,), (-2, -1)):
                x = self._reconstruct(y_t.flip(flipped) if flipped else y_t, flipped)
                x = x.flip(flipped) if flipped else x
                total = total + (x.transpose(-1, -2) if transpose else x)
        return total / 8

    def _reconstruct(self, y, flipped: tuple):
        """The reconstruction of ``y`` (flipped along the dimensions ``flipped``) on its own sampling grid."""
        extended = torch.nn.functional.pad(y, (self.pad,) * 4, mode="replicate")
        x = self.model(extended, self._operator_at(self.operator.image_size(extended.shape), y.device))
        factor = self.operator.params["factor"]
        size = [n * factor for n in y.shape[-2:]]
        start = [self.pad * factor - (factor - 1 if dim in flipped else 0) for dim in (-2, -1)]
        return x[..., start[0]:start[0] + size[0], start[1]:start[1] + size[1]]


class Projected(dinv.models.Reconstructor):
    r"""A reconstructor whose output is projected onto the images that reproduce the measurement exactly,

    .. math:: \hat x \leftarrow \hat x + A^\dagger (y - A \hat x),

    with :math:`A^\dagger` the pseudo-inverse (deepinv's ``physics.A_dagger``; for decimation, inpainting and
    masked single-coil MRI, :math:`AA^\top = I` and it is :math:`A^\top`). For *noiseless* measurements the
    ground truth lies in that affine set, so the orthogonal projection can only bring the reconstruction closer
    to it (the projection onto a convex set is non-expansive); noisy measurements would be fitted with their
    noise, so leave it off there.

    :param model: a reconstructor ``model(y, physics)``.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.physics import Projected, OperatorSpec
    >>> physics = OperatorSpec.named("sr", factor=2).build((8, 8))
    >>> x = torch.rand(1, 1, 8, 8)
    >>> y = physics(x)
    >>> grey = lambda y, physics: torch.full((1, 1, 8, 8), 0.5)
    >>> bool(torch.allclose(physics.A(Projected(grey)(y, physics)), y))
    True
    >>> bool((Projected(grey)(y, physics) - x).norm() <= (grey(y, physics) - x).norm())
    True
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, y, physics, **kwargs):
        x = self.model(y, physics)
        return x + physics.A_dagger(y - physics.A(x))


def to_physics_input(x: torch.Tensor, complex_physics: bool) -> torch.Tensor:
    """``x`` as the physics takes it: unchanged, or cast to complex (same precision) if ``complex_physics``.

    Real-valued networks reconstruct real images; ``deepinv.physics.RandomPhaseRetrieval`` (and other
    physics built on complex matrices) take complex ones.

    >>> import torch
    >>> from deepinv_meta.physics import to_physics_input
    >>> to_physics_input(torch.ones(1, dtype=torch.float64), True).dtype
    torch.complex128
    """
    if not complex_physics:
        return x
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


class RandomHolesMaskGenerator(PhysicsGenerator):
    r"""Masks with ``holes`` square holes of ``hole_size`` pixels at uniform random positions (MNIST: 3 holes of 9×9).

    :param tuple img_size: ``(C, H, W)``.
    :param int holes: number of holes per image (they may overlap).
    :param int hole_size: side of each hole in pixels.

    :Examples:

    >>> from deepinv_meta.physics import RandomHolesMaskGenerator
    >>> gen = RandomHolesMaskGenerator((1, 28, 28), holes=1, hole_size=9)
    >>> mask = gen.step(batch_size=2, seed=0)["mask"]
    >>> mask.shape, (1 - mask).sum(dim=(1, 2, 3)).tolist()
    (torch.Size([2, 1, 28, 28]), [81.0, 81.0])
    """

    def __init__(self, img_size, holes: int = 3, hole_size: int = 9, device="cpu", rng=None, **kwargs):
        super().__init__(device=device, rng=rng, **kwargs)
        if len(img_size) != 3:
            raise ValueError(f"img_size must be (C, H, W), got {tuple(img_size)}.")
        if not 0 < hole_size <= min(img_size[1:]):
            raise ValueError(f"hole_size must be in [1, {min(img_size[1:])}] for images {tuple(img_size)}, got {hole_size}.")
        if holes < 0:
            raise ValueError(f"holes must be >= 0, got {holes}.")
        self.img_size, self.holes, self.hole_size = tuple(img_size), holes, hole_size

    def step(self, batch_size: int = 1, seed: int = None, **kwargs) -> dict:
        self.rng_manual_seed(seed)
        _, height, width = self.img_size
        mask = torch.ones((batch_size, *self.img_size), device=self.device)
        rows = torch.randint(height - self.hole_size + 1, (batch_size, self.holes), generator=self.rng, device=self.device)
        cols = torch.randint(width - self.hole_size + 1, (batch_size, self.holes), generator=self.rng, device=self.device)
        for b in range(batch_size):
            for r, c in zip(rows[b].tolist(), cols[b].tolist()):
                mask[b, :, r:r + self.hole_size, c:c + self.hole_size] = 0
        return {"mask": mask}


class TimeSeriesMaskGenerator(PhysicsGenerator):
    r"""Observation masks for multivariate time series ``(B, D, 1, T)`` sampled every ``every`` steps.

    At each observed time step, ``observed`` of the ``D`` components are drawn at random (all of them
    when ``observed`` is ``None``); the other time steps are unobserved. Lorenz-63 in the paper:
    every 8 steps, all 3 components; Lorenz-96: every 4 steps, 20 of 40 components.

    :param int components: ``D``.
    :param int length: ``T``.
    :param int every: sampling period in time steps (the first observation is at ``t = 0``).
    :param int observed: components seen at an observed time step (``None``: all).

    :Examples:

    >>> from deepinv_meta.physics import TimeSeriesMaskGenerator
    >>> gen = TimeSeriesMaskGenerator(components=40, length=200, every=4, observed=20)
    >>> mask = gen.step(batch_size=3, seed=0)["mask"]
    >>> mask.shape, mask[0, :, 0, 0].sum().item(), mask[0, :, 0, 1].sum().item()
    (torch.Size([3, 40, 1, 200]), 20.0, 0.0)
    """

    def __init__(self, components: int, length: int, every: int, observed: int | None = None, device="cpu", rng=None,
                 **kwargs):
        super().__init__(device=device, rng=rng, **kwargs)
        if components < 1 or length < 1 or every < 1:
            raise ValueError(f"components, length and every must be >= 1, got {components}, {length}, {every}.")
        if observed is not None and not 1 <= observed <= components:
            raise ValueError(f"observed must be in [1, {components}] (or None for all), got {observed}.")
        self.components, self.length, self.every = components, length, every
        self.observed = components if observed is None else observed

    def step(self, batch_size: int = 1, seed: int = None, **kwargs) -> dict:
        self.rng_manual_seed(seed)
        times = torch.arange(0, self.length, self.every, device=self.device)
        mask = torch.zeros((batch_size, self.components, 1, self.length), device=self.device)
        if self.observed == self.components:
            mask[..., times] = 1
            return {"mask": mask}
        scores = torch.rand((batch_size, self.components, len(times)), generator=self.rng, device=self.device)
        chosen = scores.argsort(dim=1)[:, : self.observed]  # a uniform random subset per observed time
        observed = torch.zeros_like(scores).scatter_(1, chosen, 1.0)
        mask[:, :, 0, times] = observed
        return {"mask": mask}


def interpolate_in_time(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Fill the unobserved entries of time series ``(B, D, 1, T)`` by linear interpolation in time.

    Each component is interpolated between its observed time steps and held constant before the first
    and after the last one; a component never observed in a sample takes the mean of that sample's
    observations. This is the starting point the Lorenz experiments of Fablet, Drumetz & Rousseau give
    their solvers (their public code interpolates each component linearly), much closer to the
    solution than the zero-filled :math:`A^\top y` when only one step in 8 is observed.

    :param torch.Tensor y: measurements (unobserved entries are ignored).
    :param torch.Tensor mask: 1 where observed, broadcastable to ``y``.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.physics import interpolate_in_time
    >>> y = torch.tensor([0., 0., 4., 0., 0., 2.]).view(1, 1, 1, 6)
    >>> mask = torch.tensor([0., 0., 1., 0., 0., 1.]).view(1, 1, 1, 6)
    >>> [round(v, 3) for v in interpolate_in_time(y, mask).flatten().tolist()]
    [4.0, 4.0, 4.0, 3.333, 2.667, 2.0]
    """
    observed = torch.broadcast_to(mask, y.shape) > 0
    length = y.shape[-1]
    t = torch.arange(length, device=y.device).expand(y.shape)
    before = torch.where(observed, t, -1).cummax(-1).values  # last observed step <= t (-1: none)
    after = torch.where(observed, t, length).flip(-1).cummin(-1).values.flip(-1)  # first observed >= t
    before, after = torch.where(before < 0, after, before), torch.where(after >= length, before, after)
    before, after = before.clamp(0, length - 1), after.clamp(0, length - 1)
    weight = (t - before).clamp(min=0).to(y.dtype) / (after - before).clamp(min=1).to(y.dtype)
    x = torch.lerp(y.gather(-1, before), y.gather(-1, after), weight)
    counts = observed.flatten(1).sum(1).clamp(min=1)
    sample_mean = (y * observed).flatten(1).sum(1) / counts
    never = ~observed.any(-1, keepdim=True)  # a component without observation in this sample
    return torch.where(never, sample_mean.view(-1, *[1] * (y.dim() - 1)).to(y.dtype), x)

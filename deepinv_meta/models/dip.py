r"""MetaDIP: a Deep Image Prior whose initial weights are meta-learned, so that a few fitting steps
suffice (MetaDIP paper, sections 3.2-3.3)."""

from __future__ import annotations

import math
import warnings

import deepinv as dinv
import torch
import torch.nn.functional as F
from torch import nn

from ..bilevel.inner import InnerLoop
from .test_time import TestTimeOptimizer
from ..io import register_model


class FourierFeatures(nn.Module):
    r"""Fixed random Fourier-feature map of a latent image, :math:`\gamma(z) = [\sin 2\pi Bz, \cos 2\pi Bz]`
    per pixel (Tancik et al. 2020), with :math:`B \sim \mathcal{N}(0, s^2)` drawn once (not learned)."""

    def __init__(self, in_channels: int, features: int = 16, scale: float = 1.0, seed: int = 0):
        super().__init__()
        rng = torch.Generator().manual_seed(seed)
        self.register_buffer("B", scale * torch.randn(features, in_channels, generator=rng))
        self.out_channels = 2 * features

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        projected = 2 * math.pi * torch.einsum("fc,bchw->bfhw", self.B, z)
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=1)


class EncoderDecoder(nn.Module):
    r"""The DIP generator: a UNet-style encoder-decoder with skip connections and no batch norm
    (batch statistics would couple the images of a batch and change between fitting steps).

    Each level halves the resolution (strided 3x3 convolution) and the decoder upsamples
    bilinearly and concatenates the skip features; the output goes through a sigmoid (images in
    [0, 1], as in DIP).

    :param int in_channels: input channels. :param int out_channels: image channels.
    :param tuple channels: feature channels per level (its length is the number of levels).
    """

    def __init__(self, in_channels: int, out_channels: int, channels=(32, 64, 128)):
        super().__init__()
        self.levels = len(channels)

        def block(a, b, stride=1):
            return nn.Sequential(nn.Conv2d(a, b, 3, stride=stride, padding=1, padding_mode="reflect"),
                                 nn.LeakyReLU(0.2))

        self.inc = block(in_channels, channels[0])
        self.down = nn.ModuleList(block(a, b, stride=2) for a, b in zip(channels[:-1], channels[1:]))
        self.up = nn.ModuleList(block(b + a, a) for a, b in zip(channels[:-1], channels[1:]))
        self.out = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(z)]
        for down in self.down:  # iterate, never index: higher's patched ModuleList cannot be sliced
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in reversed(list(self.up)):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = up(torch.cat([h, skip], dim=1))
        return torch.sigmoid(self.out(h))


def latent_code(channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """The fixed input :math:`z` of MetaDIP for one image size: uniform noise from ``seed``, the same at every call."""
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    r"""Anisotropic total variation :math:`\operatorname{mean}(|\nabla_h x| + |\nabla_v x|)`."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@register_model
class MetaDIP(TestTimeOptimizer):
    r"""Deep Image Prior from a meta-learned initialisation (MetaDIP).

    The image is generated from a fixed latent code through a Fourier-feature map and an
    encoder-decoder, :math:`x_\theta = g_\theta(\gamma(z))`, and fitted for :math:`m` steps of SGD
    with learned per-step learning rates and momentum on

    .. math:: \operatorname{mean}\|A(x_\theta) - y\|^2 + \tau\, \mathrm{TV}(x_\theta),

    starting from the meta-learned :math:`\theta^*` at every call (the weights never drift between
    calls, unlike ``deepinv.models.DeepImagePrior``). Meta-train it by supervised training of the
    forward pass (paper: 20 inner steps, denoising faces at :math:`\sigma = 25`), e.g.
    ``MetaTrainer(model, tasks, inner_steps=0)``: while meta-gradients are tracked (training mode,
    gradients enabled) a call runs ``train_steps`` inner steps, otherwise ``steps`` (default 50),
    reusing the last learned settings beyond the trained ones.

    Non-linear physics work as they are (the inner loss only needs ``physics.A``). For physics that
    take complex images (``deepinv.physics.RandomPhaseRetrieval``) pass ``complex_physics=True``:
    the real image is then cast to complex before ``A``.

    The step sizes are learned on one problem (denoising) and reused on others, so the data fidelity
    is divided by its curvature relative to denoising (``normalize_fidelity``): with :math:`n`
    pixels and :math:`m` measurements, :math:`s = \frac{n}{m}\|A\|^2` for a linear physics (power
    iteration; 1 for denoising and inpainting) and :math:`s = \frac{4n}{m}\|B\|^2\,\overline{y}` for
    phase retrieval :math:`y = |Bx|^2` (Gauss-Newton curvature); other physics keep :math:`s = 1`.
    Without it, compressed sensing at :math:`m/n = 1/4` has a curvature 36 times that of denoising and
    the denoising step sizes make the fit diverge.

    :param tuple img_size: ``(C, H, W)``; H and W must be divisible by :math:`2^{\text{levels}-1}`.
    :param int steps: inner steps at test time (default 50).
    :param int train_steps: inner steps with learned settings (the meta-training length, default 20).
    :param float lr: initial inner learning rate. The fidelity is a mean over pixels, so its
        gradients are small: from a random init, SGD with momentum 0.9 needs a rate near 1
        (:doc:`/notes`).
    :param float momentum: initial momentum.
    :param float tv_weight: :math:`\tau`, the fixed TV weight.
    :param bool normalize_fidelity: divide the data fidelity by its curvature relative to denoising (above).
    :param tuple channels: encoder-decoder channels per level.
    :param int latent_channels: channels of the fixed latent :math:`z`.
    :param int fourier_features: number of Fourier frequencies (the input has twice as many channels).
    :param bool complex_physics: cast the image to complex before the physics.
    :param int seed: seed of the fixed latent code and Fourier matrix.
    :param str optimizer: inner optimizer, ``"sgd"`` (the paper: SGD with learned per-step momentum) or
        ``"adam"`` (``lr`` is then Adam's step size, e.g. 1e-2, and no momentum is learned).
    :param bool, str learn_lr: ``True`` (one learned rate per step, the paper) or ``"per_parameter"``
        (Meta-SGD: one per weight and step) or ``False``; see :class:`~deepinv_meta.bilevel.InnerLoop`.

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.models import MetaDIP
    >>> physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    >>> model = MetaDIP((1, 16, 16), steps=3, channels=(8, 16)).eval()
    >>> model(physics(torch.rand(1, 1, 16, 16)), physics).shape
    torch.Size([1, 1, 16, 16])
    """

    def __init__(self, img_size, steps: int = 50, train_steps: int = 20, lr: float = 1.0, momentum: float = 0.9,
                 tv_weight: float = 1e-3, channels=(32, 64, 128), latent_channels: int = 8,
                 fourier_features: int = 16, complex_physics: bool = False, seed: int = 0,
                 normalize_fidelity: bool = True, optimizer: str = "sgd", learn_lr: bool | str = True):
        channels_out, height, width = img_size
        factor = 2 ** (len(channels) - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"MetaDIP with {len(channels)} levels needs H and W divisible by {factor}, got {height}x{width}; "
                "crop or pad the images, or use fewer levels (channels=...)."
            )
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps (inner fitting steps m) must be an integer >= 0, got {steps!r}.")
        if tv_weight < 0:
            raise ValueError(f"tv_weight must be >= 0, got {tv_weight!r}.")
        fourier = FourierFeatures(latent_channels, fourier_features, seed=seed)
        net = EncoderDecoder(fourier.out_channels, channels_out, tuple(channels))
        sgd = optimizer == "sgd"
        inner = InnerLoop(steps=train_steps, lr=lr, optimizer=optimizer, learn_lr=learn_lr, learn_momentum=sgd,
                          parameters=list(net.parameters()) if learn_lr == "per_parameter" else None,
                          repeat_last=True, optimizer_kwargs={"momentum": momentum} if sgd else None)
        super().__init__(net, inner, img_size, complex_physics=complex_physics)
        self.steps = steps
        self.tv_weight = tv_weight
        self.normalize_fidelity = normalize_fidelity
        self.fourier = fourier
        self.register_buffer("z", latent_code(latent_channels, height, width, seed))
        self.config = dict(img_size=tuple(img_size), steps=steps, train_steps=train_steps, lr=lr, momentum=momentum,
                           tv_weight=tv_weight, channels=tuple(channels), latent_channels=latent_channels,
                           fourier_features=fourier_features, complex_physics=complex_physics, seed=seed,
                           normalize_fidelity=normalize_fidelity, optimizer=optimizer, learn_lr=learn_lr)

    def generate(self, net, y: torch.Tensor, physics) -> torch.Tensor:
        return net(self.fourier(self.z))

    def fidelity_scale(self, y: torch.Tensor, physics) -> float:
        if not self.normalize_fidelity:
            return 1.0
        ratio = math.prod(self.img_size) / y[0].numel()  # n / m
        probe = self.physics_input(torch.rand((1, *self.img_size), generator=torch.Generator().manual_seed(0))
                                   .to(y.device))
        # deepinv's power iteration starts from torch.randn_like: a fixed seed in a forked random state makes the
        # scale (and so the output) independent of, and harmless to, the caller's random state
        cuda = y.device.type == "cuda"
        with torch.no_grad(), warnings.catch_warnings(), torch.random.fork_rng(devices=[y.device] if cuda else []):
            warnings.simplefilter("ignore")  # an approximate norm is enough; power iteration may warn
            if cuda:
                torch.cuda.default_generators[y.device.index if y.device.index is not None
                                              else torch.cuda.current_device()].manual_seed(0)
            else:
                torch.default_generator.manual_seed(0)
            if isinstance(physics, dinv.physics.LinearPhysics):
                return ratio * physics.compute_norm(probe, max_iter=50, verbose=False).item()
            if isinstance(getattr(physics, "B", None), dinv.physics.LinearPhysics):  # phase retrieval |Bx|^2
                return 4 * ratio * physics.B.compute_norm(probe, max_iter=50, verbose=False).item() * y.mean().item()
        return 1.0

    def regularizer(self, x: torch.Tensor):
        return self.tv_weight * total_variation(x) if self.tv_weight else 0.0


    def resized(self, img_size) -> "MetaDIP":
        """This meta-model for images of ``img_size`` ``(C, H, W)``: the same weights and learned step sizes
        (shared, not copied), and the latent code :math:`z` of that size (:func:`latent_code`, deterministic,
        so the model is the same function at every call; at the trained size it is the trained code)."""
        config = dict(self.config, img_size=tuple(img_size))
        model = MetaDIP(**config)
        model.net, model.inner, model.fourier = self.net, self.inner, self.fourier
        return model.to(self.z.device).train(self.training)

    def size_for(self, y: torch.Tensor, physics) -> tuple:
        """The image size ``(C, H, W)`` behind measurements ``y``: ``img_size`` if ``physics`` maps it to ``y``'s
        shape, else the shape of :math:`A^\top y` for a linear physics (e.g. denoising or inpainting of
        images of another size)."""
        probe = self.physics_input(torch.zeros((1, *self.img_size), dtype=y.dtype, device=y.device))
        try:
            with torch.no_grad():
                if physics.A(probe).shape[1:] == y.shape[1:]:
                    return self.img_size
        except (RuntimeError, ValueError, IndexError):
            pass
        if isinstance(physics, dinv.physics.LinearPhysics):
            with torch.no_grad():
                shape = tuple(physics.A_adjoint(y[:1]).shape[1:])
            if len(shape) == 3 and shape[0] == self.img_size[0]:
                return shape
        return self.img_size  # check_inputs then explains what does not fit

    def forward(self, y: torch.Tensor, physics, steps: int | None = None, callback=None) -> torch.Tensor:
        """Fit ``steps`` inner steps per image from the meta-learned weights (default: ``train_steps``
        while meta-training, ``self.steps`` otherwise). Images of another size than ``img_size`` are
        reconstructed by :meth:`resized` (found from :math:`A^\top y` for a linear physics)."""
        size = self.size_for(y, physics)
        if size != self.img_size:
            return self.resized(size)(y, physics, steps=steps, callback=callback)
        if steps is None:
            steps = self.inner.steps if self.training and torch.is_grad_enabled() else self.steps
        return super().forward(y, physics, steps=steps, callback=callback)

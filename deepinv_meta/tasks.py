r"""Imaging tasks for meta-learning.

A :class:`Task` is a deepinv physics (optionally driven by a ``PhysicsGenerator`` that draws new
operator parameters, e.g. blur kernels or masks, for every batch), a train/test split of images, and
an optional target map (the thing to recover, :math:`x` by default). :meth:`Task.episode` draws one
meta-learning episode: a new operator, a training batch for the inner loss and a held-out test batch
measured with the *same* operator for the outer loss.

:func:`meta_prior_tasks` builds the four training tasks of Terris & Moreau (section 4.1);
:func:`fourier_sampling_task` is an optional fifth one, closer to MRI.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import deepinv as dinv
import torch

from .data import as_image_batch
from .physics import as_complex, decimation  # noqa: F401 (decimation: public here too)


@dataclass
class Episode:
    """One draw of a task: an operator, a training batch (inner loss) and a test batch (outer loss)."""

    task: str
    physics: dinv.physics.Physics
    x_train: torch.Tensor
    y_train: torch.Tensor
    target_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    target_test: torch.Tensor


class Task:
    r"""An imaging task: a physics, its parameter generator, data splits and a target map.

    :param str name: task name (used in logs and tables).
    :param deepinv.physics.Physics physics: the forward operator (updated in place per episode).
    :param torch.Tensor train_data: images ``(N, C, H, W)`` for the inner loss (:math:`\mathcal{D}^{train}`).
    :param torch.Tensor test_data: images ``(M, C, H, W)`` for the outer loss (:math:`\mathcal{D}^{test}`).
    :param deepinv.physics.generator.PhysicsGenerator generator: draws operator parameters
        (``physics.update(**generator.step(batch_size))``) for each episode; ``None`` keeps the
        physics fixed.
    :param Callable target: ``target(x, y) -> t``, the quantity to recover (default: ``x``). E.g. the
        TV-estimation task uses ``target = prox_TV(y)``.
    :param bool per_sample_operators: draw operator parameters for every image of a batch (default),
        or one operator shared by the whole episode (a task is then exactly one operator :math:`A_i`,
        as in the linear theory of Meta-Prior).

    :Examples:

    >>> import torch, deepinv as dinv
    >>> from deepinv_meta.tasks import Task
    >>> physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=0.5)
    >>> gen = dinv.physics.generator.BernoulliSplittingMaskGenerator((1, 8, 8), split_ratio=0.5)
    >>> task = Task("inpainting", physics, torch.rand(10, 1, 8, 8), torch.rand(4, 1, 8, 8), generator=gen)
    >>> ep = task.episode(batch_size=2, seed=0)
    >>> ep.y_train.shape, ep.target_test.shape
    (torch.Size([2, 1, 8, 8]), torch.Size([2, 1, 8, 8]))
    """

    def __init__(
        self,
        name: str,
        physics,
        train_data: torch.Tensor,
        test_data: torch.Tensor,
        *,
        generator=None,
        target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        per_sample_operators: bool = True,
    ):
        if not isinstance(physics, dinv.physics.Physics):
            raise TypeError(
                f"Task {name!r}: physics must be a deepinv.physics.Physics, got {type(physics).__name__}."
            )
        if generator is not None and not isinstance(generator, dinv.physics.generator.PhysicsGenerator):
            raise TypeError(
                f"Task {name!r}: generator must be a deepinv PhysicsGenerator, got {type(generator).__name__}."
            )
        self.name = name
        self.physics = physics
        self.generator = generator
        self.target = target
        self.per_sample_operators = per_sample_operators
        self.train_data = as_image_batch(train_data, f"Task {name!r} train_data")
        self.test_data = as_image_batch(test_data, f"Task {name!r} test_data")
        if self.train_data.shape[1:] != self.test_data.shape[1:]:
            raise ValueError(
                f"Task {name!r}: train images {tuple(self.train_data.shape[1:])} and test images "
                f"{tuple(self.test_data.shape[1:])} must have the same (C, H, W)."
            )
        # The noise must be reproducible from the episode seed (checkpoint/resume); deepinv noise
        # models draw from the global RNG unless they own a generator.
        noise = getattr(physics, "noise_model", None)
        if noise is not None and hasattr(noise, "rng") and noise.rng is None:
            noise.rng = torch.Generator()

    def __repr__(self) -> str:
        return (
            f"Task({self.name!r}, physics={type(self.physics).__name__}, "
            f"generator={type(self.generator).__name__ if self.generator else None}, "
            f"train={len(self.train_data)}, test={len(self.test_data)})"
        )

    def to(self, device) -> "Task":
        """Move the physics, generator and data to ``device`` (returns ``self``)."""
        device = torch.device(device)
        self.physics = self.physics.to(device)
        self.train_data = self.train_data.to(device)
        self.test_data = self.test_data.to(device)
        noise = getattr(self.physics, "noise_model", None)
        if noise is not None and getattr(noise, "rng", None) is not None and noise.rng.device != device:
            noise.rng = torch.Generator(device)
        if self.generator is not None:
            self.generator = self.generator.to(device)
            if self.generator.rng.device != device:
                self.generator.rng = torch.Generator(device)
        return self

    @torch.no_grad()
    def episode(self, batch_size: int, seed: int | None = None) -> Episode:
        """Draw an operator and a train/test batch of ``batch_size`` images each.

        :param int batch_size: images per batch (operator parameters are drawn per image).
        :param int seed: makes the draw reproducible (images, operator and noise).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        seed = random.randrange(2**62) if seed is None else seed
        rng = torch.Generator().manual_seed(seed)
        device = self.train_data.device
        train_idx = torch.randint(len(self.train_data), (batch_size,), generator=rng).to(device)
        test_idx = torch.randint(len(self.test_data), (batch_size,), generator=rng).to(device)
        x_train, x_test = self.train_data[train_idx], self.test_data[test_idx]
        if self.generator is not None:
            seed_generator(self.generator, seed)
            draws = batch_size if self.per_sample_operators else 1  # 1: broadcast over the batch
            self.physics.update(**self.generator.step(batch_size=draws))
        noise = getattr(self.physics, "noise_model", None)
        if noise is not None and getattr(noise, "rng", None) is not None:
            noise.rng.manual_seed(seed)
        y_train, y_test = self.physics(x_train), self.physics(x_test)
        target = self.target or (lambda x, y: x)
        return Episode(
            self.name,
            self.physics,
            x_train,
            y_train,
            target(x_train, y_train),
            x_test,
            y_test,
            target(x_test, y_test),
        )


def seed_generator(generator, seed: int) -> None:
    """Seed a PhysicsGenerator and, for mixtures, every generator inside it.

    ``GeneratorMixture.step(seed=...)`` does not seed the generators it mixes, so we do it here.
    """
    generator.rng_manual_seed(seed)
    for i, inner in enumerate(getattr(generator, "generators", None) or []):
        seed_generator(inner, seed + 1 + i)


def tv_target(ths: float = 0.05, n_it_max: int = 200) -> Callable:
    r"""Target map of the TV-estimation task: :math:`\operatorname{prox}_{\mathrm{ths}\,TV}(y)` (deepinv ``TVDenoiser``)."""
    tv = dinv.models.TVDenoiser(n_it_max=n_it_max, crit=1e-4)

    def target(x, y):
        tv.restart = True  # TVDenoiser warm-starts from its previous call otherwise (hidden state)
        return tv(y, ths=ths)

    return target


def meta_prior_tasks(
    images: torch.Tensor,
    test_images: torch.Tensor | None = None,
    *,
    patch_size: int | None = None,
    test_fraction: float = 0.2,
    noise_sigma: tuple[float, float] = (0.01, 0.2),
    tv_ths: float = 0.05,
    blur_psf_size: int = 9,
    mask_ratio: tuple[float, float] = (0.3, 0.9),
    seed: int = 0,
) -> list[Task]:
    r"""The four training tasks of Meta-Prior (Terris & Moreau, section 4.1).

    1. ``denoising``: :math:`y = x + \sigma e`, :math:`\sigma` drawn in ``noise_sigma`` per image;
    2. ``tv_estimation``: recover :math:`\operatorname{prox}_{\mathrm{tv\_ths}\,TV}(y)` from :math:`y = x`;
    3. ``deblurring``: noiseless :math:`y = k * x` with random Gaussian or motion kernels;
    4. ``inpainting``: noiseless :math:`y = M \odot x` with random pixel masks, keep ratio in ``mask_ratio``.

    :param torch.Tensor images: training images ``(N, C, H, W)`` in [0, 1] (or a list of such images
        of any size when ``patch_size`` is given).
    :param torch.Tensor test_images: held-out images for the outer loss; if ``None``, a fraction
        ``test_fraction`` of ``images`` is held out.
    :param int patch_size: cut the images into non-overlapping square patches of this size first.
    :param int seed: seed of the split and of the tasks' random generators.
    :return: list of four :class:`Task`.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.tasks import meta_prior_tasks
    >>> tasks = meta_prior_tasks(torch.rand(10, 1, 16, 16))
    >>> [t.name for t in tasks]
    ['denoising', 'tv_estimation', 'deblurring', 'inpainting']
    """
    from .data import extract_patches, split_images

    if patch_size is not None:
        images = extract_patches(images, patch_size)
        if test_images is not None:
            test_images = extract_patches(test_images, patch_size)
    images = as_image_batch(images, "images")
    if test_images is None:
        images, test_images = split_images(images, test_fraction, seed=seed)
    img_size = tuple(images.shape[1:])

    def rng(offset):
        return torch.Generator().manual_seed(seed + offset)

    gp = dinv.physics.generator
    denoising = Task(
        "denoising",
        dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma=noise_sigma[1], rng=rng(1))),
        images,
        test_images,
        generator=gp.SigmaGenerator(sigma_min=noise_sigma[0], sigma_max=noise_sigma[1], rng=rng(2)),
    )
    tv = Task(
        "tv_estimation",
        dinv.physics.Denoising(dinv.physics.ZeroNoise()),
        images,
        test_images,
        target=tv_target(tv_ths),
    )
    psf = (blur_psf_size, blur_psf_size)
    blur_generator = gp.GeneratorMixture(
        [
            gp.GaussianBlurGenerator(psf, sigma_min=0.5, sigma_max=2.5, isotropic=False, rng=rng(3)),
            gp.MotionBlurGenerator(psf, rng=rng(4)),
        ],
        probs=[0.5, 0.5],
        rng=rng(5),
    )
    deblurring = Task(
        "deblurring",
        dinv.physics.Blur(filter=torch.ones(1, 1, 1, 1), padding="circular"),
        images,
        test_images,
        generator=blur_generator,
    )
    inpainting = Task(
        "inpainting",
        dinv.physics.Inpainting(img_size=img_size, mask=0.5),
        images,
        test_images,
        generator=gp.BernoulliSplittingMaskGenerator(
            img_size,
            split_ratio=sum(mask_ratio) / 2,
            random_split_ratio=True,
            min_split_ratio=mask_ratio[0],
            max_split_ratio=mask_ratio[1],
            rng=rng(6),
        ),
    )
    return [denoising, tv, deblurring, inpainting]


def fourier_sampling_task(
    images: torch.Tensor,
    test_images: torch.Tensor,
    *,
    acceleration: int = 4,
    center_fraction: float = 0.08,
    seed: int = 0,
) -> Task:
    r"""Fourier sampling of natural images: a new random Cartesian mask every episode (``fourier_sampling``).

    Not one of the paper's four tasks: an optional fifth training task for meta-models meant to adapt
    to MRI. Real images become deepinv's complex layout (zero imaginary part) and are measured by
    ``deepinv.physics.MRI`` with a ``RandomMaskGenerator`` mask (acceleration ``acceleration``, fully
    sampled centre ``center_fraction``), one mask per episode. Measured in the Meta-Prior benchmark
    (``--set fourier_task=True``, docs/benchmarks.rst): it lifts the MRI x4 result after fine-tuning.

    :param torch.Tensor images: grey training images ``(N, 1, H, W)`` in [0, 1] (e.g. patches).
    :param torch.Tensor test_images: grey held-out images ``(M, 1, H, W)`` for the outer loss.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.tasks import fourier_sampling_task
    >>> task = fourier_sampling_task(torch.rand(6, 1, 16, 16), torch.rand(2, 1, 16, 16))
    >>> task.episode(batch_size=2, seed=0).y_train.shape
    torch.Size([2, 2, 16, 16])
    """
    images, test_images = as_image_batch(images, "images"), as_image_batch(test_images, "test_images")
    size = tuple(images.shape[-2:])
    generator = dinv.physics.generator.RandomMaskGenerator(
        img_size=size, acceleration=acceleration, center_fraction=center_fraction,
        rng=torch.Generator().manual_seed(seed + 7),
    )
    physics = dinv.physics.MRI(mask=torch.ones(size), img_size=(2, *size))
    return Task("fourier_sampling", physics, as_complex(images), as_complex(test_images), generator=generator,
                per_sample_operators=False)

r"""The linear-Gaussian toy problem of Meta-Prior (Terris & Moreau, section 3, Figure 1).

Images :math:`x \sim \mathcal{N}(\mu, \Sigma)` on a small grid with a smooth (correlated) covariance;
each task masks one square hole (inpainting, :math:`y = M \odot x`). Training holes have their corner
in an area A, test holes sit in the bottom-right corner (area B), never hidden during training, so
the meta-model must carry what it learned about :math:`\mathrm{Ker}(A_i)` to unseen operators.
"""

from __future__ import annotations

import deepinv as dinv
import torch

from .tasks import Task


def smooth_covariance(size: int, length_scale: float = 1.5, jitter: float = 1e-2) -> torch.Tensor:
    r"""Squared-exponential covariance :math:`\Sigma_{pq} = e^{-\|p-q\|^2 / 2\ell^2} + \mathrm{jitter}\,\delta_{pq}` on a ``size x size`` grid."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    points = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()
    sq_dist = torch.cdist(points, points) ** 2
    return torch.exp(-sq_dist / (2 * length_scale**2)) + jitter * torch.eye(size * size, dtype=torch.float64)


def sample_images(n: int, mu: torch.Tensor, sigma: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` samples of :math:`\\mathcal{N}(\\mu, \\Sigma)` as images ``(n, 1, size, size)`` (float32)."""
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(sigma)
    z = torch.randn(n, sigma.shape[0], generator=g, dtype=sigma.dtype)
    return (mu.reshape(1, -1) + z @ chol.T).float().reshape(n, 1, size, size)


def hole_corners(size: int, hole: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Corners of the square holes of area A (training) and area B (test: the bottom-right hole).

    The test mask is never used in training, but training holes do cover some of its pixels: a
    pixel never hidden in training gets no reason to be predicted from its neighbours, and by
    Theorem 3.1 unsupervised fine-tuning cannot teach it either.
    """
    test = (size - hole, size - hole)
    train = [(r, c) for r in range(size - hole + 1) for c in range(size - hole + 1) if (r, c) != test]
    return train, [test]


class SquareHoleMaskGenerator(dinv.physics.generator.PhysicsGenerator):
    """Inpainting masks with one square hole of zeros whose top-left corner is drawn from ``corners``.

    :param tuple img_size: ``(C, H, W)``.
    :param int hole: side of the square hole.
    :param list corners: allowed ``(row, col)`` corners.
    """

    def __init__(self, img_size, hole: int, corners, rng: torch.Generator | None = None, device="cpu"):
        super().__init__(rng=rng, device=device)
        if not corners:
            raise ValueError("SquareHoleMaskGenerator needs at least one corner.")
        self.img_size, self.hole, self.corners = tuple(img_size), hole, list(corners)

    def step(self, batch_size: int = 1, seed: int | None = None, **kwargs) -> dict:
        self.rng_manual_seed(seed)
        picks = torch.randint(len(self.corners), (batch_size,), generator=self.rng, device=self.rng.device)
        mask = torch.ones(batch_size, *self.img_size, device=self.device)
        for b, index in enumerate(picks.tolist()):
            r, c = self.corners[index]
            mask[b, :, r : r + self.hole, c : c + self.hole] = 0
        return {"mask": mask}


def toy_task(name: str, corners, train_images, test_images, hole: int, seed: int = 0) -> Task:
    """A Task whose episodes each use one square-hole mask (one operator per episode, as in the theory)."""
    img_size = tuple(train_images.shape[1:])
    generator = SquareHoleMaskGenerator(img_size, hole, corners, rng=torch.Generator().manual_seed(seed))
    physics = dinv.physics.Inpainting(img_size=img_size, mask=torch.ones(1, *img_size))
    return Task(name, physics, train_images, test_images, generator=generator, per_sample_operators=False)


def mask_of(corner, size: int, hole: int) -> torch.Tensor:
    """The mask ``(1, 1, size, size)`` with its hole at ``corner``."""
    mask = torch.ones(1, 1, size, size)
    mask[..., corner[0] : corner[0] + hole, corner[1] : corner[1] + hole] = 0
    return mask

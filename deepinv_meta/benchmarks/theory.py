r"""The theory of Meta-Prior (Terris & Moreau, section 3), beside its benchmark (:mod:`.gaussian_toy`).

- The linear-Gaussian toy problem (Figure 1): images :math:`x \sim \mathcal{N}(\mu, \Sigma)` on a small grid
  with a smooth (correlated) covariance; each task masks one square hole (inpainting, :math:`y = M \odot x`).
  Training holes have their corner in an area A, test holes sit in the bottom-right corner (area B), never hidden
  during training, so the meta-model must carry what it learned about :math:`\mathrm{Ker}(A_i)` to unseen operators.
- The analytic Bayes estimator of a Gaussian signal from noiseless linear measurements (Lemma 3.2), the
  optimum every learned map of the toy is compared with.
"""

from __future__ import annotations

import math

import deepinv as dinv
import torch

from ..tasks import Task


# ---------------------------------------------------------------------------------------- Bayes estimator
def operator_matrix(physics, img_size) -> torch.Tensor:
    """The matrix :math:`A \\in \\mathbb{R}^{m \\times n}` of a linear deepinv physics, column by column.

    Meant for small images (the theory experiments): it applies ``physics.A`` to the ``n`` basis images.
    """
    n = math.prod(img_size)
    basis = torch.eye(n).reshape(n, *img_size)
    with torch.no_grad():
        columns = physics.A(basis)
    return columns.reshape(n, -1).T


def kernel_image_bases(A: torch.Tensor, rtol: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Orthonormal bases :math:`(V_{\mathrm{Im}}, V_{\mathrm{Ker}})` of :math:`\mathrm{Im}(A^\top)` and :math:`\mathrm{Ker}(A)`."""
    _, s, vh = torch.linalg.svd(A, full_matrices=True)
    rank = int((s > rtol * s.max()).sum()) if s.numel() else 0
    return vh[:rank].T, vh[rank:].T


def gaussian_bayes_estimator(A: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor):
    r"""Bayes estimator :math:`\hat x(y) = W y + b = \mathbb{E}[x \mid y]` for :math:`x \sim \mathcal{N}(\mu, \Sigma)`, :math:`y = Ax`.

    Following Lemma 3.2 of Terris & Moreau, in coordinates of :math:`\mathrm{Im}(A^\top) \oplus \mathrm{Ker}(A)`:

    .. math::

        \hat x_{\mathrm{Im}} = (A^\dagger y)_{\mathrm{Im}}, \qquad
        \hat x_{\mathrm{Ker}} = \mu_{\mathrm{Ker}} + \Sigma_{\mathrm{Ker},\mathrm{Im}}\,\Sigma_{\mathrm{Im}}^{-1}
        \big((A^\dagger y)_{\mathrm{Im}} - \mu_{\mathrm{Im}}\big).

    :param torch.Tensor A: operator matrix ``(m, n)``.
    :param torch.Tensor mu: mean ``(n,)``.
    :param torch.Tensor sigma: covariance ``(n, n)``, positive definite on :math:`\mathrm{Im}(A^\top)`.
    :return: ``(W, b)`` with ``W`` of shape ``(n, m)`` and ``b`` of shape ``(n,)``.

    :Examples:

    >>> import torch
    >>> from deepinv_meta.benchmarks.theory import gaussian_bayes_estimator
    >>> sigma = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    >>> A = torch.tensor([[1.0, 0.0]])  # observe the first coordinate only
    >>> W, b = gaussian_bayes_estimator(A, torch.zeros(2), sigma)
    >>> W.squeeze().tolist()  # x2 is predicted as 0.8 * x1
    [1.0, 0.800000011920929]
    """
    v_im, v_ker = kernel_image_bases(A)
    pinv_im = v_im.T @ torch.linalg.pinv(A)  # (A^+ y) in Im coordinates, as a map of y
    sigma_im = v_im.T @ sigma @ v_im
    sigma_ker_im = v_ker.T @ sigma @ v_im
    regression = torch.linalg.solve(sigma_im, sigma_ker_im.T).T  # Sigma_{Ker,Im} Sigma_Im^{-1}
    W = v_im @ pinv_im + v_ker @ regression @ pinv_im
    b = v_ker @ (v_ker.T @ mu - regression @ (v_im.T @ mu))
    return W, b


def shared_kernel_rows(masks, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r"""The best hidden-pixel predictions one linear meta-model can make for several inpainting masks at once.

    With an unsupervised inner loss, fine-tuning never changes the rows of :math:`\theta` on
    :math:`\mathrm{Ker}(A_i)` (Meta-Prior, Theorem 3.1): every task reads its hidden pixels from the
    *same* rows of :math:`\theta^*`. For a pixel :math:`p`, the supervised outer loss over the masks
    :math:`M_i = \mathrm{diag}(m_i)` hiding it is then minimised by the regression

    .. math::

        \theta^*_p = \Big(\sum_{i:\, p \in \mathrm{Ker}(A_i)} M_i R M_i\Big)^{+}
        \sum_{i:\, p \in \mathrm{Ker}(A_i)} M_i R\, e_p, \qquad R = \Sigma + \mu\mu^\top,

    (tasks drawn uniformly, infinite data), whereas the Bayes estimator of Lemma 3.2 fits each mask
    separately. The gap between the two is the error that no amount of meta-training or unsupervised
    fine-tuning can remove. Rows of pixels that no mask hides are left at zero (nothing determines them).

    :param masks: inpainting masks (1 observed, 0 hidden), each with ``n`` entries.
    :param torch.Tensor mu: mean ``(n,)``. :param torch.Tensor sigma: covariance ``(n, n)``.
    :return: ``(n, n)`` matrix whose row ``p`` is :math:`\theta^*_p` (zero for never-hidden pixels).

    :Examples:

    >>> import torch
    >>> from deepinv_meta.benchmarks.theory import shared_kernel_rows
    >>> sigma = torch.tensor([[1.0, 0.5, 0.5], [0.5, 1.0, 0.0], [0.5, 0.0, 1.0]])
    >>> theta = shared_kernel_rows([torch.tensor([0.0, 1, 1])], torch.zeros(3), sigma)
    >>> theta[0].tolist()  # one mask: the Bayes regression of x1 on (x2, x3)
    [0.0, 0.5, 0.5]
    """
    masks = [torch.as_tensor(m).reshape(-1).to(sigma) for m in masks]
    second_moment = sigma + torch.outer(mu, mu)
    n = second_moment.shape[0]
    theta = torch.zeros(n, n, dtype=sigma.dtype)
    for p in range(n):
        hiding = [m for m in masks if m[p] == 0]
        if not hiding:
            continue
        gram = sum(m[:, None] * second_moment * m[None, :] for m in hiding)
        target = sum(m * second_moment[:, p] for m in hiding)
        theta[p] = torch.linalg.pinv(gram) @ target
    return theta


class GaussianBayesEstimator(dinv.models.Reconstructor):
    r"""Reconstructor returning :math:`\mathbb{E}[x \mid y, A]` for a Gaussian prior (Lemma 3.2).

    The operator matrix is built from ``physics`` at call time, so keep images small.

    :param torch.Tensor mu: prior mean, shape ``img_size`` or flat.
    :param torch.Tensor sigma: prior covariance ``(n, n)``.
    :param tuple img_size: image shape ``(C, H, W)``.
    """

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor, img_size):
        super().__init__()
        self.img_size = tuple(img_size)
        self.register_buffer("mu", mu.reshape(-1).clone())
        self.register_buffer("sigma", sigma.clone())

    def forward(self, y: torch.Tensor, physics, **kwargs) -> torch.Tensor:
        A = operator_matrix(physics, self.img_size).to(self.sigma)
        W, b = gaussian_bayes_estimator(A, self.mu, self.sigma)
        x_hat = y.reshape(len(y), -1).to(W) @ W.T + b  # in the prior's precision
        return x_hat.to(y.dtype).reshape(len(y), *self.img_size)


# ---------------------------------------------------------------------------------------- the toy problem
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

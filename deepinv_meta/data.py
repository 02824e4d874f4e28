"""Offline image data: embedded defaults (scikit-image), image folders, patches and splits.

Nothing here downloads. Benchmarks read from a data root given as an argument or by the
``DEEPINV_META_DATA`` environment variable (see :func:`data_root`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .physics import as_complex  # noqa: F401 (the MRI slices are complex images)

# scikit-image images bundled with the wheel (no download), grey or converted to grey.
EMBEDDED_IMAGES = (
    "camera", "astronaut", "coins", "moon", "text", "brick", "grass",
    "gravel", "page", "clock", "coffee", "chelsea", "rocket", "cell",
)
# the default split of the command line and the demo: train on some, evaluate on the others
EMBEDDED_TRAIN = ("coins", "moon", "text", "brick", "grass", "gravel", "page", "clock", "chelsea", "rocket", "cell")
EMBEDDED_TEST = ("camera", "astronaut", "coffee")


def as_image_batch(images, what: str = "images") -> torch.Tensor:
    """Check that ``images`` is a float tensor ``(N, C, H, W)`` and return it."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}.")
    if images.dim() != 4:
        raise ValueError(
            f"{what} must have shape (N, C, H, W), got {tuple(images.shape)}; "
            "add batch/channel dimensions with images[None] or images[:, None]."
        )
    if len(images) == 0:
        raise ValueError(f"{what} is empty.")
    if not torch.is_floating_point(images):
        raise TypeError(f"{what} must be a float tensor in [0, 1], got dtype {images.dtype}.")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what} contains NaN or Inf values.")
    return images


def to_grey_tensor(image: np.ndarray) -> torch.Tensor:
    """A numpy image (H, W), (H, W, 3) or (H, W, 4), any dtype, as a grey float tensor (1, H, W) in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    image = image.astype(np.float32)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(image))[None]


def to_colour_tensor(image: np.ndarray) -> torch.Tensor:
    """A numpy image (H, W), (H, W, 3) or (H, W, 4), any dtype, as an RGB float tensor (3, H, W) in [0, 1]
    (grey images are repeated in the three channels)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return to_grey_tensor(image).repeat(3, 1, 1)
    if np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    return torch.from_numpy(np.ascontiguousarray(image[..., :3].astype(np.float32))).permute(2, 0, 1)


def embedded_images(names=EMBEDDED_IMAGES, grey: bool = True) -> list[torch.Tensor]:
    """Images shipped with scikit-image (no download), each a tensor (1, H, W) in [0, 1], or (3, H, W)
    with ``grey=False`` (grey ones repeated in the three channels)."""
    import skimage.data

    convert = to_grey_tensor if grey else to_colour_tensor
    return [convert(getattr(skimage.data, name)()) for name in names]


def extract_patches(images, patch_size: int, stride: int | None = None) -> torch.Tensor:
    """Cut images (a tensor ``(N, C, H, W)`` or a list of ``(C, H, W)``) into square patches ``(P, C, s, s)``."""
    stride = stride or patch_size
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images)
    patches = []
    for image in images:
        if image.dim() != 3:
            raise ValueError(f"each image must have shape (C, H, W), got {tuple(image.shape)}.")
        if image.shape[-1] < patch_size or image.shape[-2] < patch_size:
            continue
        p = image.unfold(1, patch_size, stride).unfold(2, patch_size, stride)
        patches.append(p.permute(1, 2, 0, 3, 4).reshape(-1, image.shape[0], patch_size, patch_size))
    if not patches:
        raise ValueError(f"no image is at least {patch_size}x{patch_size}; use a smaller patch_size.")
    return torch.cat(patches).contiguous()


def split_images(images: torch.Tensor, test_fraction: float, seed: int = 0):
    """Random split of ``images`` into (train, test) with ``test_fraction`` of them (at least 1) in test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if len(images) < 2:
        raise ValueError("need at least 2 images to split into train and test.")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(test_fraction * len(images))))
    return images[perm[n_test:]], images[perm[:n_test]]


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size x size`` crop of an image ``(..., H, W)``."""
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of size {h}x{w}.")
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top : top + size, left : left + size]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The offline data folder: ``root`` if given, else ``$DEEPINV_META_DATA``; errors name the variable."""
    root = root or os.environ.get("DEEPINV_META_DATA")
    if not root:
        raise FileNotFoundError(
            "No data root: pass --data-root DIR (or root=...) or set the environment variable "
            "DEEPINV_META_DATA to the folder holding images/, mri/, weights/ (see README)."
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Data root {root} does not exist (from argument or DEEPINV_META_DATA).")
    return root


def load_image_folder(folder: str | os.PathLike, grey: bool = True, limit: int | None = None) -> list[torch.Tensor]:
    """Load the PNG/JPEG/BMP/TIF images of a folder (sorted by name) as tensors (C, H, W) in [0, 1]."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist.")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
    if not files:
        raise FileNotFoundError(f"no images (png/jpg/bmp/tif) in {folder}.")
    images = []
    for f in files[:limit]:
        array = np.asarray(Image.open(f).convert("L" if grey else "RGB"))
        tensor = torch.from_numpy(array.astype(np.float32) / 255.0)
        images.append(tensor[None] if grey else tensor.permute(2, 0, 1))
    return images


def load_knee_slices(root: str | os.PathLike | None = None, patients=range(1, 11)) -> torch.Tensor:
    r"""Fully sampled knee MRI slices (``mri/knee/P<k>/knee-fully-sampled-reference.npy``) as complex images.

    Each magnitude slice is scaled to a maximum of 1 and returned as deepinv's two-channel
    (real, imaginary) layout with a zero imaginary part: shape ``(N, 2, 320, 256)``.

    :param root: data root (default ``$DEEPINV_META_DATA``).
    :param patients: patient numbers, e.g. ``range(1, 6)`` for P1-P5.
    """
    folder = data_root(root) / "mri" / "knee"
    slices = []
    for k in patients:
        path = folder / f"P{k}" / "knee-fully-sampled-reference.npy"
        if not path.is_file():
            raise FileNotFoundError(f"knee slice {path} not found (expected the offline data layout mri/knee/P1..P10).")
        magnitude = torch.from_numpy(np.load(path).astype(np.float32))
        magnitude = magnitude / magnitude.max()
        slices.append(magnitude[None])
    return as_complex(torch.stack(slices))


def load_mnist(root: str | os.PathLike | None = None, file: str = "t10k-images-idx3-ubyte.gz") -> torch.Tensor:
    """MNIST digits from an idx file (``mnist/<file>`` under the data root) as ``(N, 1, 28, 28)`` in [0, 1].

    The offline data holds the official test set (10,000 digits); the variational benchmark splits it.
    """
    import gzip

    path = data_root(root) / "mnist" / file
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file {path} not found (expected the official idx .gz files under mnist/).")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051:
        raise ValueError(f"{path} is not an idx image file (magic number {magic}, expected 2051).")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, 1, rows, cols)
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)

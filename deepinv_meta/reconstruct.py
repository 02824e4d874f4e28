r"""``deepinv-meta reconstruct``: your own measurements in, reconstructions out, no ground truth needed.

Each measurement file is read (an image: PNG/JPEG/BMP/TIFF in [0, 1]; or ``.npy``: k-space for ``mri``,
complex ``(H, W)`` or real ``(2, H, W)``), its operator is built for its size (``sr``: the image is
``factor`` times larger; ``inpainting``: ``--mask`` gives the observed pixels; ``mri``: ``--mask`` or the
non-zero k-space columns), and a meta-model adapts to the measurements themselves with the
equivariant loss (measurement consistency plus equivariant imaging) before reconstructing them. Test-time
optimisers (MetaDIP, Meta-RED) need no adaptation: their forward pass fits each measurement.
Measurements of the same size are adapted to together. The reconstructions are written to ``--out``
(``NAME_reconstruction.png``, plus ``.npy`` for MRI), with the measurement-consistency residual
:math:`\|A\hat x - y\| / \|y\|` each reached.
"""

from __future__ import annotations

from pathlib import Path

import deepinv as dinv
import numpy as np
import torch

from .bilevel import InnerLoop, finetune
from .physics import build_physics
from .tasks import decimation

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
OPERATORS = ("sr", "denoising", "blur", "inpainting", "mri")


def read_measurement(path: Path, physics: str, color: bool) -> torch.Tensor:
    """One measurement as a batch of one: ``(1, C, h, w)`` (images) or ``(1, 2, H, W)`` (MRI k-space)."""
    if not path.is_file():
        raise FileNotFoundError(f"measurement {path} does not exist.")
    if physics == "mri":
        if path.suffix.lower() != ".npy":
            raise ValueError(f"{path}: mri measurements are k-space arrays in .npy files ((H, W) complex or (2, H, W)).")
        array = np.load(path, allow_pickle=False)
        if np.iscomplexobj(array) and array.ndim == 2:
            array = np.stack([array.real, array.imag])
        if array.ndim != 3 or array.shape[0] != 2:
            raise ValueError(f"{path}: k-space of shape {array.shape}; expected (H, W) complex or (2, H, W) real.")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False).astype(np.float32)
        tensor = torch.from_numpy(array)
        tensor = tensor[None] if tensor.ndim == 2 else tensor
        if tensor.ndim != 3:
            raise ValueError(f"{path}: array of shape {array.shape}; expected (H, W) or (C, H, W).")
        return tensor[None]
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or .npy file.")
    from PIL import Image, UnidentifiedImageError

    try:
        image = np.asarray(Image.open(path).convert("RGB" if color else "L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path} cannot be read as an image ({error}).") from None
    tensor = torch.from_numpy(image)
    return (tensor.permute(2, 0, 1) if color else tensor[None])[None]


def read_mask(path: Path | None, shape: tuple, what: str) -> torch.Tensor | None:
    """A 0/1 mask of spatial ``shape`` (H, W) from an image or ``.npy`` file (non-zero = observed)."""
    if path is None:
        return None
    if path.suffix.lower() == ".npy":
        mask = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        mask = np.asarray(Image.open(path).convert("L"))
    mask = torch.from_numpy((np.abs(mask) > 0).astype(np.float32))
    if tuple(mask.shape[-2:]) != tuple(shape):
        raise ValueError(f"--mask {path} has size {tuple(mask.shape[-2:])} but the {what} has size {tuple(shape)}; "
                         "the mask must match the measurement.")
    return mask.reshape(1, *shape)


def operator_for(y: torch.Tensor, physics: str, *, factor: int, blur_sigma: float, mask: torch.Tensor | None,
                 device) -> dinv.physics.Physics:
    """The operator that produced ``y`` (its image size follows from ``y``'s)."""
    channels, h, w = y.shape[1:]
    if physics == "sr":
        return decimation((channels, h * factor, w * factor), factor=factor, device=device)
    if physics == "inpainting":
        if mask is None:
            raise ValueError("inpainting needs --mask FILE (non-zero where a pixel was observed).")
        return dinv.physics.Inpainting(img_size=(channels, h, w), mask=mask.to(device), device=device)
    if physics == "mri":
        if mask is None:  # the sampled k-space columns
            mask = (y[0].abs().sum(dim=(0, 1), keepdim=True) > 0).float().expand(1, h, w)
        return dinv.physics.MRI(mask=mask[0].to(device), img_size=(2, h, w), device=device)
    return build_physics(physics, (h, w), channels=channels, device=device, **(
        {"blur_sigma": blur_sigma} if physics == "blur" else {}))


def run_reconstruct(measurements, out, *, physics: str, model="meta-prior-unsupervised", factor: int = 2,
                    blur_sigma: float = 1.0, mask=None, steps: int = 30, lr: float = 1e-3, loss: str = "equivariant",
                    color: bool = False, device="cpu", force: bool = False) -> list[dict]:
    """Reconstruct every measurement file into ``out``; returns ``[{file, output, residual}]``."""
    from .commands import check_output, load_model
    from .models import TestTimeOptimizer

    if physics not in OPERATORS:
        raise ValueError(f"reconstruct takes --physics {' | '.join(OPERATORS)}, got {physics!r}.")
    paths = [Path(p) for p in measurements]
    out = Path(out)
    if out.is_file():
        raise ValueError(f"--out {out} is a file; give a folder for the reconstructions.")
    targets = {path: out / f"{path.stem}_reconstruction.png" for path in paths}
    if len(set(targets.values())) < len(targets):
        raise ValueError("two measurements have the same file name; their reconstructions would overwrite each other.")
    for target in targets.values():  # before any work: never an input, never another kind of file
        check_output(target, "PNG image", inputs=paths + ([mask] if mask else []), force=force)
    ys = {path: read_measurement(path, physics, color).to(device) for path in paths}
    base = load_model(model).to(device)
    channels = getattr(base, "img_size", (None,))[0]
    if physics != "mri" and channels is not None and any(y.shape[1] != channels for y in ys.values()):
        raise ValueError(f"{model} makes {channels}-channel images but the measurements have "
                         f"{next(iter(ys.values())).shape[1]}; " + ("add --color." if channels == 3 else "drop --color."))
    groups: dict[tuple, list[Path]] = {}
    for path, y in ys.items():
        groups.setdefault(tuple(y.shape), []).append(path)
    rows = []
    for shape, members in groups.items():
        mask_tensor = read_mask(Path(mask) if mask else None, shape[-2:], "measurement")
        operator = operator_for(ys[members[0]], physics, factor=factor, blur_sigma=blur_sigma, mask=mask_tensor,
                                device=device)
        y = torch.cat([ys[p] for p in members])
        scale = y.abs().amax().clamp_min(1e-8) if physics == "mri" else 1.0  # k-space of any scale, images in [0, 1]
        y = y / scale
        if isinstance(base, TestTimeOptimizer):
            reconstructor = base.eval()
        else:
            print(f"adapting {model} to {len(members)} measurement(s) of shape {tuple(shape[1:])}: {steps} {loss} "
                  "steps, no ground truth", flush=True)
            reconstructor = finetune(base, operator, y, inner=InnerLoop(steps=steps, lr=lr), loss=loss, progress=True)
        with torch.no_grad():
            x_hat = torch.cat([reconstructor(y[i:i + 1], operator) for i in range(len(members))])
            residual = [(torch.linalg.vector_norm(operator.A(x_hat[i:i + 1]) - y[i:i + 1])
                         / torch.linalg.vector_norm(y[i:i + 1])).item() for i in range(len(members))]
        for i, path in enumerate(members):
            image = x_hat[i]
            if physics == "mri":
                np.save(targets[path].with_suffix(".npy"), (image * scale).cpu().numpy())
                image = torch.linalg.vector_norm(image, dim=0, keepdim=True)
                image = image / image.amax().clamp_min(1e-8)
            write_png(image, targets[path])
            rows.append({"file": str(path), "output": str(targets[path]), "residual": residual[i]})
            print(f"{path} -> {targets[path]}  (||A x - y|| / ||y|| = {residual[i]:.3e})", flush=True)
    return rows


def write_png(image: torch.Tensor, path: Path) -> None:
    """``(C, H, W)`` in [0, 1] (clipped) as an 8-bit PNG."""
    from PIL import Image

    array = (image.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)).save(path)

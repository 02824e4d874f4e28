r"""``deepinv-meta reconstruct``: your own measurements in, reconstructions out, no ground truth needed.

Each measurement file is read (an image: PNG/JPEG/BMP/TIFF in [0, 1]; or ``.npy``: k-space for ``mri``,
complex ``(H, W)`` or real ``(2, H, W)``), its operator is built for its size (``sr``: the image is
``factor`` times larger; ``inpainting``: ``--mask`` gives the observed pixels; ``mri``: ``--mask`` or the
non-zero k-space columns), and a meta-model adapts to the measurements themselves with the
equivariant loss (measurement consistency plus equivariant imaging; for ``sr`` with ``--pairs`` also the
zero-shot pairs of each measurement and its downscaled copy) before reconstructing them (``sr``: from the
border-replicated measurement, :class:`~deepinv_meta.physics.BorderPadded`); with ``--project`` each
reconstruction is then projected onto its (noiseless) measurement. Test-time
optimisers (MetaDIP, Meta-RED) and learned variational solvers need no adaptation: their forward pass fits or
solves each measurement.
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
from .commands import RunOptions, adaptation_objective, check_output, load_model
from .physics import BorderPadded, OperatorSpec, Projected, complex_magnitude

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
OPERATORS = ("sr", "denoising", "blur", "inpainting", "mri")
DEFAULT_STEPS, DEFAULT_LR = 30, 1e-3  # the adaptation


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


def physics_for(y: torch.Tensor, operator: OperatorSpec, mask: torch.Tensor | None, device) -> dinv.physics.Physics:
    """The operator that produced ``y`` (its image size follows from ``y``'s)."""
    if operator.name == "inpainting" and mask is None:
        raise ValueError("inpainting needs --mask FILE (non-zero where a pixel was observed).")
    if operator.name == "mri" and mask is None:  # the sampled k-space columns
        mask = (y[0].abs().sum(dim=(0, 1), keepdim=True) > 0).float().expand(1, *y.shape[-2:])
    return operator.build(operator.image_size(y.shape), device, mask=mask)


def run_reconstruct(measurements, out, *, operator: OperatorSpec, model="meta-prior-unsupervised", mask=None,
                    inner: InnerLoop | None = None, loss: str = "equivariant", pairs: bool = False,
                    self_ensemble: bool = False, project: bool = False,
                    options: RunOptions | None = None) -> list[dict]:
    """Reconstruct every measurement file into ``out``, adapting ``model`` with ``inner`` (default
    ``InnerLoop(steps=30, lr=1e-3)``; refused, as ``pairs``, ``self_ensemble`` and another ``loss`` are, for
    models that solve each measurement as they are) and ``loss`` (with ``pairs``:
    :func:`~deepinv_meta.commands.adaptation_objective`), for ``sr`` with the ``self_ensemble`` of
    :class:`~deepinv_meta.physics.BorderPadded` if asked, each reconstruction projected onto its measurement
    with ``project`` (:class:`~deepinv_meta.physics.Projected`, for noiseless ones); returns
    ``[{file, output, residual}]``."""
    from .models import TestTimeOptimizer, VariationalReconstructor

    adaptation_asked = {"--steps/--lr": inner is not None, "--pairs": pairs, "--self-ensemble": self_ensemble,
                        f"--loss {loss}": loss != "equivariant"}
    inner = InnerLoop(steps=DEFAULT_STEPS, lr=DEFAULT_LR) if inner is None else inner
    options = options or RunOptions(device="cpu")
    device = options.torch_device()
    physics, color = operator.name, operator.channels == 3
    if physics not in OPERATORS:
        raise ValueError(f"reconstruct takes --physics {' | '.join(OPERATORS)}, got {physics!r}.")
    objective, label = adaptation_objective(loss, operator, pairs=pairs)
    if self_ensemble and physics != "sr":
        raise ValueError(f"--self-ensemble applies to --physics sr (the flips of a decimation); got {physics}.")
    paths = [Path(p) for p in measurements]
    out = Path(out)
    if out.is_file():
        raise ValueError(f"--out {out} is a file; give a folder for the reconstructions.")
    targets = {path: out / f"{path.stem}_reconstruction.png" for path in paths}
    if len(set(targets.values())) < len(targets):
        raise ValueError("two measurements have the same file name; their reconstructions would overwrite each other.")
    for target in targets.values():  # before any work: never an input, never another kind of file
        check_output(target, "PNG image", inputs=paths + ([mask] if mask else []), force=options.force)
    ys = {path: read_measurement(path, physics, color).to(device) for path in paths}
    base = load_model(model).to(device)
    channels = getattr(base, "img_size", (None,))[0]
    if physics != "mri" and channels is not None and any(y.shape[1] != channels for y in ys.values()):
        raise ValueError(f"{model} makes {channels}-channel images but the measurements have "
                         f"{next(iter(ys.values())).shape[1]}; " + ("add --color." if channels == 3 else "drop --color."))
    solves_as_it_is = isinstance(base, (TestTimeOptimizer, VariationalReconstructor))
    if solves_as_it_is and any(adaptation_asked.values()):  # options of the adaptation, which it does not run
        raise ValueError(f"{model} fits or solves each measurement as it is, without adaptation; drop "
                         f"{', '.join(k for k, asked in adaptation_asked.items() if asked)} (they set the adaptation "
                         "of meta-prior networks).")
    groups: dict[tuple, list[Path]] = {}
    for path, y in ys.items():
        groups.setdefault(tuple(y.shape), []).append(path)
    rows = []
    for shape, members in groups.items():
        mask_tensor = read_mask(Path(mask) if mask else None, shape[-2:], "measurement")
        forward = physics_for(ys[members[0]], operator, mask_tensor, device)
        y = torch.cat([ys[p] for p in members])
        scale = y.abs().amax().clamp_min(1e-8) if physics == "mri" else 1.0  # k-space of any scale, images in [0, 1]
        y = y / scale
        if solves_as_it_is:
            print(f"{model} reconstructs {len(members)} measurement(s) of shape {tuple(shape[1:])} as it is "
                  "(no adaptation)", flush=True)
            reconstructor = base.eval()
        else:
            print(f"adapting {model} to {len(members)} measurement(s) of shape {tuple(shape[1:])}: {inner.steps} "
                  f"{label} steps, no ground truth", flush=True)
            reconstructor = finetune(base, forward, y, inner=inner, loss=objective, chunk_size=options.chunk_size,
                                     progress=options.progress)
            if physics == "sr":  # from the border-replicated measurement, as bicubic treats borders (docs/notes.rst)
                reconstructor = BorderPadded(reconstructor, operator, self_ensemble=self_ensemble)
        if project:  # noiseless measurements: the nearest image that reproduces them exactly
            reconstructor = Projected(reconstructor)
        with torch.no_grad():
            x_hat = torch.cat([reconstructor(y[i:i + 1], forward) for i in range(len(members))])
            residual = [(torch.linalg.vector_norm(forward.A(x_hat[i:i + 1]) - y[i:i + 1])
                         / torch.linalg.vector_norm(y[i:i + 1])).item() for i in range(len(members))]
        for i, path in enumerate(members):
            image = x_hat[i]
            if physics == "mri":
                np.save(targets[path].with_suffix(".npy"), (image * scale).cpu().numpy())
                image = complex_magnitude(image[None])[0]
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

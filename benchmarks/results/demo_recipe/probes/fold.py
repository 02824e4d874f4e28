"""The problem every demo-recipe probe adapts to: x2 decimation of the 96x96 centre crops of BSD68 images
14 * FOLD to 14 * FOLD + 13 (sorted by name), as in ../run.py. The probes import it (run them as scripts)."""
import torch
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.data import center_crop, data_root, load_image_folder
from deepinv_meta.physics import Bicubic, OperatorSpec


def fold_problem(fold: int):
    """``(x, spec, physics, y, bicubic PSNR)`` of fold ``fold`` (mean PSNR over its 14 images)."""
    imgs = load_image_folder(data_root() / "images" / "bsd68", grey=True, limit=42)[fold*14:(fold+1)*14]
    x = torch.stack([center_crop(im, 96) for im in imgs])
    spec = OperatorSpec.named("sr", factor=2)
    physics = spec.build((96, 96), "cpu")
    y = physics(x)
    return x, spec, physics, y, psnr_per_image(Bicubic(2), physics, y, x).mean().item()

"""The problems the demo-recipe probes adapt to: x2 decimation of the 96x96 centre crops of BSD68 images
14 * FOLD to 14 * FOLD + 13 (sorted by name), as in ../run.py; and the demo's own (diagnosis only). The probes
import it (run them as scripts); ``model_named`` loads a zoo name or a model file."""
import torch
from deepinv_meta import MetaPDNet, load
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.data import EMBEDDED_TEST, EMBEDDED_TRAIN, center_crop, data_root, embedded_images, load_image_folder
from deepinv_meta.physics import Bicubic, OperatorSpec


def fold_problem(fold: int):
    """``(x, spec, physics, y, bicubic PSNR)`` of fold ``fold`` (mean PSNR over its 14 images)."""
    imgs = load_image_folder(data_root() / "images" / "bsd68", grey=True, limit=42)[fold*14:(fold+1)*14]
    x, spec, physics, y, bicubic = _decimated(imgs)
    return x, spec, physics, y, bicubic.mean().item()


def demo_problem():
    """``(x, spec, physics, y, adaptation measurements, bicubic PSNR per image)`` of ``deepinv-meta demo``: its 3 test
    crops, adapted on with the 11 other bundled low-resolution images."""
    x, spec, physics, y, bicubic = _decimated(embedded_images(EMBEDDED_TEST))
    others = torch.stack([center_crop(im, 96) for im in embedded_images(EMBEDDED_TRAIN)])
    return x, spec, physics, y, torch.cat([y, physics(others)]), bicubic


def _decimated(images):
    """``(x, spec, physics, y, bicubic PSNR per image)``: x2 decimation of the 96x96 centre crops of ``images``."""
    x = torch.stack([center_crop(im, 96) for im in images])
    spec = OperatorSpec.named("sr", factor=2)
    physics = spec.build((96, 96), "cpu")
    y = physics(x)
    return x, spec, physics, y, psnr_per_image(Bicubic(2), physics, y, x)


def model_named(name: str):
    """The zoo model ``name``, or the model saved in the file ``name`` (``.pt``)."""
    return load(name) if name.endswith(".pt") else MetaPDNet.from_pretrained(name)

"""``deepinv-meta demo``: meta-train a small MetaPDNet on embedded images, adapt it to unseen SR x2.

Everything runs offline on scikit-image's bundled images: training patches come from some images,
the unseen task (noiseless x2 super-resolution, never seen in meta-training) is evaluated on
central crops of held-out images, and fine-tuning uses patches of the training images (as the
paper fine-tunes on its training set and tests on Set3C).
"""

from __future__ import annotations

import platform
import sys
import time

import deepinv as dinv
import torch

from .baselines import Adjoint, Bicubic
from .bilevel import MetaTrainer, finetune
from .bilevel.trainer import default_device
from .data import EMBEDDED_TEST, EMBEDDED_TRAIN, center_crop, embedded_images, extract_patches
from .models import MetaPDNet
from .tasks import meta_prior_tasks



def psnr_stats(model, physics, x, y) -> tuple[float, float]:
    """Mean and standard deviation of the PSNR of ``model(y, physics)`` against ``x``."""
    with torch.no_grad():
        values = dinv.loss.metric.PSNR()(model(y, physics).clamp(0, 1), x)
    return values.mean().item(), values.std().item() if len(values) > 1 else 0.0


def run_demo(
    minutes: float = 2.0,
    *,
    depth: int = 10,
    channels: int = 16,
    patch_size: int = 32,
    finetune_steps: int = 50,
    finetune_patches: int = 16,
    device=None,
    seed: int = 0,
) -> list[dict]:
    """Meta-train, fine-tune on SR x2, print and return the PSNR table."""
    device = torch.device(device) if device else default_device()
    torch.manual_seed(seed)
    print(f"deepinv-meta demo | device {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads) | torch {torch.__version__} | deepinv {dinv.__version__}")

    train_images = embedded_images(EMBEDDED_TRAIN)
    tasks = meta_prior_tasks(train_images, patch_size=patch_size, seed=seed)
    print(f"meta-training MetaPDNet(depth={depth}, channels={channels}) on {len(tasks[0].train_data)} "
          f"{patch_size}x{patch_size} patches of scikit-image images, tasks: {', '.join(t.name for t in tasks)}; "
          f"unsupervised inner loss, 1 inner Adam step, budget {minutes:g} min")
    model = MetaPDNet(depth=depth, channels=channels)
    trainer = MetaTrainer(
        model, tasks, inner_loss="unsupervised", inner_steps=1, inner_lr=1e-3, outer_lr=5e-3,
        batch_size=4, device=device, seed=seed,
    )
    start = time.perf_counter()
    trainer.train(steps=100_000, max_time=60 * minutes)
    train_time = time.perf_counter() - start
    print(f"{trainer.step} outer steps in {train_time:.0f} s ({train_time / max(trainer.step, 1):.2f} s/step)")

    # Unseen task: noiseless x2 super-resolution by decimation (no antialiasing filter), as in the
    # paper, where SR is "inpainting with a periodic mask".
    factor, size = 2, 128
    x_test = torch.stack([center_crop(im, size) for im in embedded_images(EMBEDDED_TEST)]).to(device)
    sr_test = dinv.physics.Downsampling(img_size=(1, size, size), factor=factor, filter=None, device=device)
    y_test = sr_test(x_test)
    x_ft = extract_patches(train_images, 64)[::4][:finetune_patches].to(device)
    sr_ft = dinv.physics.Downsampling(img_size=(1, 64, 64), factor=factor, filter=None, device=device)
    y_ft = sr_ft(x_ft)

    torch.manual_seed(seed + 1)
    scratch = MetaPDNet(depth=depth, channels=channels).to(device)
    rows = [("adjoint A^T y", Adjoint()), ("bicubic upsampling", Bicubic(factor))]
    for label, start in (("meta-model", trainer.model), ("random init", scratch)):
        rows.append((f"{label}, no fine-tuning", start))
        for loss in ("unsupervised", "supervised"):
            adapted = finetune(start, sr_ft, y_ft, x=x_ft, steps=finetune_steps, loss=loss, lr=1e-3,
                               progress=sys.stderr.isatty())
            rows.append((f"{label} + {finetune_steps} {loss} steps", adapted))

    table = []
    print(f"\nUnseen task: noiseless SR x{factor} (decimation), test = {size}x{size} crops of {', '.join(EMBEDDED_TEST)} "
          f"(held out), fine-tuning = {len(x_ft)} 64x64 patches of the training images")
    print(f"| {'method':40s} | PSNR (dB)      |")
    print(f"|{'-' * 42}|{'-' * 16}|")
    for name, recon in rows:
        mean, std = psnr_stats(recon, sr_test, x_test, y_test)
        table.append({"method": name, "psnr": mean, "psnr_std": std})
        print(f"| {name:40s} | {mean:6.2f} ± {std:4.2f}  |")
    return table

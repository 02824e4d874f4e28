"""Seconds per meta-training outer step of MetaPDNet (second-order vs first-order MAML).

Run: ``python -m deepinv_meta.benchmarks.outer_step [--device cuda] [--depth 20] [--steps 3]``.
Uses patches of scikit-image's bundled images (no data download).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ..bilevel import MetaTrainer
from ..bilevel.trainer import default_device
from ..data import embedded_images, extract_patches
from ..models import MetaPDNet
from ..tasks import meta_prior_tasks


def seconds_per_step(first_order: bool, args, tasks) -> float:
    torch.manual_seed(0)
    trainer = MetaTrainer(
        MetaPDNet(depth=args.depth, channels=args.channels), tasks, inner_loss="unsupervised",
        inner_steps=args.inner_steps, first_order=first_order, batch_size=args.batch_size,
        device=args.device, progress=False,
    )
    trainer.train(steps=1)  # warm-up (allocations, cuDNN autotuning)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train(steps=1 + args.steps)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--channels", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed outer steps per mode")
    args = parser.parse_args(argv)
    tasks = meta_prior_tasks(extract_patches(embedded_images(), args.patch_size))
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"MetaPDNet depth={args.depth} channels={args.channels}, {len(tasks)} tasks, batch {args.batch_size}, "
          f"{args.patch_size}x{args.patch_size}, {args.inner_steps} inner Adam step(s); device {args.device} ({machine}); "
          f"torch {torch.__version__}")
    second = seconds_per_step(False, args, tasks)
    first = seconds_per_step(True, args, tasks)
    print("| mode                  | s / outer step |")
    print(f"| MAML (second order)   | {second:14.2f} |")
    print(f"| first-order MAML      | {first:14.2f} |")
    print(f"ratio second/first order: {second / first:.2f}")


if __name__ == "__main__":
    main()

"""Time and memory of one meta-training outer step of MetaPDNet: MAML vs first-order vs implicit (iMAML).

Run: ``python -m deepinv_meta.benchmarks.outer_step [--device cuda] [--depth 20] [--inner-steps 1 5 20]``.
Each (mode, inner steps) runs in a fresh process, so that its peak memory is its own (CPU: peak
resident memory above the process's state after setting up; CUDA: peak allocated memory). All modes
solve the same inner problem (``--lam``, which the implicit mode needs). Uses patches of
scikit-image's bundled images (no data download).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import time

import torch

from ..bilevel import MetaTrainer
from ..bilevel.trainer import default_device
from ..data import embedded_images, extract_patches
from ..models import MetaPDNet
from ..tasks import meta_prior_tasks

MODES = {"MAML (second order)": {}, "first-order MAML": {"first_order": True},
         "implicit (iMAML, CG)": {"implicit": True}}


def peak_memory(cuda: bool) -> int:
    """Peak bytes so far: allocated on the GPU (since the last reset), resident in RAM on CPU."""
    return torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(queue, mode: str, inner_steps: int, args) -> None:
    """Put (seconds per outer step, peak MiB above the set-up state) on ``queue``; runs in its own process."""
    torch.set_num_threads(args.threads)
    tasks = meta_prior_tasks(extract_patches(embedded_images(), args.patch_size))
    torch.manual_seed(0)
    options = dict(MODES[mode], **({"cg_steps": args.cg_steps} if MODES[mode].get("implicit") else {}))
    trainer = MetaTrainer(
        MetaPDNet(depth=args.depth, channels=args.channels), tasks, inner_loss="unsupervised",
        inner_steps=inner_steps, lam=args.lam, batch_size=args.batch_size, device=args.device, progress=False,
        **options,
    )
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else peak_memory(cuda)
    trainer.train(steps=1)  # warm-up (allocations, cuDNN autotuning)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train(steps=1 + args.steps)
    if cuda:
        torch.cuda.synchronize()
    queue.put(((time.perf_counter() - start) / args.steps, (peak_memory(cuda) - base) / 2**20))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--lam", type=float, default=1.0, help="proximal weight, the same for every mode")
    parser.add_argument("--cg-steps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1, help="timed outer steps per mode")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.machine()} CPU, {args.threads} threads")
    print(f"MetaPDNet depth={args.depth} channels={args.channels}, 4 tasks, batch {args.batch_size}, "
          f"{args.patch_size}x{args.patch_size}, inner Adam, lam={args.lam}, cg_steps={args.cg_steps}; "
          f"device {args.device} ({machine}); torch {torch.__version__}")
    print("| inner steps | mode                 | s / outer step | peak memory (MiB) | time / MAML | memory / MAML |")
    print("|---|---|---|---|---|---|")
    context = multiprocessing.get_context("spawn")
    for inner_steps in args.inner_steps:
        results = {}
        for mode in MODES:
            queue = context.Queue()
            child = context.Process(target=measure, args=(queue, mode, inner_steps, args))
            child.start()
            results[mode] = queue.get()
            child.join()
        maml_seconds, maml_memory = results["MAML (second order)"]
        for mode, (seconds, memory) in results.items():
            print(f"| {inner_steps} | {mode} | {seconds:.2f} | {memory:.0f} | {seconds / maml_seconds:.2f} | "
                  f"{memory / maml_memory:.2f} |", flush=True)


if __name__ == "__main__":
    main()

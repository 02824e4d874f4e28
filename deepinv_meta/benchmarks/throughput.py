r"""Throughput: seconds, FLOPs and GFLOP/s of one meta-training / fine-tuning / test-time step of each
model, beside the machine's own measured peak, and beside an earlier commit of the package.

``deepinv-meta benchmark throughput [--device cuda] [--set reference=COMMIT] [--set repeats=N]``.

Each measurement runs in a fresh process with ``threads`` torch threads (default 1), through the public API
only, so the very same script also measures an earlier version of the package: with ``reference`` set (a
git commit, default ``0b84af9``: the code before the throughput work), ``git archive`` extracts that
commit's ``deepinv_meta`` into a temporary folder and each case runs there too. The two versions alternate
for ``rounds`` rounds and each keeps its fastest (a neighbour's load only slows a round down). Cases:

- ``MetaPDNet outer step``: depth 20, 32 channels, batch 8 of 32x32 patches, the four Meta-Prior tasks,
  one inner Adam step, unsupervised inner loss, second-order MAML;
- ``MetaPDNet fine-tuning step``: unsupervised Adam fine-tuning on SR x2 (decimation), 16 patches 64x64;
- ``MetaDIP outer step (64 px)``: RGB, channels (16, 32, 64), 20 inner steps, batch 2;
- ``MetaDIP test-time step (64 / 128 px)``: one of the 50 inner steps of a forward pass (denoising);
- ``Meta-RED outer step (64 px)``: SIREN 5 x 256, DnCNN 17 layers (KAIR weights when the offline data is
  found, else the same architecture at random: the cost is the same), 3 SIREN updates x 3 RED iterations,
  batch 1, deconvolution;
- ``Meta-RED forward (64 px)``: one reconstruction.

FLOPs are counted by ``torch.utils.flop_counter`` (matrix products and convolutions, backward passes
included); GFLOP/s divides them by the measured time. The peak is the best of a 2048x2048 float32 matrix
product and a 64-channel 3x3 convolution on 64x64 images, measured in the same process setting.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL = dict(threads=1, repeats=3, rounds=3, reference="0b84af9", cases=None)
QUICK = dict(FULL, repeats=1, rounds=1)
NEEDS_DATA = False


# ------------------------------------------------------------------------------------------ cases
# Each case builds its objects and returns a function that runs one unit of work and the number of units
# (steps) one call of it makes. Only the public API of deepinv_meta is used (it must run on older commits).
def _pdnet_outer(device):
    import torch
    from deepinv_meta import MetaPDNet, MetaTrainer
    from deepinv_meta.data import embedded_images, extract_patches
    from deepinv_meta.tasks import meta_prior_tasks

    torch.manual_seed(0)
    tasks = meta_prior_tasks(extract_patches(embedded_images(), 32))
    trainer = MetaTrainer(MetaPDNet(depth=20, channels=32), tasks, inner_loss="unsupervised", inner_steps=1,
                          batch_size=8, device=device, progress=False)
    return lambda: trainer.train(steps=trainer.step + 1), 1


def _pdnet_finetune(device):
    import torch
    from deepinv_meta import MetaPDNet, finetune
    from deepinv_meta.data import embedded_images, extract_patches
    from deepinv_meta.tasks import decimation  # the public name since 0b84af9 (it must run on older commits)

    torch.manual_seed(0)
    x = extract_patches(embedded_images(), 64)[:16].to(device)
    physics = decimation((1, 64, 64), factor=2, device=device)
    y = physics(x)
    model = MetaPDNet(depth=20, channels=32).to(device)
    steps = 3
    return lambda: finetune(model, physics, y, steps=steps, loss="unsupervised"), steps


def _dip_data(size, device):
    from deepinv_meta.data import embedded_images, extract_patches

    return extract_patches(embedded_images(grey=False), size)[:8].to(device).contiguous()


def _dip_model(size):
    from deepinv_meta.models import MetaDIP

    return MetaDIP((3, size, size), steps=50, train_steps=20, lr=1.0, momentum=0.9, tv_weight=1e-3,
                   channels=(16, 32, 64), latent_channels=8, fourier_features=16)


def _dip_outer(device):
    import deepinv as dinv
    import torch
    from deepinv_meta import MetaTrainer, Task

    torch.manual_seed(0)
    x = _dip_data(64, device)
    task = Task("denoising", dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255)), x[:4], x[4:])
    trainer = MetaTrainer(_dip_model(64), [task], inner_steps=0, batch_size=2, device=device, progress=False,
                          grad_clip=1.0, lr_scales={"inner.": 10.0})
    return lambda: trainer.train(steps=trainer.step + 1), 1


def _dip_test_time(size):
    def build(device):
        import deepinv as dinv
        import torch

        torch.manual_seed(0)
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(25 / 255))
        y = physics(_dip_data(size, device)[:1])
        model = _dip_model(size).to(device).eval()
        steps = 10
        return lambda: model(y, physics, steps=steps), steps
    return build


def _red_model(device):
    import deepinv as dinv
    from deepinv_meta.models import MetaRED

    root = os.environ.get("DEEPINV_META_DATA")
    weights = Path(root) / "weights/kair_dncnn/dncnn_25.pth" if root else None
    if weights is not None and weights.is_file():
        from deepinv_meta.weights import load_denoiser

        denoiser = load_denoiser(weights, device=device)
    else:
        denoiser = dinv.models.DnCNN(1, 1, depth=17, pretrained=None, device=device)
    return MetaRED((1, 64, 64), denoiser, red_iterations=3, steps=3, sigma=25 / 255, gamma=8.0, lr=100.0,
                   hidden=256, layers=5)


def _red_physics(device):
    import deepinv as dinv
    import torch

    kernel = dinv.physics.functional.blur.gaussian_blur(sigma=(1.0, 1.0))
    return dinv.physics.BlurFFT((1, 64, 64), filter=kernel, device=device,
                                noise_model=dinv.physics.GaussianNoise(0.015, rng=torch.Generator(device)))


def _red_outer(device):
    import torch
    from deepinv_meta import MetaTrainer, Task
    from deepinv_meta.data import embedded_images, extract_patches

    torch.manual_seed(0)
    x = extract_patches(embedded_images(), 64)[:8].to(device)
    task = Task("deconvolution", _red_physics(device), x, x)
    trainer = MetaTrainer(_red_model(device), [task], inner_steps=0, batch_size=1, outer_lr=1e-5, grad_clip=1.0,
                          device=device, progress=False)
    return lambda: trainer.train(steps=trainer.step + 1), 1


def _red_forward(device):
    import torch
    from deepinv_meta.data import embedded_images, extract_patches

    torch.manual_seed(0)
    physics = _red_physics(device)
    y = physics(extract_patches(embedded_images(), 64)[:1].to(device))
    model = _red_model(device).to(device).eval()
    return lambda: model(y, physics), 1


CASES = {
    "MetaPDNet outer step": _pdnet_outer,
    "MetaPDNet fine-tuning step": _pdnet_finetune,
    "MetaDIP outer step (64 px)": _dip_outer,
    "MetaDIP test-time step (64 px)": _dip_test_time(64),
    "MetaDIP test-time step (128 px)": _dip_test_time(128),
    "Meta-RED outer step (64 px)": _red_outer,
    "Meta-RED forward (64 px)": _red_forward,
}


# ------------------------------------------------------------------------------------------ measuring
def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure_case(name: str, device: str, repeats: int) -> dict:
    """Seconds per step (median of ``repeats`` calls after a warm-up call) and FLOPs per step."""
    from torch.utils.flop_counter import FlopCounterMode

    call, steps = CASES[name](device)
    call()  # warm-up: allocations, caches, lazy initialisation
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append((time.perf_counter() - start) / steps)
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return {"seconds": statistics.median(times), "flops": counter.get_total_flops() / steps}


def measure_peak(device: str) -> dict:
    """GFLOP/s of a large float32 matrix product and of a 64-channel 3x3 convolution."""
    import torch
    import torch.nn.functional as F

    def rate(work, flops):
        work()
        _sync(device)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            work()
            _sync(device)
            best = min(best, time.perf_counter() - start)
        return flops / best / 1e9

    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    x, w = torch.randn(8, 64, 64, 64, device=device), torch.randn(64, 64, 3, 3, device=device)
    return {"matmul_gflops": rate(lambda: a @ b, 2 * 2048**3),
            "conv_gflops": rate(lambda: F.conv2d(x, w, padding=1), 2 * 8 * 64 * 64 * 64 * 64 * 9)}


def worker(argv) -> None:
    """``python throughput.py --worker DEVICE THREADS REPEATS CASE``: print one JSON line."""
    import torch

    device, threads, repeats, name = argv[0], int(argv[1]), int(argv[2]), argv[3]
    torch.set_num_threads(threads)
    result = measure_peak(device) if name == "peak" else measure_case(name, device, repeats)
    print("RESULT " + json.dumps(result), flush=True)


def _in_process(package_parent: Path, device: str, threads: int, repeats: int, name: str) -> dict:
    """Run one measurement in a fresh interpreter that imports ``deepinv_meta`` from ``package_parent``."""
    env = dict(os.environ, PYTHONPATH=str(package_parent), OMP_NUM_THREADS=str(threads))
    argv = ["--worker", device, str(threads), str(repeats), name]
    # run_path from `-c`: the script's own folder (benchmarks/) is not put first on sys.path
    code = f"import runpy, sys; sys.argv = {[__file__] + argv!r}; runpy.run_path({__file__!r}, run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=package_parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0]}
    return json.loads(lines[-1][len("RESULT "):])


def _extract_commit(commit: str, folder: Path) -> Path | None:
    """``deepinv_meta`` of ``commit`` under ``folder`` (``None`` outside a git checkout or for an unknown commit)."""
    repository = Path(__file__).resolve().parents[2]
    archive = subprocess.run(["git", "-C", str(repository), "archive", "--format=tar", commit, "deepinv_meta"],
                             capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def run(cfg: dict, context) -> dict:
    """Measure every case of ``cfg["cases"]`` (all by default); ``context``: :class:`~.report.Context`."""
    from .report import log, machine  # here, not at the top: the workers of older commits import this file alone

    device = str(context.device or "cpu")
    threads, repeats = int(cfg["threads"]), int(cfg["repeats"])
    names = cfg["cases"] or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise ValueError(f"unknown throughput cases {unknown}; known: {list(CASES)}.")
    current = Path(__file__).resolve().parents[2]
    context.started = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    log(f"Throughput benchmark | {machine(device)} | config {cfg}")
    with tempfile.TemporaryDirectory() as tmp:
        reference = _extract_commit(cfg["reference"], Path(tmp)) if cfg["reference"] else None
        if cfg["reference"] and reference is None:
            log(f"  reference {cfg['reference']!r} not available (not a git checkout?): current code only")
        peak = _in_process(current, device, threads, repeats, "peak")
        log(f"  peak: matmul {peak.get('matmul_gflops', float('nan')):.1f} GFLOP/s, "
              f"conv {peak.get('conv_gflops', float('nan')):.1f} GFLOP/s")
        rows = []
        for name in names:
            # rounds alternate the two versions and each keeps its fastest round: a neighbour's load (another
            # process on the other core shares the caches and memory bandwidth) only ever slows a round down
            versions = {"now": current, **({"reference": reference} if reference is not None else {})}
            rounds = {key: [] for key in versions}
            for _ in range(int(cfg["rounds"])):
                for key, folder in versions.items():
                    rounds[key].append(_in_process(folder, device, threads, repeats, name))
            row = {"case": name}
            for key, measured in rounds.items():
                good = [m for m in measured if "error" not in m]
                row[key] = min(good, key=lambda m: m["seconds"]) if good else measured[-1]
                row[key]["rounds_s"] = [round(m["seconds"], 4) for m in good]
            rows.append(row)
            log("  " + format_row(row, peak))
    result = dict(context.result("throughput", cfg, rows, peak=peak), device=machine(device))
    return context.finish(result, format_table(result))


def _gflops(measurement: dict) -> float:
    return measurement["flops"] / measurement["seconds"] / 1e9


def format_row(row: dict, peak: dict) -> str:
    now, ref = row["now"], row.get("reference")
    if "error" in now:
        return f"{row['case']}: failed ({now['error']})"
    best = max(peak.get("matmul_gflops", 0), peak.get("conv_gflops", 0)) or float("nan")
    text = (f"{row['case']}: {now['seconds']:.3f} s/step, {now['flops'] / 1e9:.2f} GFLOP/step, "
            f"{_gflops(now):.1f} GFLOP/s ({100 * _gflops(now) / best:.0f} % of peak)")
    if ref is not None and "error" not in ref:
        text += f" | reference {ref['seconds']:.3f} s/step -> speed-up x{ref['seconds'] / now['seconds']:.2f}"
    elif ref is not None:
        text += f" | reference failed ({ref['error']})"
    return text


def format_table(result: dict) -> str:
    peak = result["peak"]
    best = max(peak.get("matmul_gflops", 0), peak.get("conv_gflops", 0)) or float("nan")
    ref = result["config"]["reference"]
    lines = [f"Peak measured here: matmul {peak.get('matmul_gflops', float('nan')):.1f} GFLOP/s, "
             f"conv {peak.get('conv_gflops', float('nan')):.1f} GFLOP/s", "", f"| case | s / step (now) | s / step ({ref}) | speed-up | GFLOP / step | GFLOP/s (now) | % of peak |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        now, old = row["now"], row.get("reference") or {}
        if "error" in now:
            lines.append(f"| {row['case']} | failed: {now['error']} | | | | | |")
            continue
        old_s = f"{old['seconds']:.3f}" if "seconds" in old else "-"
        ratio = f"x{old['seconds'] / now['seconds']:.2f}" if "seconds" in old else "-"
        lines.append(f"| {row['case']} | {now['seconds']:.3f} | {old_s} | {ratio} | {now['flops'] / 1e9:.2f} | "
                     f"{_gflops(now):.1f} | {100 * _gflops(now) / best:.0f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    worker(sys.argv[2:])

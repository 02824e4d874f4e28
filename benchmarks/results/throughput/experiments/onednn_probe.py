"""Probe: MetaPDNet steps with PyTorch's oneDNN (mkldnn) convolutions on and off (``torch.backends.mkldnn.flags``).

Best CPU time (``time.process_time``, robust to a neighbour's load) of alternating rounds, one thread:
(1) the convolution pair of one MetaPDNet layer (1 -> 40 channels and back, 3x3, forward and backward);
(2) the throughput benchmark's two MetaPDNet cases (batch 8 of 32x32, 32 channels);
(3) the demo's adaptation step (zoo model, 40 channels, 4 SR x2 measurements of 48x48, equivariant loss + pairs),
with the largest output difference after 10 Adam steps (the two back-ends round differently);
(4) the campaign's meta-prior outer step (MetaPDNet 20 x 40, four tasks, batch 8 of 48x48 patches, one inner step);
(5) the throughput benchmark's MetaDIP and Meta-RED cases (wide convolutions), for contrast.
It toggles the flag around whole steps, so it measures the code before ``bilevel.backends`` (commit 34ed9ce),
where the steps themselves do not set it. Run from such a checkout:
DEEPINV_META_DATA=... python benchmarks/results/throughput/experiments/onednn_probe.py > onednn_output.txt
"""
import platform
import time

import torch
import torch.nn.functional as F

from deepinv_meta import MetaPDNet, MetaTrainer
from deepinv_meta.benchmarks.throughput import CASES
from deepinv_meta.bilevel import InnerLoop, OuterOptimizer, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.physics import OperatorSpec
from deepinv_meta.tasks import meta_prior_tasks

torch.set_num_threads(1)
print(f"{platform.machine()}, torch {torch.__version__}, 1 thread; best CPU seconds of alternating rounds", flush=True)


def best_cpu_time(call, rounds):
    best = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for enabled in (True, False):
            with torch.backends.mkldnn.flags(enabled=enabled):
                start = time.process_time()
                call()
                best[enabled] = min(best[enabled], time.process_time() - start)
    return best


def report(label, best, unit=1.0, suffix="s"):
    print(f"{label:52s} oneDNN {best[True] / unit:.3f} {suffix}, native {best[False] / unit:.3f} {suffix}, "
          f"x{best[True] / best[False]:.2f}", flush=True)


for n, size in ((8, 32), (8, 64), (4, 96)):
    x = torch.randn(n, 1, size, size, requires_grad=True)
    w = torch.randn(40, 1, 3, 3, requires_grad=True)

    def pair():
        for _ in range(10):
            F.conv_transpose2d(F.conv2d(x, w, padding=1), w, padding=1).sum().backward()

    report(f"one layer's convolutions, batch {n} of {size}x{size}", best_cpu_time(pair, 5), unit=10e-3, suffix="ms")

for name in ("MetaPDNet fine-tuning step", "MetaPDNet outer step"):
    call, steps = CASES[name]("cpu")
    call()
    report(f"throughput case: {name}", best_cpu_time(call, 5), unit=steps)

spec = OperatorSpec.named("sr", factor=2)
physics = spec.build((96, 96), "cpu")
torch.manual_seed(0)
y = physics(torch.rand(14, 1, 96, 96))
meta = MetaPDNet.from_pretrained("meta-prior-supervised")
outputs = {}


def adapt():
    objective, _ = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
    model = finetune(meta, physics, y, inner=InnerLoop(steps=10, lr=1e-3), loss=objective, batch_size=4, seed=0)
    with torch.no_grad():
        outputs[torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled] = model(y[:2], physics)


report("the demo's adaptation step (10 steps)", best_cpu_time(adapt, 3), unit=10)
print(f"largest output difference after 10 steps: {(outputs[True] - outputs[False]).abs().max():.1e}")

images = F.avg_pool2d(torch.rand(40, 1, 96, 96, generator=torch.Generator().manual_seed(0)), 3, 1, 1)
tasks = meta_prior_tasks(images[:30], images[30:], patch_size=48, seed=0)
for inner_loss in ("unsupervised", "supervised"):
    torch.manual_seed(0)
    trainer = MetaTrainer(MetaPDNet(depth=20, channels=40), tasks, inner=InnerLoop(steps=1, lr=1e-3),
                          outer=OuterOptimizer(lr=1e-3), inner_loss=inner_loss, batch_size=8, progress=False,
                          device="cpu")
    trainer.outer_step()
    report(f"the campaign's outer step ({inner_loss} inner loss)", best_cpu_time(trainer.outer_step, 4))

for name in ("MetaDIP outer step (64 px)", "Meta-RED outer step (64 px)"):
    call, steps = CASES[name]("cpu")
    call()
    report(f"throughput case: {name}", best_cpu_time(call, 2), unit=steps)

"""Probe: the demo's adaptation (consistency_demo_probe.py's problem) of MODEL (a zoo name or a model file),
each test image's gain over bicubic every 10 steps (border-padded, self-ensemble, projected), to see whether a
crop that ends below bicubic got there by a late dip (end-point scatter) or never rose.
Run: python trajectory_demo_probe.py MODEL [SCHEDULE LR] (default: constant 1e-3, the demo's)."""
import sys, time, torch
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.data import EMBEDDED_TEST
from deepinv_meta.physics import BorderPadded, Projected
from fold import demo_problem, model_named
torch.set_num_threads(1)
model = sys.argv[1]
schedule, lr = (sys.argv[2], float(sys.argv[3])) if len(sys.argv) > 3 else ("constant", 1e-3)
torch.manual_seed(0)
x, spec, ph, y, adapt_y, bic = demo_problem()
meta = model_named(model)


def score(k, current):
    if k % 10 == 0:
        with torch.no_grad():
            gain = psnr_per_image(Projected(BorderPadded(current, spec, self_ensemble=True)), ph, y, x) - bic
        print(f"{model} {schedule} {lr:g} step {k:3d}: mean {gain.mean():+.2f} | "
              + " ".join(f"{n} {v:+.2f}" for n, v in zip(EMBEDDED_TEST, gain.tolist())), flush=True)


start = time.perf_counter()
objective, label = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
finetune(meta, ph, adapt_y, inner=InnerLoop(steps=100, lr=lr, schedule=schedule), loss=objective, batch_size=4, seed=0, on_step=score)
print(f"({time.perf_counter() - start:.0f} s, one thread)")

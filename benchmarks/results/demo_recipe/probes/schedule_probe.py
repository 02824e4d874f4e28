"""Probe: the demo's adaptation (equivariant + downscaled pairs, STEPS Adam steps of 4, border-padded
reconstruction) with another learning-rate SCHEDULE and peak LR, x2 decimation of BSD68 fold FOLD, zoo MODEL.
Run: DEEPINV_META_DATA=... python schedule_probe.py FOLD MODEL SCHEDULE LR [STEPS]."""
import sys, time, torch
from deepinv_meta import MetaPDNet
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.physics import BorderPadded
from fold import fold_problem
torch.set_num_threads(1)
fold, model, schedule, lr = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 100
x, spec, ph, y, bic = fold_problem(fold)
meta = MetaPDNet.from_pretrained(model)
curve = {}
def score(k, current):
    if k % 25 == 0:
        curve[k] = psnr_per_image(BorderPadded(current, spec), ph, y, x).mean().item() - bic
start = time.perf_counter()
objective, label = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
finetune(meta, ph, y, inner=InnerLoop(steps=steps, lr=lr, schedule=schedule), loss=objective, batch_size=4, seed=0,
         on_step=score)
print(f"fold {fold} {model} {schedule} lr {lr:g} | gain over bicubic ({bic:.2f} dB), border-padded, at step "
      + " ".join(f"{k}: {v:+.2f}" for k, v in curve.items()) + f" | {time.perf_counter() - start:.0f} s", flush=True)

"""Probe: choose the adaptation's end point without ground truth. The demo's adaptation (equivariant + downscaled
pairs, STEPS Adam steps of 4 at 1e-3) on x2 decimation of BSD68 fold FOLD, zoo MODEL; every EVERY steps the
full-batch downscaled-pairs loss of the 14 measurements (||f(A y) - y||^2, no ground truth) and the PSNR gain over
bicubic (border-padded + self-ensemble, ground truth: for scoring only). Prints the gain at the last step and at
the step of the lowest pairs loss.
Run: DEEPINV_META_DATA=... python select_probe.py FOLD MODEL [STEPS] [EVERY]."""
import sys, time, torch
from deepinv_meta import MetaPDNet
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.losses import DownscaledPairsLoss
from deepinv_meta.physics import BorderPadded
from fold import fold_problem
torch.set_num_threads(1)
fold, model = int(sys.argv[1]), sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 100
every = int(sys.argv[4]) if len(sys.argv) > 4 else 10
x, spec, ph, y, bic = fold_problem(fold)
meta = MetaPDNet.from_pretrained(model)
pairs = DownscaledPairsLoss(spec.build)
trace = {}
def score(k, current):
    if k % every == 0:
        with torch.no_grad():
            criterion = pairs(y=y, model=current).mean().item()
        gain = psnr_per_image(BorderPadded(current, spec, self_ensemble=True), ph, y, x).mean().item() - bic
        trace[k] = (criterion, gain)
start = time.perf_counter()
objective, label = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
finetune(meta, ph, y, inner=InnerLoop(steps=steps, lr=1e-3), loss=objective, batch_size=4, seed=0, on_step=score)
chosen = min((k for k in trace if k > 0), key=lambda k: trace[k][0])
print(f"fold {fold} {model} | step: pairs loss / gain over bicubic ({bic:.2f} dB) | "
      + " ".join(f"{k}: {c:.3e}/{g:+.2f}" for k, (c, g) in trace.items()))
print(f"fold {fold} {model} | gain at step {steps}: {trace[steps][1]:+.2f} | at the lowest pairs loss (step {chosen}): "
      f"{trace[chosen][1]:+.2f} | {time.perf_counter() - start:.0f} s", flush=True)

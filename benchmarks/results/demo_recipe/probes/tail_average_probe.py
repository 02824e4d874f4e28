"""Probe: the demo's adaptation (equivariant + downscaled pairs, 100 Adam steps of 4 at 1e-3, border-padded with the
self-ensemble) scored with the final weights and with the average of the weights over the last TAIL steps
(Polyak-Ruppert tail averaging), x2 decimation of BSD68 fold FOLD, zoo MODEL.
Run: DEEPINV_META_DATA=... python tail_average_probe.py FOLD MODEL [TAIL]."""
import copy, sys, time, torch
from deepinv_meta import MetaPDNet
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.physics import BorderPadded
from fold import fold_problem
torch.set_num_threads(1)
fold, model = int(sys.argv[1]), sys.argv[2]
tail = int(sys.argv[3]) if len(sys.argv) > 3 else 50
steps = 100
x, spec, ph, y, bic = fold_problem(fold)
meta = MetaPDNet.from_pretrained(model)
total, count = None, 0
def accumulate(k, current):
    global total, count
    if k > steps - tail:
        params = [p.detach().clone() for p in current.fast_params]
        total = params if total is None else [t + p for t, p in zip(total, params)]
        count += 1
start = time.perf_counter()
objective, label = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
final = finetune(meta, ph, y, inner=InnerLoop(steps=steps, lr=1e-3), loss=objective, batch_size=4, seed=0,
                 on_step=accumulate)
averaged = copy.deepcopy(final)
with torch.no_grad():
    for p, t in zip(averaged.parameters(), total):
        p.copy_(t / count)
gain = {name: psnr_per_image(BorderPadded(m, spec, self_ensemble=True), ph, y, x).mean().item() - bic
        for name, m in (("final", final), (f"mean of the last {count}", averaged))}
print(f"fold {fold} {model} | gain over bicubic ({bic:.2f} dB) after {steps} steps, border-padded + self-ensemble: "
      + ", ".join(f"{k} {v:+.2f}" for k, v in gain.items()) + f" | {time.perf_counter() - start:.0f} s", flush=True)

"""Probe: the demo's adaptation (equivariant + downscaled pairs, 100 Adam steps of 4 at 1e-3, border-padded with the
self-ensemble), scored as it is and after the projection onto the measurements (physics.Projected, x + A^+ (y - A x); A^+ = A^T
for decimation, where A A^T = I), x2 decimation of BSD68 fold FOLD, zoo MODEL (or a model file). Also prints the relative
residual ||A x - y|| / ||y|| of the reconstruction.
Run: DEEPINV_META_DATA=... python consistency_probe.py FOLD MODEL [SCHEDULE LR] (default: constant 1e-3)."""
import sys, time, torch
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.physics import BorderPadded, Projected
from fold import fold_problem, model_named
torch.set_num_threads(1)
fold, model = int(sys.argv[1]), sys.argv[2]
schedule, lr = (sys.argv[3], float(sys.argv[4])) if len(sys.argv) > 4 else ("constant", 1e-3)
x, spec, ph, y, bic = fold_problem(fold)
meta = model_named(model)
start = time.perf_counter()
objective, label = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
final = finetune(meta, ph, y, inner=InnerLoop(steps=100, lr=lr, schedule=schedule), loss=objective, batch_size=4, seed=0)
net = BorderPadded(final, spec, self_ensemble=True)
with torch.no_grad():
    xhat = net(y, ph)
    residual = ((ph.A(xhat) - y).norm() / y.norm()).item()
gain = {name: psnr_per_image(m, ph, y, x).mean().item() - bic for name, m in (("as is", net), ("projected", Projected(net)))}
print(f"fold {fold} {model} {schedule} {lr:g} | residual {residual:.2e} | gain over bicubic ({bic:.2f} dB): "
      + ", ".join(f"{k} {v:+.2f}" for k, v in gain.items()) + f" | {time.perf_counter() - start:.0f} s", flush=True)

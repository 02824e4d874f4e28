"""Probe: consistency_probe.py on the demo's own problem (x2 decimation of the 96x96 centre crops of camera,
astronaut and coffee; adapted on those 3 and the 11 other bundled low-resolution images, as ``deepinv-meta demo``
does), zoo MODEL (or a model file): per-image gain over bicubic with and without the projection onto the measurements.
Run: python consistency_demo_probe.py MODEL."""
import sys, time, torch
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.data import EMBEDDED_TEST
from deepinv_meta.physics import BorderPadded, Projected
from fold import demo_problem, model_named
torch.set_num_threads(1)
model = sys.argv[1]
torch.manual_seed(0)
x, spec, ph, y, adapt_y, bic = demo_problem()
start = time.perf_counter()
objective, label = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
meta = model_named(model)
final = finetune(meta, ph, adapt_y, inner=InnerLoop(steps=100, lr=1e-3), loss=objective,
                 batch_size=4, seed=0)
net = BorderPadded(final, spec, self_ensemble=True)
for name, m in (("as is", net), ("projected", Projected(net))):
    gain = psnr_per_image(m, ph, y, x) - bic
    print(f"{model} | {name:9s}: mean {gain.mean():+.2f} dB over bicubic ({bic.mean():.2f}) | "
          + " ".join(f"{k} {v:+.2f}" for k, v in zip(EMBEDDED_TEST, gain.tolist())), flush=True)
print(f"({time.perf_counter() - start:.0f} s, one thread)")

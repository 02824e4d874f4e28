"""Probe: MetaPDNet started from bicubic upsampling instead of A^T y (zero-filling) on x2 decimation, BSD68 fold
FOLD, zoo MODEL: the border-padded reconstruction without adaptation and during STEPS (100) steps of the demo's
adaptation (equivariant + downscaled pairs). Run: DEEPINV_META_DATA=... python bicubic_init_probe.py FOLD MODEL
[adjoint] [steps=STEPS]."""
import sys, time, torch
import deepinv_meta.models.pdnet as pdnet
from deepinv_meta import MetaPDNet
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.physics import Bicubic, BorderPadded
from fold import fold_problem
torch.set_num_threads(1)
fold, model = int(sys.argv[1]), sys.argv[2]
adjoint_init = "adjoint" in sys.argv
steps = next((int(a[6:]) for a in sys.argv if a.startswith("steps=")), 100)
if not adjoint_init:
    original = pdnet.adjoint_image
    def bicubic_start(physics, y, name):
        original(physics, y, name)  # the same checks
        return Bicubic(physics.factor)(y)
    pdnet.adjoint_image = bicubic_start
x, spec, ph, y, bic = fold_problem(fold)
meta = MetaPDNet.from_pretrained(model)
curve = {}
def score(k, current):
    if k % 25 == 0 and (k <= 100 or k % 50 == 0):
        curve[k] = psnr_per_image(BorderPadded(current, spec), ph, y, x).mean().item() - bic
score(0, meta)
start = time.perf_counter()
objective, label = adaptation_objective("equivariant", spec, pairs=True, rng=torch.Generator().manual_seed(1))
finetune(meta, ph, y, inner=InnerLoop(steps=steps, lr=1e-3), loss=objective, batch_size=4, seed=0, on_step=score)
print(f"fold {fold} {model} start {'A^T y' if adjoint_init else 'bicubic'} | gain over bicubic ({bic:.2f} dB), "
      "border-padded, at step " + " ".join(f"{k}: {v:+.2f}" for k, v in curve.items())
      + f" | {time.perf_counter() - start:.0f} s", flush=True)

"""Side run: the zoo's MetaPDNet models on the Meta-Prior benchmark's MRI x4 protocol (knee slices P1-P5 to
fine-tune, P6-P10 to test, Cartesian mask of acceleration 4 with 8 % fully sampled centre, PSNR of the
magnitude), with the benchmark's data and operator: fine-tuning with 2 slices a step (the benchmark's MRI
mini-batch), supervised or equivariant (rotations: shifts only change k-space phases) for 50 steps, scored after
0 / 20 / 50 steps, beside the zero-filled reconstruction and the same architecture from random initialisation.

Run: DEEPINV_META_DATA=... python benchmarks/results/meta-prior/zoo_mri/run.py > .../output.txt
"""

import json
import platform
import time

import torch

import deepinv_meta
from deepinv_meta import finetune
from deepinv_meta.baselines import Adjoint, psnr_per_image
from deepinv_meta.benchmarks.meta_prior import FULL, load_data, unseen_physics
from deepinv_meta.benchmarks.report import machine
from deepinv_meta.bilevel import InnerLoop
from deepinv_meta.data import data_root
from deepinv_meta.losses import equivariant_objective
from deepinv_meta.models import MetaPDNet

torch.set_num_threads(1)
cfg = dict(FULL)
data = load_data(data_root(), cfg, "cpu")
physics = unseen_physics(data, cfg, "cpu", seed=0)["MRI x4"][0]
x_ft, x_test = data["mri_finetune"], data["mri_test"]
y_ft, y_test = physics(x_ft), physics(x_test)
print(f"zoo MRI x4 side run | {machine('cpu')} | {platform.node()} | fine-tune {tuple(x_ft.shape)}, "
      f"test {tuple(x_test.shape)}", flush=True)
rows = [{"model": "zero-filled (A^T y)", "loss": None, "steps": 0,
         "psnr": psnr_per_image(Adjoint(), physics, y_test, x_test, magnitude=True).mean().item()}]
print(f"zero-filled: {rows[0]['psnr']:.2f} dB", flush=True)


def curve(name, model, loss, steps=(20, 50)):
    scores = {0: psnr_per_image(model, physics, y_test, x_test, magnitude=True).mean().item()}
    objective = equivariant_objective("rotate", torch.Generator().manual_seed(1)) if loss == "equivariant" else loss

    def on_step(k, current):
        if k in steps:
            scores[k] = psnr_per_image(current, physics, y_test, x_test, magnitude=True).mean().item()

    start = time.perf_counter()
    finetune(model, physics, y_ft, x=x_ft if loss == "supervised" else None, inner=InnerLoop(steps=max(steps), lr=1e-3),
             loss=objective, batch_size=2, chunk_size=1, on_step=on_step)
    rows.extend({"model": name, "loss": loss, "steps": k, "psnr": v} for k, v in scores.items())
    print(f"  {name} + {loss}: " + ", ".join(f"{k} steps {v:.2f} dB" for k, v in scores.items())
          + f" ({time.perf_counter() - start:.0f} s)", flush=True)


for name in ("meta-prior-supervised", "meta-prior-unsupervised"):
    info = deepinv_meta.pretrained.available()[name]
    print(f"{name}: {info['outer_steps']} outer steps, {info['cpu_minutes']} CPU min, held-out "
          f"{info['validation_psnr']} dB", flush=True)
    for loss in ("supervised", "equivariant"):
        curve(name, deepinv_meta.pretrained.load(name), loss)
torch.manual_seed(0)
curve("random init", MetaPDNet(**deepinv_meta.pretrained.load("meta-prior-unsupervised").config), "supervised")
json.dump(rows, open(__file__.replace("run.py", "results.json"), "w"), indent=1)

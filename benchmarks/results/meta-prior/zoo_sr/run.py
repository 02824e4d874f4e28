"""Side run: the zoo's MetaPDNet models on the Meta-Prior benchmark's SR x2 protocol (Set3C), with the
benchmark's own functions and settings: fine-tuning on 32 BSD400 patches 64x64, PSNR on Set3C after
0 / 20 / 50 steps (supervised, equivariant, and equivariant plus the downscaled pairs), from the zoo model and from random initialisation of the same architecture.

Run: DEEPINV_META_DATA=... python benchmarks/results/meta-prior/zoo_sr/run.py > .../output.txt
"""

import json
import platform
import time

import torch

import deepinv_meta
from deepinv_meta.benchmarks.meta_prior import FULL, finetune_curve, load_data, unseen_physics
from deepinv_meta.benchmarks.report import machine
from deepinv_meta.commands import adaptation_objective
from deepinv_meta.physics import OperatorSpec
from deepinv_meta.data import data_root
from deepinv_meta.models import MetaPDNet

torch.set_num_threads(1)
# the equivariant loss with the zero-shot pairs (on by default at 8f2b591, where this script began; an option now)
PAIRS = adaptation_objective("equivariant", OperatorSpec.named("sr", factor=2), pairs=True)[0]
cfg = dict(FULL)
root = data_root()
data = load_data(root, cfg, "cpu")
(sr_ft, sr_test) = unseen_physics(data, cfg, "cpu", seed=0)["SR x2"]
x_ft, x_test = data["sr_finetune"], data["sr_test"]
y_ft, y_test = sr_ft(x_ft), sr_test(x_test)
print(f"zoo SR x2 side run | {machine('cpu')} | {platform.node()}", flush=True)
rows = []
for name in ("meta-prior-supervised", "meta-prior-unsupervised"):
    info = deepinv_meta.pretrained.available()[name]
    model = deepinv_meta.pretrained.load(name)
    print(f"{name}: {info['outer_steps']} outer steps, {info['cpu_minutes']} CPU min, held-out {info['validation_psnr']} dB",
          flush=True)
    for loss in ("supervised", "equivariant", "equivariant + downscaled pairs"):
        start = time.perf_counter()
        objective = PAIRS if loss == "equivariant + downscaled pairs" else loss
        curve, seconds = finetune_curve(model, sr_ft, y_ft, x_ft, sr_test, y_test, x_test, loss=objective,
                                        steps=[20, 50], cfg=cfg, magnitude=False)
        for step, values in curve.items():
            rows.append({"model": name, "loss": loss, "steps": step, "psnr": values.mean().item()})
        print(f"  + {loss}: " + ", ".join(f"{s} steps {v.mean().item():.2f} dB" for s, v in curve.items())
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
torch.manual_seed(0)
scratch = MetaPDNet(**deepinv_meta.pretrained.load("meta-prior-unsupervised").config)
curve, _ = finetune_curve(scratch, sr_ft, y_ft, x_ft, sr_test, y_test, x_test, loss="supervised", steps=[20, 50],
                          cfg=cfg, magnitude=False)
rows += [{"model": "random init", "loss": "supervised", "steps": s, "psnr": v.mean().item()} for s, v in curve.items()]
print("random init + supervised: " + ", ".join(f"{s} steps {v.mean().item():.2f} dB" for s, v in curve.items()), flush=True)
json.dump(rows, open(__file__.replace("run.py", "results.json"), "w"), indent=1)

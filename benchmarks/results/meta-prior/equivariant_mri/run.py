"""Side run: the committed unsupervised meta-model fine-tuned on MRI x4 with rotation-equivariant imaging.

The benchmark's own functions (data, operator, fine-tuning curve) with its full settings; only the
``unsupervised meta-model + equivariant (rotate)`` curve is computed, the other MRI rows are the committed
run's. Run from the repository root with ``DEEPINV_META_DATA`` set:

    python benchmarks/results/meta-prior/equivariant_mri/run.py [rotate|shift ...] > output.txt
"""

import sys
import time
from pathlib import Path

import torch

from deepinv_meta.benchmarks import meta_prior
from deepinv_meta.benchmarks.report import machine
from deepinv_meta.data import data_root
from deepinv_meta.losses import equivariant_objective

SEED = 0
TRANSFORMS = sys.argv[1:] or ["rotate"]
cfg = dict(meta_prior.FULL)
device = torch.device("cpu")
started = time.perf_counter()
print(f"MRI x4, equivariant ({', '.join(TRANSFORMS)}) fine-tuning of the committed unsupervised meta-model | {machine(device)}", flush=True)
data = meta_prior.load_data(data_root(None), cfg, device)
physics_ft, physics_test = meta_prior.unseen_physics(data, cfg, device, SEED)["MRI x4"]
x_ft, x_test = data["mri_finetune"], data["mri_test"]
y_ft, y_test = physics_ft(x_ft), physics_test(x_test)
model, steps, _ = meta_prior.reload_meta_model(Path("benchmarks/results/meta-prior/meta_pdnet_unsupervised.pt"), cfg)
print(f"meta-model: {steps} outer steps; fine-tuning set {tuple(x_ft.shape)}, test set {tuple(x_test.shape)}, "
      f"batch {cfg['finetune_batch']['MRI x4']}, Adam lr {cfg['finetune_lr']}", flush=True)
for transform in TRANSFORMS:
    # the benchmark's generator for the equivariant rows (meta_prior.run: seed + 2)
    objective = equivariant_objective(transform, torch.Generator(device).manual_seed(SEED + 2))
    curve, seconds = meta_prior.finetune_curve(model, physics_ft, y_ft, x_ft, physics_test, y_test, x_test,
                                               loss=objective, steps=cfg["curve_steps"], cfg=cfg, magnitude=True,
                                               batch_size=cfg["finetune_batch"]["MRI x4"])
    print(f"  MRI x4 unsupervised meta-model, equivariant ({transform}) fine-tuning, {seconds:.0f} s: "
          + ", ".join(f"{k}: {v.mean():.2f} ± {v.std():.2f}" for k, v in curve.items()), flush=True)
print(f"wall time {time.perf_counter() - started:.0f} s", flush=True)

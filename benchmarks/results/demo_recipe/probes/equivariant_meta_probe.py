"""Probe: meta-train for the demo's adaptation, i.e. the "equivariant" inner loss instead of the supervised one.

Warm-starts the campaign's MetaPDNet configuration (deepinv_meta.campaign._meta_prior: BSD400 48x48 patches, the
four training tasks, one inner Adam step, batches of 8) from the zoo's meta-prior-supervised weights, continues
meta-training with inner_loss="equivariant" (measurement consistency + shift equivariant imaging, no ground truth
in the inner loop; supervised outer loss) for MINUTES of one thread at the supervised run's current outer rate,
and saves the model to OUT (resumable: the trainer checkpoint sits beside it). Then score it on the BSD68 folds:

    DEEPINV_META_DATA=../shared/data python benchmarks/results/demo_recipe/probes/equivariant_meta_probe.py \
        MINUTES OUT.pt
    DEEPINV_META_DATA=../shared/data python benchmarks/results/demo_recipe/run.py OUT.pt \
        "equivariant (shift) + downscaled pairs" --tag=NAME
"""

import sys
import time
from pathlib import Path

import torch

from deepinv_meta import MetaTrainer, pretrained, save
from deepinv_meta.bilevel import OuterOptimizer
from deepinv_meta.campaign import _meta_prior
from deepinv_meta.data import data_root

torch.set_num_threads(1)
minutes, out = float(sys.argv[1]), Path(sys.argv[2])
setup = _meta_prior("equivariant")(data_root(), "cpu")
setup.model.load_state_dict(pretrained.load("meta-prior-supervised").state_dict())
start_steps = pretrained.available()["meta-prior-supervised"]["outer_steps"]
args = dict(setup.trainer_args, outer=OuterOptimizer(lr=2.5e-4))  # the supervised run's rate now (factor 0.25)
trainer = MetaTrainer(setup.model, setup.tasks, device="cpu", seed=0, progress=False,
                      checkpoint=out.with_suffix(".trainer.pt"), **args)
print(f"warm start: meta-prior-supervised ({start_steps} outer steps); resumed at equivariant step {trainer.step}",
      flush=True)
before = trainer.validate()
begin, step0 = time.perf_counter(), trainer.step
trainer.train(steps=10**9, max_time=60 * minutes)
seconds = time.perf_counter() - begin
after = trainer.validate()
print(f"{trainer.step - step0} equivariant outer steps in {seconds / 60:.1f} min ({seconds / max(trainer.step - step0, 1):.2f}"
      f" s/step); held-out MSE after one equivariant inner step {before:.4e} -> {after:.4e}", flush=True)
save(trainer.model, out, warm_start=f"meta-prior-supervised at {start_steps} outer steps",
     inner_loss="equivariant", outer_steps=trainer.step)
print(f"saved {out}")

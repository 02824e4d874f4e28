"""Side run: the zoo's Meta-RED and variational models on their benchmarks' test protocols, with the benchmarks' own
functions: Meta-RED (L2) on Table 3 (deconvolution of the 50 test faces, 64x64; reference RED to convergence 29.56 dB
in the committed run) and the 2S-CNN + LSTM-S (joint) I-score on MNIST (1000 test digits; committed 0.615, target
0.40). The variational model is scored on the benchmark's standardised digits, so its normalisation is left at
the identity here.

Run: DEEPINV_META_DATA=... python benchmarks/results/zoo_side_runs/run.py > .../output.txt
"""

import json
from pathlib import Path

import torch

import deepinv_meta
from deepinv_meta.benchmarks import meta_red, variational
from deepinv_meta.benchmarks.report import machine
from deepinv_meta.benchmarks.settings import configure
from deepinv_meta.data import data_root

torch.set_num_threads(1)
root = data_root()
print(f"zoo side runs | {machine('cpu')}", flush=True)
results = {}

info = deepinv_meta.pretrained.available()["meta-red-deblur"]
cfg = configure(meta_red.FULL, {})
_, x_test = meta_red.split(meta_red.load_faces(root, "cpu"), 64, cfg)
score = meta_red.Scorer(meta_red.deconvolution_physics(cfg, "cpu"), x_test)
results["meta-red"] = score(deepinv_meta.pretrained.load("meta-red-deblur"))
print(f"Meta-RED zoo ({info['outer_steps']} outer steps, {info['cpu_minutes']} CPU min): "
      f"{results['meta-red']['psnr']:.2f} dB on {len(x_test)} test faces", flush=True)

info = deepinv_meta.pretrained.available()["variational-mnist"]
cfg = configure(variational.FULL, {})
exp = variational.mnist_experiment(root, cfg, "cpu", seed=0)
model = deepinv_meta.pretrained.load("variational-mnist")
model.normalisation = (0.0, 1.0)  # the benchmark's data are standardised already
row = exp.evaluate("2S-CNN + LSTM-S (joint), zoo", model, model.prior)
results["variational"] = row
print(f"variational zoo ({info['outer_steps']} outer steps, {info['cpu_minutes']} CPU min): "
      f"R {row['r_score']:.3f} I {row['i_score']:.3f}", flush=True)
json.dump(results, open(Path(__file__).with_name("results.json"), "w"), indent=1, default=float)

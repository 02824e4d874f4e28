"""Choose the demo's adaptation loss on images the demo never shows: x2 SR (decimation) of BSD68 crops.

The demo adapts a zoo MetaPDNet without ground truth on 14 low-resolution 96x96 images (3 scored, 11 more
unlabelled), 100 Adam steps of 4 at lr 1e-3. The same structure is rebuilt here from BSD68 (disjoint from the
demo's scikit-image images and from the BSD400 training set): folds of 14 centre crops, each adapted on its 14
measurements alone and scored on all 14 (the adaptation treats them alike), every 25 steps, each reconstruction
as it is, from the border-replicated measurement (physics.BorderPadded, pad 1) and, the same, averaged over the
8 flips and transposes (self_ensemble=True). One thread.

output_losses.txt / results_losses.json: the first round, which chose the loss (the script at commit 0d9a02e,
plain reconstructions only, with the scale transform); output.txt / results.json: this script at commit cb4785a
(session-start zoo, no self-ensemble); output_ensemble.txt / results_ensemble.json: this script, --tag=ensemble.

    DEEPINV_META_DATA=../shared/data python benchmarks/results/demo_recipe/run.py [MODEL...] [VARIANT...] [FOLD...]
        (MODEL: a zoo name or a model file.pt)
        [--tag=NAME]   (writes results_NAME.json instead of results.json) [--steps=N]  (default 100)

(no argument: every model, the main variants, every fold; the exploration variants run when named).
"""

import json
import platform
import sys
import time
from pathlib import Path

import deepinv as dinv
import torch

from deepinv_meta import MetaPDNet, load, pretrained
from deepinv_meta.baselines import psnr_per_image
from deepinv_meta.bilevel import InnerLoop, finetune
from deepinv_meta.data import center_crop, data_root, load_image_folder
from deepinv_meta.losses import DownscaledPairsLoss, equivariance_term, equivariant_objective
from deepinv_meta.physics import Bicubic, BorderPadded, OperatorSpec

torch.set_num_threads(1)
SIZE, FOLDS, PER_FOLD, STEPS, EVERY, BATCH = 96, 3, 14, 100, 25, 4
MODELS = ("meta-prior-supervised", "meta-prior-unsupervised")
SR = OperatorSpec.named("sr", factor=2)
VARIANTS = {  # name: (transform, pairs weight or None, lr)
    "equivariant (shift), the demo before": ("shift", None, 1e-3),
    "equivariant (shift) + downscaled pairs": ("shift", 1.0, 1e-3),
}
EXPLORATION = {  # run when named
    "equivariant (scale)": ("scale", None, 1e-3),
    "equivariant (shift*scale)": ("shift*scale", None, 1e-3),
    "equivariant (shift) + 3 x downscaled pairs": ("shift", 3.0, 1e-3),
    "equivariant (shift) + downscaled pairs, lr 2e-3": ("shift", 1.0, 2e-3),
}


def objective(transform, pairs_weight):
    rng = torch.Generator().manual_seed(1)  # draws the transforms
    if pairs_weight is None:
        return equivariant_objective(transform, rng)
    return [dinv.loss.MCLoss(), equivariance_term(transform, rng), DownscaledPairsLoss(SR.build, weight=pairs_weight)]


args = sys.argv[1:]
models = [m for m in args if m in MODELS or m.endswith(".pt")] or list(MODELS)  # zoo names or saved models
variants = {k: v for k, v in {**VARIANTS, **EXPLORATION}.items() if k in args} or VARIANTS
folds = [int(a) for a in args if a.isdigit()] or list(range(FOLDS))
tag = next((a.split("=", 1)[1] for a in args if a.startswith("--tag=")), None)
STEPS = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--steps=")), STEPS)

images = load_image_folder(data_root() / "images" / "bsd68", grey=True, limit=FOLDS * PER_FOLD)
x_all = torch.stack([center_crop(im, SIZE) for im in images])
physics = SR.build((SIZE, SIZE), "cpu")
print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread | BSD68 first {len(x_all)} images (sorted "
      f"by name), {SIZE}x{SIZE} centre crops, {FOLDS} folds of {PER_FOLD} | {STEPS} Adam steps of {BATCH}, "
      f"scored every {EVERY} | PSNR gain over bicubic, mean over the fold's 14 images | command: "
      f"python benchmarks/results/demo_recipe/run.py {' '.join(args)}")
results = {"config": dict(size=SIZE, folds=FOLDS, per_fold=PER_FOLD, steps=STEPS, every=EVERY, batch=BATCH),
           "zoo": {}, "bicubic": [], "runs": []}
for fold in range(FOLDS):
    x = x_all[fold * PER_FOLD:(fold + 1) * PER_FOLD]
    results["bicubic"].append(psnr_per_image(Bicubic(2), physics, physics(x), x).mean().item())
print("bicubic per fold (dB):", " ".join(f"{v:.2f}" for v in results["bicubic"]), flush=True)
for name in models:
    if name.endswith(".pt"):
        meta, metadata = load(name, return_metadata=True)
        results["zoo"][name] = metadata.get("outer_steps")
    else:
        meta = MetaPDNet.from_pretrained(name)
        results["zoo"][name] = pretrained.available()[name]["outer_steps"]
    print(f"zoo {name}: {results['zoo'][name]} outer steps", flush=True)
    for variant, (transform, pairs_weight, lr) in variants.items():
        for fold in folds:
            x = x_all[fold * PER_FOLD:(fold + 1) * PER_FOLD]
            y = physics(x)
            curve, padded, ensemble = {}, {}, {}

            def score(k, current):
                if k % EVERY == 0:
                    curve[k] = psnr_per_image(current, physics, y, x).mean().item()
                    padded[k] = psnr_per_image(BorderPadded(current, SR), physics, y, x).mean().item()
                    ensemble[k] = psnr_per_image(BorderPadded(current, SR, self_ensemble=True), physics, y, x).mean().item()

            score(0, meta)

            start = time.perf_counter()
            finetune(meta, physics, y, inner=InnerLoop(steps=STEPS, lr=lr), loss=objective(transform, pairs_weight),
                     batch_size=BATCH, seed=0, on_step=score)
            results["runs"].append(dict(model=name, variant=variant, fold=fold, curve=curve, border_padded=padded,
                                        self_ensemble=ensemble,
                                        seconds=time.perf_counter() - start))
            print(f"{name} | {variant} | fold {fold} | gain at step (as it is / border-padded / + self-ensemble) "
                  + " ".join(f"{k}: {v - results['bicubic'][fold]:+.2f}/{padded[k] - results['bicubic'][fold]:+.2f}/"
                             f"{ensemble[k] - results['bicubic'][fold]:+.2f}" for k, v in curve.items()) + f" | {time.perf_counter() - start:.0f} s", flush=True)
    Path(__file__).with_name(f"results_{tag}.json" if tag else "results.json").write_text(json.dumps(results, indent=1))

print("\nsummary: gain over bicubic after", STEPS, "steps, mean over folds (dB)")
for name in models:
    for variant in variants:
        for key, how in (("curve", "as it is"), ("border_padded", "border-padded"),
                         ("self_ensemble", "+ self-ensemble")):
            gains = [r[key][STEPS] - results["bicubic"][r["fold"]] for r in results["runs"]
                     if r["model"] == name and r["variant"] == variant]
            print(f"  {name:24s} {variant:40s} {how:14s} {sum(gains) / len(gains):+.2f}  (folds: "
                  + " ".join(f"{g:+.2f}" for g in gains) + ")")

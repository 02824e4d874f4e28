"""``deepinv-meta demo``: a zoo meta-model adapted, without ground truth, to an operator it never saw.

Everything runs offline on scikit-image's bundled images. A zoo MetaPDNet (``meta-prior-supervised`` by default,
``--model meta-prior-unsupervised`` for the other; both meta-trained by the project's campaign on BSD400
patches over denoising, TV-estimation, deblurring and inpainting) is adapted to x2 super-resolution with the
equivariant loss (measurement consistency plus shift-equivariant imaging, plus the zero-shot pairs of each
measurement and its own downscaled copy; Adam with a cosine decay of its rate), on low-resolution images
alone: the 3 test measurements and those of the 11 other bundled images, whose ground truth is never used; the
networks reconstruct from the border-replicated measurements, averaged over their 8 flips and transposes (the
geometric self-ensemble). The measurements are noiseless, so every method's reconstruction, baselines included,
is projected onto the images that reproduce them exactly (:class:`~deepinv_meta.physics.Projected`). The recipe
was chosen on BSD68 crops, not on these images (docs/notes.rst). It is compared
with bicubic upsampling, TGV and DPIR (their parameters tuned on 3 of the other images, with their ground
truth: what a baseline needs), the same network from random initialisation adapted the same way, and, on
request, the paper's plain unsupervised loss. ``--train-minutes M`` meta-trains a small model from scratch
instead of loading the zoo.
"""

from __future__ import annotations

import json
import textwrap
import platform
import time
from pathlib import Path

import deepinv as dinv
import torch

from .baselines import BASELINE_GRIDS, baseline_builder, grid_search
from .bilevel import InnerLoop, MetaTrainer, OuterOptimizer, finetune
from .bilevel.trainer import default_device
from .commands import adaptation_objective, default_denoiser
from . import pretrained
from .data import EMBEDDED_TEST, EMBEDDED_TRAIN, center_crop, embedded_images
from .figures import save_figure
from .models import MetaPDNet
from .physics import Adjoint, Bicubic, BorderPadded, OperatorSpec, Projected
from .tasks import meta_prior_tasks

# the zoo model it adapts by default: of the two Meta-Prior models, the one that adapts better without ground
# truth here (docs/notes.rst); --model meta-prior-unsupervised shows the other
ZOO_MODEL = "meta-prior-supervised"
ADAPT_BATCH = 4  # measurements per adaptation step (docs/notes.rst: 4 did as well as 8, in half the time)
# a constant rate leaves the end point of the adaptation on an oscillating trajectory (up to 0.5 dB from one zoo
# export to the next); the decay settles it, as well on BSD68 on average (docs/notes.rst)
ADAPT_LR = 1e-3


def _zoo_model(name: str, device):
    model = MetaPDNet.from_pretrained(name, device=device)
    info = pretrained.available()[name]
    print(f"meta-model: zoo '{name}' ({info['outer_steps']} outer steps, {info['cpu_minutes']:.0f} CPU min "
          f"+ {info['gpu_minutes']:.0f} GPU min of meta-training on {info['training_data']})")
    return model


def _meta_model(model: str, train_minutes: float | None, device, seed: int):
    """The zoo model ``model``, or a small MetaPDNet meta-trained for ``train_minutes`` (the from-scratch path)."""
    if not train_minutes:
        return _zoo_model(model, device)
    tasks = meta_prior_tasks(embedded_images(EMBEDDED_TRAIN), patch_size=32, seed=seed)
    trainer = MetaTrainer(MetaPDNet(depth=10, channels=16), tasks, inner=InnerLoop(steps=1, lr=1e-3),
                          inner_loss="unsupervised", outer=OuterOptimizer(lr=5e-3), batch_size=4, device=device, seed=seed,
                          progress=True)
    start = time.perf_counter()
    trainer.train(steps=10**9, max_time=60 * train_minutes)
    print(f"meta-model: MetaPDNet(depth=10, channels=16) meta-trained here, {trainer.step} outer steps in "
          f"{time.perf_counter() - start:.0f} s on scikit-image patches")
    return trainer.model.eval()


def run_demo(*, model: str = ZOO_MODEL, train_minutes: float | None = None, steps: int = 100, size: int = 96,
             device=None, seed: int = 0, paper_loss: bool = False, without_pairs: bool = False,
             figure: str | Path | None = None, json_out: str | Path | None = None) -> list[dict]:
    """Adapt the meta-model to unseen SR x2 without ground truth; print, return (and optionally save) the table."""
    device = torch.device(device) if device else default_device()
    torch.manual_seed(seed)
    started = time.perf_counter()
    print(f"deepinv-meta demo | device {device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads) | torch {torch.__version__} | deepinv {dinv.__version__}")
    meta = _meta_model(model, train_minutes, device, seed)

    # Unseen operator: noiseless x2 super-resolution by decimation, as in the paper.
    factor = 2
    x = torch.stack([center_crop(im, size) for im in embedded_images(EMBEDDED_TEST)]).to(device)
    spec = OperatorSpec.named("sr", factor=factor)
    physics = spec.build((size, size), device)
    y = physics(x)
    other_x = torch.stack([center_crop(im, size) for im in embedded_images(EMBEDDED_TRAIN)]).to(device)
    tune_x, tune_y = other_x[:3], physics(other_x[:3])
    adapt_y = torch.cat([y, physics(other_x)])  # low-resolution images only: no ground truth
    print(f"unseen task: SR x{factor} (decimation), {len(x)} test images {size}x{size} ({', '.join(EMBEDDED_TEST)}); "
          f"adaptation: {steps} Adam steps (rate {ADAPT_LR:g}, cosine decay) of {ADAPT_BATCH} measurements drawn "
          f"from the {len(y)} test ones and "
          f"{len(other_x)} other low-resolution images, no ground truth, loss "
          f"{adaptation_objective('equivariant', spec, pairs=True)[1]}; every reconstruction projected onto its "
          "noiseless measurement")

    rows, images = [], {"measurement (A^T y)": Adjoint()(y, physics)}

    def add(method: str, reconstructor, **extra):
        # noiseless measurements: every method's image is projected onto the ones that reproduce them exactly
        # (a no-op for bicubic, which interpolates them; docs/notes.rst)
        with torch.no_grad():  # reconstructed once, for the table and the figure
            images[method] = Projected(reconstructor)(y, physics)
        values = dinv.loss.metric.PSNR()(images[method].clamp(0, 1), x)
        rows.append({"method": method, "psnr": values.mean().item(), "psnr_std": values.std().item(),
                     "psnr_per_image": dict(zip(EMBEDDED_TEST, values.tolist())), **extra})
        print(f"  {method:54s} {rows[-1]['psnr']:6.2f} dB", flush=True)

    add("bicubic upsampling", Bicubic(factor))
    params, _, _ = grid_search(baseline_builder("tgv", init=Bicubic(factor)), BASELINE_GRIDS["tgv"], physics,
                               tune_y, tune_x)
    add("TGV (tuned on other images)", baseline_builder("tgv", init=Bicubic(factor))(**params), **params)
    denoiser = _offline_denoiser(device)
    if denoiser is not None:
        build = baseline_builder("dpir", denoiser=denoiser, init=Bicubic(factor))
        params, _, _ = grid_search(build, BASELINE_GRIDS["dpir"], physics, tune_y, tune_x)
        add("DPIR, FFDNet (tuned on other images)", build(**params), **params)
    # the networks reconstruct from the border-replicated measurement (the border rule of bicubic), with the
    # self-ensemble (docs/notes.rst)
    add("meta-model, no adaptation", BorderPadded(meta, spec, self_ensemble=True))
    inner = InnerLoop(steps=steps, lr=ADAPT_LR, schedule="cosine")

    def adapt(model, loss="equivariant", pairs=True):
        objective, _ = adaptation_objective(loss, spec, pairs=pairs, rng=torch.Generator(device).manual_seed(seed + 1))
        return BorderPadded(finetune(model, physics, adapt_y, inner=inner, loss=objective, batch_size=ADAPT_BATCH,
                                     seed=seed, progress=True), spec, self_ensemble=True)

    add(f"meta-model + {steps} equivariant steps (no GT)", adapt(meta))
    if without_pairs:  # what the downscaled pairs add
        add(f"meta-model + {steps} equivariant steps without pairs (no GT)", adapt(meta, pairs=False))
    if paper_loss:  # measurement consistency alone: drifts on SR (the equivariant term fixes that)
        add(f"meta-model + {steps} unsupervised steps (paper's loss)", adapt(meta, "unsupervised", pairs=False))
    torch.manual_seed(seed + 1)
    add(f"random init + {steps} equivariant steps (no GT)", adapt(type(meta)(**meta.config).to(device)))

    width = max(len(row["method"]) for row in rows)
    print(f"\n| {'method':{width}s} | PSNR (dB)     |\n|{'-' * (width + 2)}|{'-' * 15}|")
    for row in rows:
        print(f"| {row['method']:{width}s} | {row['psnr']:5.2f} ± {row['psnr_std']:4.2f} |")
    print(f"({time.perf_counter() - started:.0f} s)")
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2) + "\n")
    if figure:
        _figure(images, x, figure)
    return rows


def _offline_denoiser(device):
    """The offline grey FFDNet that ``evaluate`` uses by default, or ``None`` (the DPIR row is then left out)."""
    from .weights import load_denoiser

    try:
        return load_denoiser(default_denoiser(), device=device)
    except ValueError:  # no $DEEPINV_META_DATA, or no FFDNet weights in it
        return None


def _figure(images: dict, x: torch.Tensor, path) -> None:
    """One row per test image: measurement, each method, ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(images) + ["ground truth"]
    fig, axes = plt.subplots(len(x), len(columns), figsize=(2.2 * len(columns), 2.4 * len(x)), squeeze=False)
    for i in range(len(x)):
        for j, name in enumerate(columns):
            image = x[i] if name == "ground truth" else images[name][i]
            axes[i, j].imshow(image[0].clamp(0, 1).cpu(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title("\n".join(textwrap.wrap(name, 24)), fontsize=7)
    save_figure(fig, path, dpi=110)

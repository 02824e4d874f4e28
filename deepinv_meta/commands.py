r"""``deepinv-meta train | finetune | evaluate``: the Meta-Prior workflow on your own images.

1. :func:`run_train` meta-trains a :class:`~deepinv_meta.MetaPDNet` on the four Meta-Prior tasks
   (:func:`~deepinv_meta.tasks.meta_prior_tasks`) built from patches of an image folder, with a
   resumable :class:`~deepinv_meta.MetaTrainer` checkpoint next to the output file;
2. :func:`run_finetune` adapts a saved model to an unseen operator (:func:`~deepinv_meta.physics.build_physics`:
   super-resolution, inpainting, MRI, blur, denoising, compressed sensing), supervised or without ground truth, and stores
   the operator with the adapted model;
3. :func:`run_evaluate` scores one or more saved models on test images, beside the adjoint (and
   bicubic upsampling for super-resolution) and, on request, deepinv's wavelet, TGV and DPIR solvers
   with their parameters grid-searched on separate tuning images, as a PSNR table.

Without an image folder every command uses scikit-image's bundled images (training:
:data:`~deepinv_meta.data.EMBEDDED_TRAIN`, testing: :data:`~deepinv_meta.data.EMBEDDED_TEST`), so the
whole workflow runs offline. Images are read as grey, or RGB with ``color=True`` (``--color``); MRI
takes grey images as complex images with a zero imaginary part and is scored on the magnitude.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import deepinv as dinv
import torch

from . import baselines
from .bilevel import InnerLoop, MetaTrainer, OuterOptimizer, finetune
from .bilevel.inner import momentum_kwargs
from .bilevel.trainer import default_device
from .data import (EMBEDDED_TEST, EMBEDDED_TRAIN, as_complex, center_crop, data_root, embedded_images,
                   extract_patches, load_image_folder)
from .io import atomic_write_json, load, save, weights_checksum
from .losses import equivariant_objective
from .models import MetaPDNet
from .physics import PHYSICS, build_physics, physics_parameters
from .tasks import meta_prior_tasks
from .weights import load_denoiser


FILE_KINDS = {b"PK\x03\x04": "model or checkpoint (.pt)", b"\x89PNG": "PNG image"}


def file_kind(path: Path) -> str:
    """What an existing file holds, from its first bytes (torch files are zip archives)."""
    head = path.read_bytes()[:8]
    for magic, kind in FILE_KINDS.items():
        if head.startswith(magic):
            return kind
    return "JSON" if head.lstrip()[:1] in (b"{", b"[") else "other"


def check_output(path, kind: str, *, inputs=(), force: bool = False, option: str = "--out") -> Path:
    """Check an output path before any work: not one of the ``inputs``, not a folder, not an existing file of
    another ``kind`` (unless ``force``), in a folder that can be written (created if missing)."""
    path = Path(path)
    for item in inputs:
        if item is not None and Path(item).exists() and path.resolve() == Path(item).resolve():
            raise ValueError(f"{option} {path} is also an input of this command; write the result to another file.")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name.")
    if path.is_file() and not force and file_kind(path) != kind:
        raise ValueError(f"{option} {path} exists and holds a {file_kind(path)} file, not a {kind} one: not "
                         "overwriting it. Choose another path, or add --force.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot create the folder {path.parent} ({error.strerror}).") from None
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {path.parent} is not writable; choose another path.")
    return path


def load_model(spec, return_metadata: bool = False):
    """A model from a file saved by :func:`deepinv_meta.save` (or a trainer checkpoint), or a zoo name
    (:func:`deepinv_meta.pretrained.available`)."""
    from . import pretrained

    path = Path(spec)
    if not path.exists() and str(spec) in pretrained.available():
        model = pretrained.load(str(spec))
        if pretrained.available()[str(spec)].get("notes"):
            print(f"note on {spec}: {pretrained.available()[str(spec)]['notes']}", flush=True)
        return (model, {"zoo": str(spec)}) if return_metadata else model
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a model file.")
    if not path.exists():
        raise FileNotFoundError(f"model {spec} is neither a file nor a zoo name ({sorted(pretrained.available())}).")
    return load(path, return_metadata=return_metadata)


MODEL = "model or checkpoint (.pt)"


def load_images(folder, default_names, color: bool = False) -> list[torch.Tensor]:
    """Grey ``(1, H, W)`` or RGB ``(3, H, W)`` images of ``folder``, or the embedded images ``default_names``."""
    if folder is None:
        return embedded_images(default_names, grey=not color)
    return load_image_folder(folder, grey=not color)


def physics_spec(name: str, noise: float = 0.0, seed: int = 0, color: bool = False, **params) -> dict:
    """The operator description stored with an adapted model (:func:`~deepinv_meta.physics.build_physics`,
    which both commands call right after, checks the noise level)."""
    if color and name == "mri":
        raise ValueError("mri takes grey images (as complex ones); drop --color.")
    return {"name": name, "params": physics_parameters(name, **params), "noise": noise, "seed": seed,
            "channels": 3 if color else 1}


def physics_for(spec: dict, size, device) -> dinv.physics.Physics:
    return build_physics(spec["name"], tuple(size), channels=spec.get("channels", 1), noise=spec["noise"],
                         seed=spec["seed"], device=device, **spec["params"])


def evenly_spaced(x: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` of the patches ``x``, taken at a regular stride (spread over all the images)."""
    return x[:: max(len(x) // count, 1)][:count]


def as_physics_images(spec: dict, x: torch.Tensor) -> torch.Tensor:
    return as_complex(x) if spec["name"] == "mri" else x


def run_train(out, *, images=None, val_images=None, patch_size: int = 64, inner_loss: str = "unsupervised",
              inner_steps: int = 1, inner_lr: float = 1e-3, lam: float = 0.0, meta_gradient: str = "maml",
              inner_optimizer: str = "adam", inner_momentum: float = 0.0,
              outer_lr: float = 5e-3, batch_size: int = 8, depth: int = 20, channels: int = 32, steps: int = 1000,
              minutes=None, checkpoint=None, color: bool = False, device=None, seed: int = 0,
              progress: bool = True, force: bool = False) -> MetaTrainer:
    """Meta-train a MetaPDNet on the Meta-Prior tasks and save it to ``out`` (:func:`deepinv_meta.load`).

    Training stops after ``steps`` outer steps in total or ``minutes`` minutes, whichever comes first.
    It checkpoints to ``checkpoint`` (default: ``<out>.trainer.pt``) and a second call with the same
    settings resumes from there. ``meta_gradient``: ``"maml"``, ``"first-order"`` or ``"implicit"``;
    ``inner_optimizer`` ``"adam"`` or ``"sgd"`` with ``inner_momentum`` (:class:`~deepinv_meta.MetaTrainer`).
    Returns the trainer.
    """
    if meta_gradient not in ("maml", "first-order", "implicit"):
        raise ValueError(f"meta_gradient must be 'maml', 'first-order' or 'implicit', got {meta_gradient!r}.")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}.")
    out = Path(out)
    device = torch.device(device) if device else default_device()
    checkpoint = Path(checkpoint) if checkpoint else out.with_name(out.name + ".trainer.pt")
    if out.resolve() == checkpoint.resolve():
        raise ValueError(f"--out and --checkpoint are the same file ({out}): the meta-model would overwrite the "
                         "trainer state; use two paths.")
    check_output(out, MODEL, force=force)
    check_output(checkpoint, MODEL, force=force, option="--checkpoint")
    torch.manual_seed(seed)
    tasks = meta_prior_tasks(load_images(images, EMBEDDED_TRAIN, color),
                             None if val_images is None else load_image_folder(val_images, grey=not color),
                             patch_size=patch_size, seed=seed)
    inner = InnerLoop(steps=inner_steps, lr=inner_lr, optimizer=inner_optimizer, lam=lam,
                      first_order=meta_gradient == "first-order", implicit=meta_gradient == "implicit",
                      optimizer_kwargs=momentum_kwargs(inner_optimizer, inner_momentum))
    trainer = MetaTrainer(MetaPDNet(depth=depth, channels=channels), tasks, inner=inner, inner_loss=inner_loss,
                          outer=OuterOptimizer(lr=outer_lr), batch_size=batch_size, device=device, seed=seed,
                          checkpoint=checkpoint,
                          progress=progress)
    print(f"meta-training MetaPDNet(depth={depth}, channels={channels}) on {len(tasks[0].train_data)} patches "
          f"{patch_size}x{patch_size} ({len(tasks[0].test_data)} held out), tasks: {', '.join(t.name for t in tasks)}; "
          f"{inner_loss} inner loss | device {device}")
    if trainer.step:
        print(f"resuming from {checkpoint} at outer step {trainer.step}")
    start = time.perf_counter()
    trainer.train(steps=steps, max_time=None if minutes is None else 60 * minutes)
    seconds = time.perf_counter() - start
    save(trainer.model, out, inner_loss=inner_loss, outer_steps=trainer.step,
         train_time_s=sum(record["time_s"] for record in trainer.history))  # resumed runs included
    psnr = dinv.loss.metric.PSNR()
    scores = trainer.evaluate(metric=lambda a, b: psnr(a.clamp(0, 1), b))
    print(f"{trainer.step} outer steps ({seconds:.0f} s this run); PSNR on held-out patches, meta-model / after "
          f"{inner_steps} inner step(s): " + ", ".join(f"{t} {s['meta']:.2f} / {s['adapted']:.2f}" for t, s in scores.items()))
    print(f"meta-model saved to {out} (checkpoint for resuming: {checkpoint})")
    return trainer


def run_finetune(model_path, out, *, physics: str = "sr", noise: float = 0.0, images=None, size: int = 64,
                 patches: int = 32, loss: str = "equivariant", transform: str = "shift", steps: int = 50,
                 lr: float = 1e-3, lam: float = 0.0, optimizer: str = "adam", momentum: float = 0.0, batch_size=None,
                 color: bool = False, device=None, seed: int = 0, progress: bool = True, force: bool = False,
                 **physics_params):
    """Fine-tune a saved model on ``patches`` patches (``size`` × ``size``) measured by an unseen operator.

    The operator (``physics`` and its parameters, see :func:`~deepinv_meta.physics.build_physics`) is
    stored with the adapted model, so that :func:`run_evaluate` rebuilds it. ``transform`` (``"shift"`` or
    ``"rotate"``, :func:`~deepinv_meta.losses.equivariance_transform`) is the equivariant loss's; ``optimizer``
    and ``momentum`` as in :func:`~deepinv_meta.finetune`. Returns the adapted model.
    """
    if transform != "shift" and loss != "equivariant":
        raise ValueError(f"--transform {transform} only applies to --loss equivariant (got --loss {loss}).")
    device = torch.device(device) if device else default_device()
    spec = physics_spec(physics, noise=noise, seed=seed, color=color, **physics_params)
    check_output(out, MODEL, inputs=[model_path], force=force)
    model, metadata = load_model(model_path, return_metadata=True)
    model = model.to(device)
    x = extract_patches(load_images(images, EMBEDDED_TRAIN, color), size)
    x = as_physics_images(spec, evenly_spaced(x, patches)).to(device)
    operator = physics_for(spec, (size, size), device)
    y = operator(x)
    label = f"{loss} ({transform})" if loss == "equivariant" else loss
    print(f"fine-tuning {model_path} on {len(x)} patches {size}x{size}, physics {spec['name']} {spec['params']} "
          f"(noise {noise}), {steps} {label} steps | device {device}")
    objective = loss
    if loss == "equivariant":
        objective = equivariant_objective(transform, torch.Generator(device).manual_seed(seed + 1))
    inner = InnerLoop(steps=steps, lr=lr, optimizer=optimizer, lam=lam, optimizer_kwargs=momentum_kwargs(optimizer, momentum))
    adapted, losses = finetune(model, operator, y, x=x if loss == "supervised" else None, inner=inner, loss=objective,
                               batch_size=batch_size, seed=seed, progress=progress, return_losses=True)
    save(adapted, out, physics=spec, finetune={"from": str(model_path), "loss": loss, "steps": steps, "lr": lr,
                                               "lam": lam, "optimizer": optimizer, "momentum": momentum,
                                               "patches": len(x), "size": size,
                                               **({"transform": transform} if loss == "equivariant" else {})},
         **{k: v for k, v in metadata.items() if k not in ("physics", "finetune")})
    if losses:
        print(f"{loss} loss {losses[0]:.3e} -> {losses[-1]:.3e}; adapted model saved to {out}")
    return adapted


def run_evaluate(model_paths, *, physics: str | None = None, noise: float = 0.0, images=None, size: int = 128,
                 tuning: "BaselineTuning | None" = None, color: bool = False,
                 device=None, seed: int = 0, json_out=None, figure=None, force: bool = False,
                 **physics_params) -> list[dict]:
    """PSNR (mean ± std over the test images, centre-cropped to ``size``) of each saved model.

    The operator is ``physics`` (with ``noise`` and its parameters) or, if ``None``, the one stored
    with the fine-tuned models by :func:`run_finetune` (they must agree). ``tuning`` (:class:`BaselineTuning`)
    adds deepinv solvers with their parameters grid-searched on other images than the test ones (cached
    per operator, grid and tuning images). Prints a table, writes it to ``json_out`` if given and the
    reconstructions of the first test image to the PNG ``figure`` if given, and returns the rows.
    """
    model_paths = [Path(p) for p in model_paths]
    if not model_paths:
        raise ValueError("give at least one model file to evaluate.")
    if json_out is not None:
        check_output(json_out, "JSON", inputs=model_paths, force=force, option="--json")
    if figure is not None:
        check_output(figure, "PNG image", inputs=model_paths, force=force, option="--figure")
    device = torch.device(device) if device else default_device()
    loaded = [load_model(path, return_metadata=True) for path in model_paths]
    stored = {json.dumps(meta["physics"], sort_keys=True) for _, meta in loaded if "physics" in meta}
    if physics is not None:
        spec = physics_spec(physics, noise=noise, seed=seed, color=color, **physics_params)
    elif len(stored) == 1:
        spec = json.loads(stored.pop())
    else:
        raise ValueError(("none of the models was fine-tuned by `deepinv-meta finetune`, so none says"
                          if not stored else "the models were fine-tuned for different operators, so they do not say")
                         + f" which operator to use; pass --physics (one of {sorted(PHYSICS)}).")
    test = load_images(images, EMBEDDED_TEST, spec.get("channels", 1) == 3)
    small = [tuple(im.shape[-2:]) for im in test if min(im.shape[-2:]) < size]
    if small:
        raise ValueError(f"{len(small)} test image(s) are smaller than --size {size} (e.g. {small[0]}); use a "
                         "smaller --size.")
    x = as_physics_images(spec, torch.stack([center_crop(im, size) for im in test])).to(device)
    operator = physics_for(spec, (size, size), device)
    y = operator(x)
    magnitude = spec["name"] == "mri"
    methods = [("adjoint A^T y", baselines.Adjoint())]
    if spec["name"] == "sr":
        methods.append(("bicubic upsampling", baselines.Bicubic(spec["params"]["factor"])))
    methods += tune_baselines(spec, tuning or BaselineTuning(), size, device)
    methods += [(str(path), model.to(device).eval()) for path, (model, _) in zip(model_paths, loaded)]
    rows = []
    for method, model in methods:
        start = time.perf_counter()
        values = baselines.psnr_per_image(model, operator, y, x, magnitude=magnitude)
        rows.append({"method": method, "psnr": values.mean().item(),
                     "psnr_std": values.std().item() if len(values) > 1 else 0.0,
                     "time_s": (time.perf_counter() - start) / len(x)})
    width = max(len(r["method"]) for r in rows)
    print(f"physics {spec['name']} {spec['params']} (noise {spec['noise']}, seed {spec['seed']}), "
          f"{len(x)} test images {size}x{size}{', PSNR of the magnitude' if magnitude else ''}")
    print(f"| {'method':{width}s} | PSNR (dB)     |\n|{'-' * (width + 2)}|{'-' * 15}|")
    for r in rows:
        print(f"| {r['method']:{width}s} | {r['psnr']:6.2f} ± {r['psnr_std']:4.2f} |")
    if json_out is not None:
        Path(json_out).write_text(json.dumps({"physics": spec, "size": size, "images": len(x), "rows": rows}, indent=2))
    if figure is not None:
        save_figure(figure, methods, operator, y[:1], x[:1], magnitude)
    sys.stdout.flush()
    return rows


def save_figure(path, methods, operator, y, x, magnitude: bool) -> None:
    """Ground truth and each method's reconstruction of one image, with its PSNR, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = baselines.complex_magnitude if magnitude else (lambda im: im)
    panels = [("ground truth", show(x), None)]
    for method, model in methods:
        with torch.no_grad():
            x_hat = show(model(y, operator)).clamp(0, 1)
        panels.append((Path(method).name if method.endswith(".pt") else method, x_hat,
                       dinv.loss.metric.PSNR()(x_hat, show(x)).item()))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.5), squeeze=False)
    for ax, (title, image, psnr) in zip(axes[0], panels):
        image = image[0].permute(1, 2, 0).squeeze(-1).cpu()
        ax.imshow(image, cmap="gray" if image.dim() == 2 else None, vmin=0, vmax=1)
        ax.set_title(title if psnr is None else f"{title}\n{psnr:.2f} dB", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class BaselineTuning:
    """The deepinv baselines that ``evaluate`` adds, and how their parameters are grid-searched.

    :param tuple names: baselines of :data:`~deepinv_meta.baselines.BASELINE_GRIDS` (wavelet, tv, tgv, dpir).
    :param str denoiser: dpir's denoiser (weights file or ``"drunet"``); default the offline FFDNet.
    :param str images: tuning image folder (default: scikit-image's bundled training images), never the test images.
    :param int patches: tuning patches.
    :param dict grids: ``{baseline: {parameter: values}}`` replacing grids of :data:`~deepinv_meta.baselines.BASELINE_GRIDS`
        (``--grid tgv.ths=0.001,0.003``), e.g. to widen one whose best value sat at an edge.
    :param bool cache: reuse parameters tuned before for the same operator, grid, denoiser and tuning images.
    """

    names: tuple = ()
    denoiser: str | None = None
    images: str | None = None
    patches: int = 8
    grids: dict = field(default_factory=dict)
    cache: bool = True

    def grid(self, name: str) -> dict:
        grid = dict(baselines.BASELINE_GRIDS[name])
        for parameter, values in self.grids.get(name, {}).items():
            if parameter not in grid:
                raise ValueError(f"--grid {name}.{parameter}: {name} has no parameter {parameter!r} "
                                 f"(its grid: {sorted(grid)}).")
            grid[parameter] = list(values)
        return grid


def tuning_cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepinv_meta" / "tuned_baselines.json"


def tune_baselines(spec: dict, tuning: BaselineTuning, size: int, device) -> list[tuple]:
    """``(label, reconstructor)`` of each baseline of ``tuning``, grid-searched on patches of the tuning images
    (or read from the cache of earlier searches with the same operator, grid, denoiser and images)."""
    names = list(tuning.names)
    if not names:
        return []
    unknown = set(names) - set(baselines.BASELINE_GRIDS)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose among {sorted(baselines.BASELINE_GRIDS)}.")
    unused = set(tuning.grids) - set(names)
    if unused:
        raise ValueError(f"--grid for {sorted(unused)}, which --baselines does not ask for.")
    x = extract_patches(load_images(tuning.images, EMBEDDED_TRAIN, spec.get("channels", 1) == 3), size)
    x = as_physics_images(spec, evenly_spaced(x, tuning.patches)).to(device)
    operator = physics_for(spec, (size, size), device)
    y = operator(x)
    init = baselines.Bicubic(spec["params"]["factor"]) if spec["name"] == "sr" else None
    denoiser = None
    if "dpir" in names:
        denoiser = load_denoiser(default_denoiser() if tuning.denoiser is None else tuning.denoiser, device=device)
    cache_file = tuning_cache_file()
    cache = json.loads(cache_file.read_text()) if tuning.cache and cache_file.is_file() else {}
    tuned = []
    for name in names:
        build = baselines.baseline_builder(name, denoiser=denoiser, init=init, device=device)
        grid = tuning.grid(name)
        key = weights_checksum({"x": x, **({"denoiser." + k: v for k, v in denoiser.state_dict().items()}
                                          if name == "dpir" else {})})
        key = f"{name}|{json.dumps(spec, sort_keys=True)}|{json.dumps(grid, sort_keys=True)}|{key}"
        if key in cache:
            params, score = cache[key]["params"], cache[key]["score"]
            origin = "cached"
        else:
            params, score, _ = baselines.grid_search(build, grid, operator, y, x, magnitude=spec["name"] == "mri",
                                                     progress=lambda p, s, n=name: print(f"  {n} {p}: {s:.2f} dB",
                                                                                         flush=True))
            cache[key] = {"params": params, "score": score}
            origin = f"on {len(x)} tuning patches"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        edges = baselines.grid_edges(params, grid)
        print(f"{name}: best {shown} ({score:.2f} dB {origin})"
              + (f"; {', '.join(edges)} at the edge of its grid {[grid[k] for k in edges]}: the optimum may lie "
                 f"outside, so this baseline may be under-tuned (widen it: --grid {name}.{edges[0]}=v1,v2,...)"
                 if edges else ""), flush=True)
        tuned.append((f"{name} ({shown})", build(**params)))
    if tuning.cache:
        atomic_write_json(cache, cache_file, indent=1)
    return tuned


def default_denoiser() -> Path:
    """The offline FFDNet of ``$DEEPINV_META_DATA``, or an error that says how to choose a denoiser."""
    advice = ("the dpir baseline needs a denoiser: --denoiser PATH (DnCNN or FFDNet weights) or "
              "--denoiser drunet (deepinv's DRUNet, downloaded once)")
    try:
        path = data_root() / "weights" / "ipol_ffdnet" / "net_gray.pth"
    except FileNotFoundError as error:  # no (valid) $DEEPINV_META_DATA; evaluate has no --data-root to suggest
        raise ValueError(f"{advice}, or set DEEPINV_META_DATA to the offline data folder holding "
                         "weights/ipol_ffdnet/net_gray.pth (see README).") from error
    if not path.is_file():
        raise ValueError(f"{advice}; {path} does not exist.")
    return path

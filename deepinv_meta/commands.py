r"""``deepinv-meta train | finetune | evaluate``: the Meta-Prior workflow on your own images.

1. :func:`run_train` meta-trains a :class:`~deepinv_meta.MetaPDNet` on the four Meta-Prior tasks
   (:func:`~deepinv_meta.tasks.meta_prior_tasks`) built from patches of an image folder, with a
   resumable :class:`~deepinv_meta.MetaTrainer` checkpoint next to the output file;
2. :func:`run_finetune` adapts a saved model to an unseen operator (an :class:`~deepinv_meta.physics.OperatorSpec`:
   super-resolution, inpainting, MRI, blur, denoising, compressed sensing), supervised or without ground truth, and
   stores the operator with the adapted model;
3. :func:`run_evaluate` scores one or more saved models on test images, beside the adjoint (and
   bicubic upsampling for super-resolution) and, on request, deepinv's wavelet, TGV and DPIR solvers
   with their parameters grid-searched on separate tuning images, as a PSNR table.

Without an image folder every command uses scikit-image's bundled images (training:
:data:`~deepinv_meta.data.EMBEDDED_TRAIN`, testing: :data:`~deepinv_meta.data.EMBEDDED_TEST`), so the
whole workflow runs offline. Images are read as grey, or RGB with ``Images(color=True)`` (``--color``); MRI
takes grey images as complex images with a zero imaginary part and is scored on the magnitude. Each function
takes the objects the command line builds: :class:`Images` (which images, cut how), :class:`RunOptions` (device,
seed, progress, overwrite, memory), the operator, and the :class:`~deepinv_meta.bilevel.InnerLoop` /
:class:`~deepinv_meta.bilevel.OuterOptimizer` of the training.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import deepinv as dinv
import torch

from . import baselines
from .bilevel import InnerLoop, MetaTrainer, OuterOptimizer, finetune
from .bilevel.trainer import default_device
from .data import EMBEDDED_TEST, EMBEDDED_TRAIN, center_crop, data_root, embedded_images, extract_patches, load_image_folder
from .figures import save_figure
from .io import atomic_write_json, load, save, weights_checksum
from .losses import equivariant_objective
from .models import MetaPDNet
from .physics import PHYSICS, OperatorSpec
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
    try:  # a real file, not os.access: root passes that on read-only mounts, and then fails after the work
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as error:
        raise ValueError(f"{option} {path}: the folder {path.parent} is not writable ({error.strerror}); choose "
                         "another path.") from None
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


@dataclass
class Images:
    """The images a command uses and how it draws them.

    :param str folder: an image folder, or ``None`` for scikit-image's bundled images
        (:data:`~deepinv_meta.data.EMBEDDED_TRAIN` for training and fine-tuning, :data:`~deepinv_meta.data.EMBEDDED_TEST`
        for testing).
    :param bool color: RGB instead of grey.
    :param int size: patch size (train, finetune) or centre-crop size (evaluate).
    :param int count: patches used (finetune; ``None``: all).
    :param int batch_size: patches per step (train: per task and outer step; finetune: ``None`` for all).
    :param str validation: held-out folder for the outer loss (train; ``None``: 20% of the training patches).
    """

    folder: str | None = None
    color: bool = False
    size: int = 64
    count: int | None = None
    batch_size: int | None = None
    validation: str | None = None

    def load(self, default_names) -> list[torch.Tensor]:
        """Grey ``(1, H, W)`` or RGB ``(3, H, W)`` images of the folder, or the bundled images ``default_names``."""
        if self.folder is None:
            return embedded_images(default_names, grey=not self.color)
        return load_image_folder(self.folder, grey=not self.color)


@dataclass
class RunOptions:
    """How a command runs: ``device`` (default: CUDA when available), ``seed``, progress bars, ``force``
    (overwrite an existing output file of another kind) and ``chunk_size``, the measurements a fine-tuning step
    evaluates at a time (the same step, with the memory of one chunk; ``None``: the whole batch at once)."""

    device: str | None = None
    seed: int = 0
    progress: bool = True
    force: bool = False
    chunk_size: int | None = 8

    def torch_device(self) -> torch.device:
        return torch.device(self.device) if self.device else default_device()


def evenly_spaced(x: torch.Tensor, count: int | None) -> torch.Tensor:
    """``count`` of the patches ``x`` (all for ``None``), taken at a regular stride (spread over all the images)."""
    if count is None:
        return x
    return x[:: max(len(x) // count, 1)][:count]


def run_train(out, *, model: MetaPDNet | None = None, images: Images | None = None, inner: InnerLoop | None = None,
              inner_loss: str = "unsupervised", outer: OuterOptimizer | None = None, steps: int = 1000, minutes=None,
              checkpoint=None, options: RunOptions | None = None) -> MetaTrainer:
    """Meta-train ``model`` (default ``MetaPDNet(depth=20, channels=32)``) on the Meta-Prior tasks cut from
    ``images`` (default: 64x64 patches of the bundled images, 8 per task and outer step) and save it to ``out``
    (:func:`deepinv_meta.load`).

    ``inner`` (default ``InnerLoop(steps=1, lr=1e-3)``: one Adam step, MAML meta-gradient) and ``outer`` (default
    ``OuterOptimizer(lr=5e-3)``) as in :class:`~deepinv_meta.MetaTrainer`. Training stops after ``steps`` outer steps
    in total or ``minutes`` minutes, whichever comes first. It checkpoints to ``checkpoint`` (default:
    ``<out>.trainer.pt``) and a second call with the same settings resumes from there. Returns the trainer.
    """
    model = MetaPDNet(depth=20, channels=32) if model is None else model
    images = Images(size=64, batch_size=8) if images is None else images
    inner = InnerLoop(steps=1, lr=1e-3) if inner is None else inner
    outer = OuterOptimizer(lr=5e-3) if outer is None else outer
    options = options or RunOptions()
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}.")
    out = Path(out)
    device = options.torch_device()
    checkpoint = Path(checkpoint) if checkpoint else out.with_name(out.name + ".trainer.pt")
    if out.resolve() == checkpoint.resolve():
        raise ValueError(f"--out and --checkpoint are the same file ({out}): the meta-model would overwrite the "
                         "trainer state; use two paths.")
    check_output(out, MODEL, force=options.force)
    check_output(checkpoint, MODEL, force=options.force, option="--checkpoint")
    torch.manual_seed(options.seed)
    tasks = meta_prior_tasks(images.load(EMBEDDED_TRAIN),
                             None if images.validation is None else load_image_folder(images.validation,
                                                                                      grey=not images.color),
                             patch_size=images.size, seed=options.seed)
    trainer = MetaTrainer(model, tasks, inner=inner, inner_loss=inner_loss, outer=outer,
                          batch_size=images.batch_size or 8, device=device, seed=options.seed, checkpoint=checkpoint,
                          progress=options.progress)
    print(f"meta-training {type(model).__name__}({', '.join(f'{k}={v}' for k, v in model.config.items())}) on "
          f"{len(tasks[0].train_data)} patches {images.size}x{images.size} ({len(tasks[0].test_data)} held out), tasks: "
          f"{', '.join(t.name for t in tasks)}; {inner_loss} inner loss | device {device}")
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
          f"{inner.steps} inner step(s): " + ", ".join(f"{t} {s['meta']:.2f} / {s['adapted']:.2f}" for t, s in scores.items()))
    print(f"meta-model saved to {out} (checkpoint for resuming: {checkpoint})")
    return trainer


def adaptation_objective(loss: str, operator: OperatorSpec, *, transform: str = "shift", pairs: bool = False,
                         rng: torch.Generator | None = None):
    """``(objective, label)``: what :func:`~deepinv_meta.bilevel.finetune` minimises for the loss named ``loss`` on
    ``operator``, and its name in print. The equivariant loss uses ``transform`` (``rng`` draws them) and, with
    ``pairs`` (super-resolution only), adds the downscaled pairs of :class:`~deepinv_meta.losses.DownscaledPairsLoss`,
    which help on measurements of 48x48 pixels and hurt on 32x32 ones (docs/notes.rst)."""
    for given, option in ((transform != "shift", f"--transform {transform}"), (pairs, "--pairs")):
        if given and loss != "equivariant":
            raise ValueError(f"{option} only applies to --loss equivariant (got --loss {loss}).")
    if pairs and operator.name != "sr":
        raise ValueError(f"--pairs needs an operator that exists at every scale (sr), not {operator.name}; drop it.")
    if loss != "equivariant":
        return loss, loss
    objective = equivariant_objective(transform, rng, pairs=operator.build if pairs else None)
    return objective, f"equivariant ({transform}{' + downscaled pairs' if pairs else ''})"


def run_finetune(model_path, out, *, operator: OperatorSpec, images: Images | None = None, loss: str = "equivariant",
                 transform: str = "shift", pairs: bool = False, inner: InnerLoop | None = None,
                 options: RunOptions | None = None):
    """Fine-tune a saved model on patches of ``images`` (default: 32 patches 64x64 of the bundled images, all in
    every step) measured by an unseen ``operator``, with ``inner`` (default ``InnerLoop(steps=50, lr=1e-3)``).

    The operator is stored with the adapted model, so that :func:`run_evaluate` rebuilds it. ``transform``
    (``"shift"``, ``"rotate"`` or ``"scale"``, :func:`~deepinv_meta.losses.equivariance_transform`) and ``pairs``
    shape the equivariant loss (:func:`adaptation_objective`). Returns the adapted model.
    """
    images = Images(size=64, count=32) if images is None else images
    inner = InnerLoop(steps=50, lr=1e-3) if inner is None else inner
    options = options or RunOptions()
    device = options.torch_device()
    objective, label = adaptation_objective(loss, operator, transform=transform, pairs=pairs,
                                            rng=torch.Generator(device).manual_seed(options.seed + 1))
    if operator.channels != (3 if images.color else 1):
        raise ValueError(f"the operator is for {operator.channels}-channel images but images.color is {images.color}.")
    check_output(out, MODEL, inputs=[model_path], force=options.force)
    model, metadata = load_model(model_path, return_metadata=True)
    model = model.to(device)
    x = extract_patches(images.load(EMBEDDED_TRAIN), images.size)
    x = operator.as_input(evenly_spaced(x, images.count)).to(device)
    physics = operator.build((images.size, images.size), device)
    y = physics(x)
    print(f"fine-tuning {model_path} on {len(x)} patches {images.size}x{images.size}, physics {operator}, "
          f"{inner.steps} {label} steps | device {device}")
    adapted, losses = finetune(model, physics, y, x=x if loss == "supervised" else None, inner=inner, loss=objective,
                               batch_size=images.batch_size, chunk_size=options.chunk_size, seed=options.seed,
                               progress=options.progress, return_losses=True)
    save(adapted, out, physics=operator.to_dict(),
         finetune={"from": str(model_path), "loss": loss, "steps": inner.steps, "lr": inner.lr, "lam": inner.lam,
                   "optimizer": inner.optimizer, "momentum": inner.optimizer_kwargs.get("momentum", 0.0), "patches": len(x), "size": images.size,
                   **({"transform": transform, "pairs": pairs} if loss == "equivariant" else {})},
         **{k: v for k, v in metadata.items() if k not in ("physics", "finetune")})
    if losses:
        print(f"{loss} loss {losses[0]:.3e} -> {losses[-1]:.3e}; adapted model saved to {out}")
    return adapted


def run_evaluate(model_paths, *, operator: OperatorSpec | None = None, images: Images | None = None,
                 tuning: "BaselineTuning | None" = None, json_out=None, figure=None,
                 options: RunOptions | None = None) -> list[dict]:
    """PSNR (mean ± std over the test ``images``, default the bundled ones centre-cropped to 128) of each saved model.

    The operator is ``operator`` or, if ``None``, the one stored with the fine-tuned models by :func:`run_finetune`
    (they must agree). ``tuning`` (:class:`BaselineTuning`) adds deepinv solvers with their parameters grid-searched
    on other images than the test ones (cached per operator, grid and tuning images). Prints a table, writes it to
    ``json_out`` if given and the reconstructions of the first test image to the PNG ``figure`` if given, and
    returns the rows.
    """
    images = Images(size=128) if images is None else images
    options = options or RunOptions()
    size = images.size
    model_paths = [Path(p) for p in model_paths]
    if not model_paths:
        raise ValueError("give at least one model file to evaluate.")
    if json_out is not None:
        check_output(json_out, "JSON", inputs=model_paths, force=options.force, option="--json")
    if figure is not None:
        check_output(figure, "PNG image", inputs=model_paths, force=options.force, option="--figure")
    device = options.torch_device()
    loaded = [load_model(path, return_metadata=True) for path in model_paths]
    stored = {json.dumps(meta["physics"], sort_keys=True) for _, meta in loaded if "physics" in meta}
    if operator is None:
        if len(stored) != 1:
            raise ValueError(("none of the models was fine-tuned by `deepinv-meta finetune`, so none says"
                              if not stored else "the models were fine-tuned for different operators, so they do not "
                              "say") + f" which operator to use; pass --physics (one of {sorted(PHYSICS)}).")
        operator = OperatorSpec.from_dict(json.loads(stored.pop()))
    test = Images(images.folder, color=operator.channels == 3).load(EMBEDDED_TEST)
    small = [tuple(im.shape[-2:]) for im in test if min(im.shape[-2:]) < size]
    if small:
        raise ValueError(f"{len(small)} test image(s) are smaller than --size {size} (e.g. {small[0]}); use a "
                         "smaller --size.")
    x = operator.as_input(torch.stack([center_crop(im, size) for im in test])).to(device)
    physics = operator.build((size, size), device)
    y = physics(x)
    methods = operator.references() + tune_baselines(operator, tuning or BaselineTuning(), size, device)
    methods += [(str(path), model.to(device).eval()) for path, (model, _) in zip(model_paths, loaded)]
    rows = []
    for method, model in methods:
        start = time.perf_counter()
        values = baselines.psnr_per_image(model, physics, y, x, magnitude=operator.complex)
        rows.append({"method": method, "psnr": values.mean().item(),
                     "psnr_std": values.std().item() if len(values) > 1 else 0.0,
                     "time_s": (time.perf_counter() - start) / len(x)})
    width = max(len(r["method"]) for r in rows)
    print(f"physics {operator}, {len(x)} test images {size}x{size}{', PSNR of the magnitude' if operator.complex else ''}")
    print(f"| {'method':{width}s} | PSNR (dB)     |\n|{'-' * (width + 2)}|{'-' * 15}|")
    for r in rows:
        print(f"| {r['method']:{width}s} | {r['psnr']:6.2f} ± {r['psnr_std']:4.2f} |")
    if json_out is not None:
        Path(json_out).write_text(json.dumps({"physics": operator.to_dict(), "size": size, "images": len(x),
                                              "rows": rows}, indent=2))
    if figure is not None:
        draw_reconstructions(figure, methods, physics, y[:1], x[:1], operator.complex)
    sys.stdout.flush()
    return rows


def draw_reconstructions(path, methods, operator, y, x, magnitude: bool) -> None:
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
    save_figure(fig, path, dpi=120)


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


def tune_baselines(operator: OperatorSpec, tuning: BaselineTuning, size: int, device) -> list[tuple]:
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
    x = extract_patches(Images(tuning.images, color=operator.channels == 3).load(EMBEDDED_TRAIN), size)
    x = operator.as_input(evenly_spaced(x, tuning.patches)).to(device)
    physics = operator.build((size, size), device)
    y = physics(x)
    init = dict(operator.references()).get("bicubic upsampling")  # DPIR's start for decimation SR
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
        key = f"{name}|{json.dumps(operator.to_dict(), sort_keys=True)}|{json.dumps(grid, sort_keys=True)}|{key}"
        if key in cache:
            params, score = cache[key]["params"], cache[key]["score"]
            origin = "cached"
        else:
            params, score, _ = baselines.grid_search(build, grid, physics, y, x, magnitude=operator.complex,
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

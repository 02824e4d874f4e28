"""Command line: ``deepinv-meta demo | train | finetune | evaluate | reconstruct | benchmark | campaign | zoo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .baselines import BASELINE_GRIDS
from .bilevel.optimizers import INNER_OPTIMIZERS
from .losses import INNER_LOSSES
from .physics import PHYSICS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepinv-meta", description="Meta-learning for imaging inverse problems (deepinv plugin).")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="a zoo meta-model adapted without ground truth to unseen SR x2, beside bicubic, TGV, DPIR",
        description="Load a zoo meta-model, adapt it to unseen x2 super-resolution with the equivariant loss on "
                    "low-resolution images only (the held-out scikit-image test measurements and 11 others; no "
                    "ground truth), and print a PSNR table beside bicubic, TGV, DPIR (offline FFDNet weights, when "
                    "found) and the same network from random init.")
    demo.add_argument("--model", default="meta-prior-supervised", choices=("meta-prior-supervised",
                                                                          "meta-prior-unsupervised"),
                      help="the zoo meta-model to adapt (default meta-prior-supervised)")
    demo.add_argument("--steps", type=positive(int), default=100, help="adaptation steps (default 100)")
    demo.add_argument("--size", type=positive(int), default=96, help="test crop size in pixels (default 96)")
    demo.add_argument("--paper-loss", action="store_true",
                      help="add the paper's unsupervised loss (measurement consistency alone) as a row")
    demo.add_argument("--without-pairs", action="store_true",
                      help="add the equivariant loss without the downscaled pairs as a row")
    demo.add_argument("--train-minutes", type=positive(float), default=None,
                      help="meta-train a small model from scratch for M minutes instead of loading the zoo")
    demo.add_argument("--figure", default=None, metavar="PNG", help="write the reconstructions to this PNG")
    demo.add_argument("--json", default=None, metavar="FILE",
                      help="write the rows {method, psnr, psnr_std, psnr_per_image} to this JSON file")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--seed", type=int, default=0)
    add_train_parser(commands)
    add_finetune_parser(commands)
    add_evaluate_parser(commands)
    bench = commands.add_parser("benchmark", help="reproduce a paper's experiments at CPU scale (results.json, table.md, figures)")
    bench.add_argument("name", choices=sorted(BENCHMARKS), help="which paper")
    bench.add_argument("--quick", action="store_true", help="small configuration (< 10 min on CPU)")
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bench.add_argument("--data-root", default=None, help="offline data folder (default: $DEEPINV_META_DATA)")
    bench.add_argument("--out", default=None, help="output folder (default: benchmark-results/NAME[-quick])")
    bench.add_argument("--part", choices=("all", "imaging", "toy"), default="all",
                       help="meta-prior only: imaging experiments, the Gaussian toy, or both (default)")
    bench.add_argument("--reuse-meta-models", default=None, metavar="DIR|zoo",
                       help="meta-prior only: skip meta-training and load meta_pdnet_*.pt from DIR (same --quick "
                            "setting), or the zoo's campaign models with 'zoo' (and --set depth=20 --set channels=40)")
    bench.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting of the configuration (repeatable), e.g. --set train_minutes=30; "
                            "the settings are printed at the start of a run and stored in results.json")
    bench.add_argument("--seed", type=int, default=0)
    add_campaign_parser(commands)
    add_zoo_parser(commands)
    add_reconstruct_parser(commands)
    return parser


def add_reconstruct_parser(commands) -> None:
    from .reconstruct import DEFAULT_LR, DEFAULT_STEPS, OPERATORS

    rec = commands.add_parser(
        "reconstruct", help="reconstruct your own measurements (images or .npy k-space), no ground truth needed",
        description="Adapt a zoo model (or a saved one) to your measurements without ground truth and write the "
                    "reconstructions (NAME_reconstruction.png, plus .npy for mri) to --out, with the "
                    "measurement-consistency residual each reached. MetaDIP / Meta-RED models fit each measurement "
                    "in their forward pass instead, and learned variational solvers (variational-mnist) solve it.")
    rec.add_argument("measurements", nargs="+", help="measurement files: images (png/jpg/bmp/tif) or .npy")
    rec.add_argument("--physics", choices=OPERATORS, required=True, help="the operator that produced them")
    rec.add_argument("--out", required=True, metavar="DIR", help="folder for the reconstructions")
    rec.add_argument("--model", default="meta-prior-unsupervised",
                     help="zoo name or model file (default meta-prior-unsupervised)")
    rec.add_argument("--factor", type=number(int, 2, name="integer >= 2"), default=2, help="sr: upsampling factor")
    rec.add_argument("--blur-sigma", type=positive(float), default=1.0, help="blur: Gaussian kernel width (pixels)")
    rec.add_argument("--mask", default=None, metavar="FILE",
                     help="inpainting (required) / mri (optional): observed pixels / k-space samples, non-zero = "
                          "observed (an image or .npy of the measurement's size)")
    rec.add_argument("--steps", type=STEPS, default=None, help=f"adaptation steps (default {DEFAULT_STEPS})")
    rec.add_argument("--lr", type=LEARNING_RATE, default=None, help=f"adaptation learning rate (default {DEFAULT_LR:g})")
    rec.add_argument("--loss", choices=("equivariant", "unsupervised"), default="equivariant",
                     help="adaptation loss without ground truth (default equivariant)")
    add_pairs_option(rec)
    rec.add_argument("--self-ensemble", action="store_true",
                     help="sr: average the reconstructions of the measurement's 8 flips and transposes (8 times the "
                          "reconstruction cost; +0.01 to +0.03 dB on BSD68, docs/notes.rst)")
    rec.add_argument("--project", action="store_true",
                     help="noiseless measurements only: project each reconstruction onto its measurement, "
                          "x + A^+(y - A x) (+0.03 dB on BSD68 sr x2, docs/notes.rst)")
    rec.add_argument("--chunk-size", type=COUNT, default=8, help=CHUNK_HELP)
    rec.add_argument("--color", action="store_true", help="RGB images (default grey)")
    rec.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    rec.add_argument("--force", action="store_true", help="overwrite existing output files of another kind")


def add_pairs_option(parser) -> None:
    parser.add_argument("--pairs", action="store_true",
                        help="sr with the equivariant loss: also train on the measurements' own downscaled copies "
                             "(zero-shot pairs, no ground truth); they helped on 48x48-pixel measurements and hurt "
                             "on 32x32 ones (docs/notes.rst)")


def add_zoo_parser(commands) -> None:
    zoo = commands.add_parser("zoo", help="list the pretrained models, or show one's provenance and how to load it")
    zoo.add_argument("name", nargs="?", help="a zoo name: every field of its record")
    zoo.add_argument("--verify", action="store_true", help="also check the weight files against their SHA-256")


def add_campaign_parser(commands) -> None:
    from .campaign import CAMPAIGNS

    campaign = commands.add_parser(
        "campaign", help="resume a long training campaign (campaigns/NAME/) for M more minutes; feeds the zoo",
        description="Resume the campaign's trainers from campaigns/NAME/, train --minutes more (checkpoint, held-out "
                    "validation and a log line every --chunk-minutes), export improved weights to the zoo "
                    "(deepinv_meta/pretrained), and write log.csv, curve.png and STATUS.md.")
    campaign.add_argument("name", choices=sorted(CAMPAIGNS) + ["all"], help="which campaign ('all': every one)")
    campaign.add_argument("--minutes", type=positive(float), required=True, help="training minutes of this call")
    campaign.add_argument("--threads", type=positive(int), default=1, help="CPU threads (default 1)")
    campaign.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    campaign.add_argument("--chunk-minutes", type=positive(float), default=5.0,
                          help="minutes between checkpoints and validations (default 5: a killed run loses at most that)")
    campaign.add_argument("--folder", default="campaigns", help="campaigns folder (default ./campaigns)")
    campaign.add_argument("--data-root", default=None, help="offline data folder (default: $DEEPINV_META_DATA)")


def number(kind, low=None, high=None, *, low_open: bool = False, high_open: bool = False, name: str | None = None):
    """argparse type: a ``kind`` (int or float) in the range ``[low, high]`` (ends excluded when ``*_open``);
    a value outside, NaN or not a number is refused at parse time with the allowed range."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    allowed = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if value != value or below or above:
            raise argparse.ArgumentTypeError(f"{text} is outside the allowed range {allowed}")
        return value
    parse.__name__ = name or kind.__name__
    return parse


def positive(kind):
    """argparse type: a number of ``kind`` that must be > 0."""
    return number(kind, 0, low_open=True, name=f"positive {kind.__name__}")


COUNT = number(int, 1, name="integer >= 1")
STEPS = number(int, 0, name="integer >= 0")
FRACTION = number(float, 0, 1, low_open=True, name="fraction in (0, 1]")
MOMENTUM = number(float, 0, 1, high_open=True, name="momentum in [0, 1)")
NONNEGATIVE = number(float, 0, name="number >= 0")
LEARNING_RATE = number(float, 0, 10, low_open=True, name="learning rate in (0, 10]")

CHUNK_HELP = ("measurements a fine-tuning step evaluates at a time (default 8): the step is the same, its memory that "
              "of one chunk (measured: a depth-20, 40-channel MetaPDNet with the equivariant loss needs about 80 MB "
              "per 64x64 patch, 3.4 GB for 32 patches at once, 1.5 GB in chunks of 8, and runs faster in chunks)")


# --physics parameters: argument name -> (type, help); build_physics refuses those the operator does not take
PHYSICS_OPTIONS = {
    "factor": (number(int, 2, name="integer >= 2"), "sr: downsampling factor (default 2)"),
    "ratio": (FRACTION, "inpainting: fraction of pixels kept (default 0.5); cs: measurements per pixel (default 0.25)"),
    "acceleration": (number(int, 2, name="integer >= 2"), "mri: undersampling factor (default 4)"),
    "center_fraction": (number(float, 0, 1, low_open=True, high_open=True, name="fraction in (0, 1)"),
                        "mri: fully sampled centre fraction (default 0.08)"),
    "blur_sigma": (positive(float), "blur: Gaussian kernel standard deviation in pixels (default 1)"),
}


def add_common_options(parser, images_help: str) -> None:
    parser.add_argument("--images", default=None, metavar="DIR", help=images_help)
    parser.add_argument("--color", action="store_true",
                        help="RGB images (default grey; evaluate: as the fine-tuned model was, unless --physics is given)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)


def add_physics_options(parser, required: bool) -> None:
    parser.add_argument("--physics", choices=sorted(PHYSICS), required=required, default=None,
                        help="the unseen operator" + ("" if required else " (default: the one stored by finetune)"))
    for name, (kind, text) in PHYSICS_OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text)
    parser.add_argument("--noise", type=NONNEGATIVE, default=0.0, help="Gaussian noise standard deviation (default 0)")


def physics_options(args) -> dict:
    return {name: getattr(args, name) for name in PHYSICS_OPTIONS if getattr(args, name) is not None}


def add_train_parser(commands) -> None:
    train = commands.add_parser("train", help="meta-train a MetaPDNet on the four Meta-Prior tasks (resumable)")
    train.add_argument("--out", required=True, metavar="FILE", help="where to save the meta-model (.pt)")
    add_common_options(train, "training images (default: scikit-image's bundled images)")
    train.add_argument("--val-images", default=None, metavar="DIR",
                       help="held-out images for the outer loss (default: 20%% of the training patches)")
    train.add_argument("--patch-size", type=number(int, 8, name="integer >= 8"), default=64)
    train.add_argument("--inner-loss", choices=INNER_LOSSES, default="unsupervised")
    train.add_argument("--inner-steps", type=STEPS, default=1)
    train.add_argument("--inner-lr", type=LEARNING_RATE, default=1e-3)
    train.add_argument("--inner-optimizer", choices=tuple(INNER_OPTIMIZERS), default="adam",
                       help="adam (default, the paper's) or sgd (gradient descent)")
    train.add_argument("--inner-momentum", type=MOMENTUM, default=0.0, help="heavy-ball momentum of sgd (default 0)")
    train.add_argument("--lam", type=NONNEGATIVE, default=0.0, help="proximal weight lambda of the inner problem")
    train.add_argument("--meta-gradient", choices=("maml", "first-order", "implicit"), default="maml",
                       help="back-propagation through the inner steps (default), first-order MAML, or implicit "
                            "(iMAML: needs --lam > 0 and enough --inner-steps to reach the inner minimum)")
    train.add_argument("--outer-lr", type=LEARNING_RATE, default=5e-3)
    train.add_argument("--batch-size", type=COUNT, default=8)
    train.add_argument("--depth", type=COUNT, default=20, help="MetaPDNet layers (default 20)")
    train.add_argument("--channels", type=COUNT, default=32, help="filters per layer (default 32)")
    train.add_argument("--steps", type=STEPS, default=1000, help="total outer steps (default 1000)")
    train.add_argument("--minutes", type=positive(float), default=None, help="stop earlier after this many minutes")
    train.add_argument("--force", action="store_true", help="overwrite an existing output file of another kind")
    train.add_argument("--checkpoint", default=None, metavar="FILE",
                       help="trainer checkpoint, resumed when it exists (default: OUT.trainer.pt)")


def add_finetune_parser(commands) -> None:
    tune = commands.add_parser("finetune", help="adapt a saved model to an unseen operator, with or without ground truth")
    tune.add_argument("model", help="a zoo name (deepinv_meta.pretrained.available()) or a model file saved by "
                                    "train, a benchmark or deepinv_meta.save")
    tune.add_argument("--out", required=True, metavar="FILE", help="where to save the adapted model (.pt)")
    add_physics_options(tune, required=True)
    add_common_options(tune, "fine-tuning images, cut into patches (default: scikit-image's bundled images)")
    tune.add_argument("--size", type=number(int, 8, name="integer >= 8"), default=64, help="patch size (default 64)")
    tune.add_argument("--patches", type=COUNT, default=32, help="number of patches (default 32)")
    tune.add_argument("--loss", choices=INNER_LOSSES, default="equivariant",
                      help="equivariant (default: ||A f(y) - y||^2 plus equivariant imaging, no ground truth; it keeps "
                           "the null space of A in check), unsupervised (the paper's ||A f(y) - y||^2 alone, which "
                           "lowered PSNR on SR x2 and MRI x4 in our runs) or supervised (needs the ground truth). One "
                           "step costs about two forward and backward passes of the model over the patches")
    tune.add_argument("--transform", choices=("shift", "rotate", "scale"), default="shift",
                      help="transform of the equivariant loss (default shift; rotate for mri, where shifts "
                           "only change k-space phases; scale, the scale-equivariant imaging of Scanvic et al.)")
    add_pairs_option(tune)
    tune.add_argument("--steps", type=STEPS, default=50)
    tune.add_argument("--lr", type=LEARNING_RATE, default=1e-3)
    tune.add_argument("--optimizer", choices=tuple(INNER_OPTIMIZERS), default="adam", help="adam (default) or sgd")
    tune.add_argument("--momentum", type=MOMENTUM, default=0.0, help="heavy-ball momentum of sgd (default 0)")
    tune.add_argument("--lam", type=NONNEGATIVE, default=0.0, help="proximal weight lambda (keeps the weights near the meta-model)")
    tune.add_argument("--batch-size", type=COUNT, default=None, help="patches per step (default: all)")
    tune.add_argument("--chunk-size", type=COUNT, default=8, help=CHUNK_HELP)
    tune.add_argument("--force", action="store_true", help="overwrite an existing output file of another kind")


def add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="PSNR table of saved models beside the adjoint (and bicubic for sr)")
    evaluate.add_argument("models", nargs="+", help="model files (.pt) or zoo names")
    add_physics_options(evaluate, required=False)
    add_common_options(evaluate, "test images, centre-cropped to --size (default: scikit-image's bundled test images)")
    evaluate.add_argument("--size", type=number(int, 8, name="integer >= 8"), default=128, help="centre crop (default 128)")
    evaluate.add_argument("--baselines", nargs="+", default=[], choices=list(BASELINE_GRIDS),
                          help="also deepinv solvers, each grid-searched on --tune-images (not the test images)")
    evaluate.add_argument("--tune-images", default=None, metavar="DIR",
                          help="images for the baselines' grid search (default: scikit-image's bundled training images)")
    evaluate.add_argument("--denoiser", default=None, metavar="PATH|drunet",
                          help="dpir's denoiser: DnCNN/FFDNet weights or 'drunet' (downloads); "
                               "default: weights/ipol_ffdnet/net_gray.pth under $DEEPINV_META_DATA")
    evaluate.add_argument("--grid", dest="grids", action="append", default=[], metavar="NAME.PARAM=V1,V2,...",
                          help="replace one baseline grid (repeatable), e.g. --grid tgv.ths=0.001,0.003,0.01")
    evaluate.add_argument("--retune", action="store_true",
                          help="grid-search again instead of reusing the parameters cached for the same operator, "
                               "grid, denoiser and tuning images (~/.cache/deepinv_meta)")
    evaluate.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
    evaluate.add_argument("--figure", default=None, metavar="FILE.png",
                          help="also draw every method's reconstruction of the first test image")
    evaluate.add_argument("--force", action="store_true", help="overwrite existing output files of another kind")


# name -> module under deepinv_meta.benchmarks with run(config, context) (deepinv_meta.benchmarks.report)
BENCHMARKS = {"meta-prior": "meta_prior", "metadip": "metadip", "meta-red": "meta_red", "variational": "variational",
              "throughput": "throughput"}


def main(argv=None) -> int:
    """The console script. A failure prints one line ``error: ...`` naming the problem (exit code 2 for a bad
    input, 1 for a failure while running; the traceback with ``--debug``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminated)  # `kill PID` unwinds like Ctrl-C: locks released, no leftovers
    try:
        return dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except Exception as error:  # noqa: BLE001 (the console script's last line of defence)
        if args.debug:
            raise
        usage = isinstance(error, (ValueError, FileNotFoundError, TypeError, KeyError, IsADirectoryError))
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}" + ("" if usage else " (rerun with --debug for the traceback)"), file=sys.stderr)
        return 2 if usage else 1


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that ``with`` blocks (file locks) and atomic writers clean up."""


def _terminated(signum, frame):
    raise Terminated


def dispatch(args) -> int:
    if args.command == "demo":
        from .demo import run_demo

        run_demo(model=args.model, train_minutes=args.train_minutes, steps=args.steps, size=args.size,
                 device=args.device, seed=args.seed, paper_loss=args.paper_loss, without_pairs=args.without_pairs,
                 figure=args.figure, json_out=args.json)
    elif args.command == "benchmark":
        return run_benchmark(args)
    elif args.command == "campaign":
        return run_campaign_command(args)
    elif args.command == "zoo":
        from .pretrained import describe

        print(describe(args.name, verify=args.verify))
    elif args.command == "reconstruct":
        from .reconstruct import DEFAULT_LR, DEFAULT_STEPS, run_reconstruct

        from .bilevel import InnerLoop
        from .commands import RunOptions
        from .physics import OperatorSpec

        inner = None if args.steps is None and args.lr is None else InnerLoop(  # None: the model's own defaults
            steps=DEFAULT_STEPS if args.steps is None else args.steps,
            lr=DEFAULT_LR if args.lr is None else args.lr)
        params = {"factor": args.factor} if args.physics == "sr" else (
            {"blur_sigma": args.blur_sigma} if args.physics == "blur" else {})
        run_reconstruct(args.measurements, args.out, operator=OperatorSpec.named(args.physics, color=args.color, **params),
                        model=args.model, mask=args.mask, inner=inner, loss=args.loss,
                        pairs=args.pairs, self_ensemble=args.self_ensemble, project=args.project,
                        options=RunOptions(device=args.device, force=args.force, chunk_size=args.chunk_size))
    else:
        return run_workflow(args)
    return 0


def run_workflow(args) -> int:
    """``train``, ``finetune`` or ``evaluate`` (errors are reported by :func:`main`)."""
    from . import commands

    from .bilevel import InnerLoop, OuterOptimizer
    from .bilevel.inner import momentum_kwargs
    from .physics import OperatorSpec

    options = commands.RunOptions(device=args.device, seed=args.seed, progress=True, force=args.force,
                                  chunk_size=getattr(args, "chunk_size", None))
    operator = None if args.command == "train" or args.physics is None else OperatorSpec.named(
        args.physics, noise=args.noise, seed=args.seed, color=args.color, **physics_options(args))
    if args.command == "train":
        from .models import MetaPDNet

        inner = InnerLoop(steps=args.inner_steps, lr=args.inner_lr, optimizer=args.inner_optimizer, lam=args.lam,
                          first_order=args.meta_gradient == "first-order", implicit=args.meta_gradient == "implicit",
                          optimizer_kwargs=momentum_kwargs(args.inner_optimizer, args.inner_momentum))
        images = commands.Images(args.images, color=args.color, size=args.patch_size, batch_size=args.batch_size,
                                 validation=args.val_images)
        commands.run_train(args.out, model=MetaPDNet(depth=args.depth, channels=args.channels), images=images,
                           inner=inner, inner_loss=args.inner_loss, outer=OuterOptimizer(lr=args.outer_lr),
                           steps=args.steps, minutes=args.minutes, checkpoint=args.checkpoint, options=options)
    elif args.command == "finetune":
        inner = InnerLoop(steps=args.steps, lr=args.lr, optimizer=args.optimizer, lam=args.lam,
                          optimizer_kwargs=momentum_kwargs(args.optimizer, args.momentum))
        images = commands.Images(args.images, color=args.color, size=args.size, count=args.patches,
                                 batch_size=args.batch_size)
        commands.run_finetune(args.model, args.out, operator=operator, images=images, loss=args.loss,
                              transform=args.transform, pairs=args.pairs, inner=inner, options=options)
    else:
        tuning = commands.BaselineTuning(names=tuple(args.baselines), denoiser=args.denoiser, images=args.tune_images,
                                         grids=parse_grids(args.grids), cache=not args.retune)
        commands.run_evaluate(args.models, operator=operator, images=commands.Images(args.images, size=args.size),
                              tuning=tuning, json_out=args.json, figure=args.figure, options=options)
    return 0


def parse_grids(texts) -> dict:
    """``["tgv.ths=0.001,0.003"]`` -> ``{"tgv": {"ths": [0.001, 0.003]}}``."""
    grids = {}
    for text in texts:
        name, _, values = text.partition("=")
        baseline, _, parameter = name.partition(".")
        try:
            numbers = [float(v) if "." in v or "e" in v.lower() else int(v) for v in values.split(",") if v]
        except ValueError:
            numbers = []
        if not (baseline and parameter and numbers):
            raise ValueError(f"--grid {text!r}: use NAME.PARAM=V1,V2,... with numbers, e.g. --grid tgv.ths=0.001,0.003.")
        grids.setdefault(baseline, {})[parameter] = numbers
    return grids


def run_benchmark(args) -> int:
    """``deepinv-meta benchmark NAME``: every benchmark is ``run(config, context)`` (:mod:`.benchmarks.report`)."""
    import dataclasses
    import importlib
    from pathlib import Path

    from .benchmarks import gaussian_toy
    from .benchmarks.report import Context, run_benchmark as run_module
    from .benchmarks.settings import configure, parse_setting
    from .data import data_root

    if args.reuse_meta_models and args.name != "meta-prior":
        raise ValueError(f"--reuse-meta-models applies to the meta-prior benchmark only, not {args.name}.")
    if args.settings and args.name == "meta-prior" and args.part == "all":
        raise ValueError("the toy and the imaging part of meta-prior have different settings; "
                         "use --set with --part imaging or --part toy.")
    out = Path(args.out or f"benchmark-results/{args.name}{'-quick' if args.quick else ''}")
    module = importlib.import_module(f".benchmarks.{BENCHMARKS[args.name]}", __package__)
    toy = args.name == "meta-prior" and args.part in ("all", "toy")  # the toy samples its own data
    imaging = not (args.name == "meta-prior" and args.part == "toy")
    context = Context(quick=args.quick, device=args.device, out=out, seed=args.seed,
                      settings=dict(parse_setting(text) for text in args.settings),
                      reuse_meta_models=args.reuse_meta_models, command=f"deepinv-meta benchmark {args.name}")
    if imaging and getattr(module, "NEEDS_DATA", True):
        context.data_root = data_root(args.data_root)  # a missing data folder is reported before any work
    for part, wanted in ((gaussian_toy, toy), (module, imaging)):
        if wanted:  # an unknown --set key is reported before any work starts
            try:
                configure(part.FULL, context.settings)
            except KeyError as error:
                raise ValueError(error.args[0]) from None
    if toy:
        run_module(gaussian_toy, dataclasses.replace(context, out=out / "gaussian_toy", device="cpu",
                                                     command="deepinv-meta benchmark meta-prior --part toy"))
    if imaging:
        run_module(module, context)
    print(f"results written to {out}/ (results.json, table.md, figures, checkpoints)")
    return 0


def run_campaign_command(args) -> int:
    from .campaign import run_campaign

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but no GPU is visible to torch; use --device cpu.", file=sys.stderr)
            return 2
    try:
        run_campaign(args.name, args.minutes, threads=args.threads, device=args.device, folder=args.folder,
                     data_root=args.data_root, chunk_minutes=args.chunk_minutes,
                     log=lambda message: print(message, flush=True))
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``deepinv-meta demo`` and ``deepinv-meta benchmark NAME``."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepinv-meta", description="Meta-learning for imaging inverse problems (deepinv plugin).")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="meta-train a small MetaPDNet on embedded images and adapt it to unseen SR x2")
    demo.add_argument("--minutes", type=float, default=2.0, help="meta-training time budget (default 2)")
    demo.add_argument("--depth", type=int, default=10, help="MetaPDNet layers (default 10)")
    demo.add_argument("--channels", type=int, default=16, help="filters per layer (default 16)")
    demo.add_argument("--finetune-steps", type=int, default=50, help="fine-tuning steps (default 50)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--seed", type=int, default=0)
    bench = commands.add_parser("benchmark", help="reproduce a paper's experiments at CPU scale (results.json, table.md, figures)")
    bench.add_argument("name", choices=sorted(BENCHMARKS), help="which paper")
    bench.add_argument("--quick", action="store_true", help="small configuration (< 10 min on CPU)")
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bench.add_argument("--data-root", default=None, help="offline data folder (default: $DEEPINV_META_DATA)")
    bench.add_argument("--out", default=None, help="output folder (default: benchmark-results/NAME[-quick])")
    bench.add_argument("--part", choices=("all", "imaging", "toy"), default="all",
                       help="meta-prior only: imaging experiments, the Gaussian toy, or both (default)")
    bench.add_argument("--reuse-meta-models", default=None, metavar="DIR",
                       help="meta-prior only: skip meta-training and load meta_pdnet_*.pt from DIR (same --quick setting)")
    bench.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting of the configuration (repeatable), e.g. --set train_minutes=30; "
                            "the settings are printed at the start of a run and stored in results.json")
    bench.add_argument("--seed", type=int, default=0)
    return parser


# name -> module under deepinv_meta.benchmarks with run(quick, device, root, out, seed)
BENCHMARKS = {"meta-prior": "meta_prior", "metadip": "metadip", "meta-red": "meta_red", "variational": "variational"}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from .demo import run_demo

        if args.minutes <= 0:
            print("--minutes must be > 0", file=sys.stderr)
            return 2
        run_demo(minutes=args.minutes, depth=args.depth, channels=args.channels,
                 finetune_steps=args.finetune_steps, device=args.device, seed=args.seed)
    elif args.command == "benchmark":
        return run_benchmark(args)
    return 0


def run_benchmark(args) -> int:
    import importlib
    from pathlib import Path

    from .benchmarks import gaussian_toy
    from .benchmarks.settings import configure, parse_setting
    from .data import data_root

    if args.reuse_meta_models and args.name != "meta-prior":
        print(f"error: --reuse-meta-models applies to the meta-prior benchmark only, not {args.name}.", file=sys.stderr)
        return 2
    if args.settings and args.name == "meta-prior" and args.part == "all":
        print("error: the toy and the imaging part of meta-prior have different settings; "
              "use --set with --part imaging or --part toy.", file=sys.stderr)
        return 2
    out = Path(args.out or f"benchmark-results/{args.name}{'-quick' if args.quick else ''}")
    toy_only = args.name == "meta-prior" and args.part == "toy"  # the toy samples its own data
    try:
        root = None if toy_only else data_root(args.data_root)
        settings = dict(parse_setting(text) for text in args.settings)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    module = importlib.import_module(f".benchmarks.{BENCHMARKS[args.name]}", __package__)
    try:  # an unknown key is reported before any work starts
        configure(gaussian_toy.FULL if toy_only else module.FULL, settings)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    if args.name == "meta-prior" and args.part in ("all", "toy"):
        gaussian_toy.run(quick=args.quick, out=out / "gaussian_toy", seed=args.seed, verbose=True, settings=settings)
        if toy_only:
            return 0
    options = {"reuse_meta_models": args.reuse_meta_models} if args.reuse_meta_models else {}
    module.run(quick=args.quick, device=args.device, root=root, out=out, seed=args.seed, settings=settings, **options)
    print(f"results written to {out}/ (results.json, table.md, figures, checkpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

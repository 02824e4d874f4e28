"""Command line: ``deepinv-meta demo``."""

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
    return parser


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
    return 0


if __name__ == "__main__":
    sys.exit(main())

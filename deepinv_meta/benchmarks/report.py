"""What every benchmark writes: the machine line, ``results.json`` and a markdown table (DESIGN.md contract)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import deepinv as dinv
import torch

from ..bilevel import NonFiniteLossError


def log(message: str) -> None:
    """One line of a benchmark's log, flushed at once (runs are long and often redirected to a file)."""
    print(message, flush=True)


def machine(device) -> str:
    """One line naming the hardware and software a benchmark ran on."""
    device = torch.device(device)
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return f"{hardware} | torch {torch.__version__} | deepinv {dinv.__version__} | python {platform.python_version()}"


def write_results(out: Path, result: dict) -> None:
    """``results.json`` (indented, stable key order)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


def markdown_table(rows: list[dict], columns: list[str], methods: list[str], cell) -> str:
    """A methods x columns markdown table; ``cell(row or None)`` formats one entry."""
    lookup = {(r["method"], r["task"]): r for r in rows}
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(cell(lookup.get((method, c))) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(out: Path, result: dict, table: str) -> None:
    """``table.md``: the command (with its ``--set`` overrides), device, wall time and configuration of the run, then ``table``."""
    overrides = "".join(f' --set "{key}={value!r}"' for key, value in result.get("settings", {}).items())
    header = (f"Command: `deepinv-meta benchmark {result['benchmark']}{' --quick' if result['quick'] else ''}{overrides}`  \n"
              f"Device: {result['device']}  \nWall time: {result['wall_time_s']:.0f} s  \n"
              f"Config: `{ {k: v for k, v in result['config'].items() if k != 'data_root'} }`\n\n")
    (out / "table.md").write_text(header + table)


def loss_summary(history: list[dict]) -> str:
    """First loss and mean of the last ten of a :class:`~deepinv_meta.MetaTrainer` history (skipped steps left out)."""
    losses = [r["outer_loss"] for r in history if not r["skipped"]]
    if not losses:
        return "no finite loss"
    return f"loss {losses[0]:.3e} -> {sum(losses[-10:]) / len(losses[-10:]):.3e} (mean of the last 10)"


def train_for(trainer, minutes: float, name: str, validate_every: float | None = None,
              rollback_above: float | None = None) -> float:
    """Run ``trainer`` for ``minutes`` of wall time, print steps, speed and losses; return the seconds spent.

    With ``validate_every`` (minutes), the adapted model's loss on fixed held-out episodes of the
    training tasks (:meth:`~deepinv_meta.MetaTrainer.validate`) is measured after each such chunk,
    and the weights with the lowest one are kept: meta-training can leave the stable region late
    (measured for MetaDIP), and a late blow-up must not replace a good model. The chosen step is
    ``trainer.selected_step`` and the validation curve ``trainer.validation``.

    With ``rollback_above`` as well, a held-out loss above that multiple of the best one (or not finite)
    is taken for a blow-up: training goes back to the best weights and halves its outer learning rate
    (:meth:`~deepinv_meta.MetaTrainer.rollback`) instead of spending the rest of its time on a dead model
    (measured for MetaDIP at 32x32: a blow-up at step 153 left the held-out loss at 0.29 for the
    remaining 15 minutes).
    """
    start = time.perf_counter()
    chunk = 60 * (validate_every or minutes)
    while True:
        left = 60 * minutes - (time.perf_counter() - start)
        trainer.train(steps=10**7, max_time=min(chunk, left))
        if validate_every is not None:
            rollbacks = len(trainer.rollbacks)
            loss = trainer.validate(rollback_above)
            if len(trainer.rollbacks) > rollbacks:
                print(f"  {name}: held-out loss {loss:.3e} at step {trainer.step} > {rollback_above} x best; back to "
                      f"step {trainer.rollbacks[-1]['to_step']}, outer lr x {trainer.lr_factor:g}", flush=True)
        if time.perf_counter() - start >= 60 * minutes - 1:
            break
    seconds = time.perf_counter() - start
    print(f"  {name}: {trainer.step} steps in {seconds:.0f} s ({seconds / max(trainer.step, 1):.2f} s/step), "
          f"{loss_summary(trainer.history)}", flush=True)
    if trainer.validation:
        print(f"  {name}: held-out loss after adaptation " + ", ".join(
            f"{v['loss']:.3e} (step {v['step']})" for v in trainer.validation), flush=True)
        try:
            trainer.restore_best()
        except NonFiniteLossError as error:
            raise NonFiniteLossError(f"{name}: no finite held-out loss in meta-training; lower the outer "
                                     "learning rate (--set outer_lr=...).") from error
        if trainer.selected_step != trainer.step:
            print(f"  {name}: kept the weights of step {trainer.selected_step} (lowest held-out loss)", flush=True)
    return seconds

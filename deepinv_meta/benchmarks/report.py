"""What every benchmark writes: the machine line, ``results.json`` and a markdown table (DESIGN.md contract)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import deepinv as dinv
import torch


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
    """``table.md``: the command, device, wall time and configuration of the run, then ``table``."""
    header = (f"Command: `deepinv-meta benchmark {result['benchmark']}{' --quick' if result['quick'] else ''}`  \n"
              f"Device: {result['device']}  \nWall time: {result['wall_time_s']:.0f} s  \n"
              f"Config: `{ {k: v for k, v in result['config'].items() if k != 'data_root'} }`\n\n")
    (out / "table.md").write_text(header + table)


def loss_summary(history: list[dict]) -> str:
    """First loss and mean of the last ten of a :class:`~deepinv_meta.MetaTrainer` history (skipped steps left out)."""
    losses = [r["outer_loss"] for r in history if not r["skipped"]]
    if not losses:
        return "no finite loss"
    return f"loss {losses[0]:.3e} -> {sum(losses[-10:]) / len(losses[-10:]):.3e} (mean of the last 10)"


def train_for(trainer, minutes: float, name: str) -> float:
    """Run ``trainer`` for ``minutes`` of wall time, print steps, speed and losses; return the seconds spent."""
    start = time.perf_counter()
    trainer.train(steps=10**7, max_time=60 * minutes)
    seconds = time.perf_counter() - start
    print(f"  {name}: {trainer.step} steps in {seconds:.0f} s ({seconds / max(trainer.step, 1):.2f} s/step), "
          f"{loss_summary(trainer.history)}", flush=True)
    return seconds

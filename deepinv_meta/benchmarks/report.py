"""What every benchmark writes: the machine line, ``results.json`` and a markdown table (DESIGN.md contract)."""

from __future__ import annotations

import json
import platform
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

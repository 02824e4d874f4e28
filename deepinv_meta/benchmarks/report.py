"""The skeleton every benchmark shares: its :class:`Context` (what the command line gives it), the log, the
machine line, ``results.json`` and a markdown table (DESIGN.md contract).

A benchmark module defines ``FULL`` and ``QUICK`` settings and ``run(config, context) -> result``;
:func:`run_benchmark` applies the user's ``--set`` overrides and calls it, and the module ends with
:meth:`Context.finish`, which writes ``results.json`` and ``table.md`` and logs the table and the wall time.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import deepinv as dinv
import torch

from ..bilevel import NonFiniteLossError
from ..bilevel.trainer import default_device
from ..data import data_root
from .settings import configure


@dataclass
class Context:
    """Where and how a benchmark runs.

    :param bool quick: the ``QUICK`` settings instead of ``FULL``.
    :param str device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
    :param str data_root: the offline data folder (default ``$DEEPINV_META_DATA``).
    :param str out: the output folder (``None``: nothing written).
    :param int seed: the seed of every random draw.
    :param dict settings: the user's overrides of the settings (``--set KEY=VALUE``), stored in the results.
    :param str reuse_meta_models: meta-prior only: a folder of meta-models from an earlier run, loaded instead of
        meta-training them.
    :param str command: the command line that reproduces the run, without ``--quick`` and ``--set`` (default
        ``deepinv-meta benchmark NAME``).
    """

    quick: bool = False
    device: str | None = None
    data_root: str | Path | None = None
    out: str | Path | None = None
    seed: int = 0
    settings: dict = field(default_factory=dict)
    reuse_meta_models: str | Path | None = None
    command: str | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def out_dir(self) -> Path | None:
        return None if self.out is None else Path(self.out)

    def torch_device(self) -> torch.device:
        return torch.device(self.device) if self.device else default_device()

    def root(self) -> Path:
        return data_root(self.data_root)

    def begin(self, title: str, config: dict) -> None:
        """Start the clock and log the benchmark, the machine and the configuration."""
        self.started = time.perf_counter()
        log(f"{title} ({'quick' if self.quick else 'full'}) | {machine(self.torch_device())}")
        log(f"config: {config}")

    def result(self, benchmark: str, config: dict, rows: list, **fields) -> dict:
        """The results of a run: its name, settings, machine, configuration, wall time, rows and ``fields``."""
        return {"benchmark": benchmark, "quick": self.quick, "settings": dict(self.settings),
                "device": machine(self.torch_device()), "config": dict(config, seed=self.seed),
                "wall_time_s": time.perf_counter() - self.started, "rows": rows, **fields}

    def finish(self, result: dict, table: str, figures=None) -> dict:
        """Write ``results.json``, ``table.md`` and ``figures(out)`` (when there is an output folder), log the
        table and the wall time; returns ``result``."""
        if self.out_dir is not None:
            write_results(self.out_dir, result)
            write_table(self.out_dir, dict(result, command=self.command), table)
            if figures is not None:
                figures(self.out_dir)
        log(table)
        log(f"wall time {result['wall_time_s']:.0f} s on {result['device']}")
        return result


def run_benchmark(module, context: Context) -> dict:
    """Run the benchmark ``module`` (``FULL`` / ``QUICK`` settings with ``context.settings`` applied; an unknown
    setting is an error before any work)."""
    return module.run(configure(module.QUICK if context.quick else module.FULL, context.settings), context)


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
    command = result.get("command") or f"deepinv-meta benchmark {result['benchmark']}"
    header = (f"Command: `{command}{' --quick' if result['quick'] else ''}{overrides}`  \n"
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
    (:doc:`/notes`), and a late blow-up must not replace a good model. The chosen step is
    ``trainer.selected_step`` and the validation curve ``trainer.validation``.

    With ``rollback_above`` as well, a held-out loss above that multiple of the best one (or not finite)
    is taken for a blow-up: training goes back to the best weights and halves its outer learning rate
    (:meth:`~deepinv_meta.MetaTrainer.rollback`) instead of spending the rest of its time on a dead model.
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

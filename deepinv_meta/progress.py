"""Progress reporting with real totals, on a terminal (tqdm) or in a log (steady lines)."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


class Progress:
    """Progress of a loop with real totals: steps, or minutes when a time budget ends it first (``steps`` is then
    only an upper bound, e.g. ``MetaTrainer.train(steps=10**9, max_time=...)``: elapsed / total minutes are
    shown, not 0/1000000000). On a terminal it is a tqdm bar; otherwise (a log file, nohup) one line every
    ``every`` seconds, so long runs are never silent."""

    def __init__(self, desc: str, steps: int, done: int = 0, max_time: float | None = None, enabled: bool = True,
                 every: float = 60.0):
        self.desc, self.enabled, self.every, self.steps, self.max_time = desc, enabled, every, steps, max_time
        self.start = self.last_line = time.perf_counter()
        self.by_time = max_time is not None and steps - done > 10**6  # the step count is only an upper bound
        self.bar = None
        if enabled and sys.stderr.isatty():
            if self.by_time:
                self.bar = tqdm(total=round(max_time / 60, 1), unit="min", desc=desc,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} min {postfix}")
            else:
                self.bar = tqdm(total=steps, initial=min(done, steps), desc=desc)

    def step(self, step: int, loss: float | None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        minutes = (now - self.start) / 60
        text = f"step {step}" + ("" if loss is None else f", loss {loss:.3e}")
        if self.bar is not None:
            if self.by_time:
                self.bar.n = min(round(minutes, 1), self.bar.total)
                self.bar.set_postfix_str(text)
            else:
                self.bar.update(1)
                if loss is not None:
                    self.bar.set_postfix(loss=f"{loss:.3e}")
        elif now - self.last_line >= self.every:
            self.last_line = now
            total = f"{self.max_time / 60:.1f} min" if self.by_time else f"{self.steps} steps"
            print(f"{self.desc}: {text}, {minutes:.1f} min elapsed (budget {total})", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

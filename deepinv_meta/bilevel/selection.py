"""Keep-best selection: the validation losses of a training run, the states at the lowest one, blow-ups."""

from __future__ import annotations

import copy
import math

from .inner import NonFiniteLossError


class KeepBest:
    """The validation losses of a training run and a copy of its states at the lowest finite one.

    :Examples:

    >>> from deepinv_meta.bilevel.selection import KeepBest
    >>> keep = KeepBest()
    >>> keep.record(10, 0.5, {"w": [1.0]}), keep.record(20, 0.7, {"w": [2.0]})
    (True, False)
    >>> keep.best_states(), keep.blew_up(1.2, above=3.0), keep.blew_up(2.0, above=3.0)
    ((10, {'w': [1.0]}), False, True)
    """

    def __init__(self):
        self.history: list[dict] = []  # {"step", "loss"} per validation
        self.best: tuple | None = None  # (loss, step, states) of the lowest finite loss

    def record(self, step: int, loss: float, states: dict) -> bool:
        """Append a validation; keep a deep copy of ``states`` if ``loss`` is the lowest finite one so far.
        Returns whether it is."""
        self.history.append({"step": step, "loss": loss})
        if math.isfinite(loss) and (self.best is None or loss < self.best[0]):
            self.best = (loss, step, copy.deepcopy(states))
            return True
        return False

    def blew_up(self, loss: float, above: float | None) -> bool:
        """Whether ``loss`` is above ``above`` times the best one (or not finite): a blow-up to roll back."""
        return above is not None and self.best is not None and not loss <= above * self.best[0]

    def best_states(self) -> tuple[int, dict]:
        """``(step, states)`` of the lowest finite loss.

        :raises NonFiniteLossError: if no validation loss was finite.
        """
        if self.best is None:
            raise NonFiniteLossError("no finite validation loss was measured; lower the learning rate.")
        return self.best[1], self.best[2]

"""Task state that survives a restart of the task's process (real-time runtime).

A task node keeps its finished trials in ``self.trials`` (dataclass records).
In the real-time runtime, a task process that dies is restarted with its last
parameters — without this, the records of the trials finished before would be
gone and the session's metrics would count only the trials after the restart.
:class:`RestorableTrials` gives a task the small state protocol the runtime
uses (:class:`bciarm.bus.realtime.GroupRunner`): ``state_version`` (changes
when there is something new to save), ``state_snapshot()`` (JSON-able) and
``restore_snapshot()``.  The runtime saves a snapshot whenever the version
changes and restores the last one when the process starts again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__array__"}:
        return np.asarray(value["__array__"], float)
    return value


class RestorableTrials:
    """Mixin for task nodes whose finished trials are ``record_class`` dataclasses."""

    record_class: ClassVar[type]
    trials: list[Any]

    @property
    def state_version(self) -> int:
        """Changes whenever a trial finished (records are only ever appended)."""
        return len(self.trials)

    def state_snapshot(self) -> dict[str, Any]:
        """The finished trials, JSON-able (arrays tagged, NaN kept)."""
        return {"trials": [{k: _jsonable(v) for k, v in dataclasses.asdict(t).items()}
                           for t in self.trials]}

    def restore_snapshot(self, state: dict[str, Any]) -> None:
        """Take back the trials of a previous incarnation of this task."""
        self.trials = [self.record_class(**{k: _from_json(v) for k, v in row.items()})
                       for row in state.get("trials", [])]

    def next_index(self, block: str | None) -> int:
        """First trial index not used yet in ``block`` (0 in a fresh block): a task
        restarted mid-block goes on numbering where its previous incarnation stopped."""
        return 1 + max((t.index for t in self.trials if t.block == block), default=-1)

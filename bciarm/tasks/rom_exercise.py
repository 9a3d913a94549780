"""Range-of-motion exercise with an exoskeleton (registry name ``"rom_exercise"``).

Repetitions between two postures: the exercised joint (``joint``, default
the first active one) moves between ``low_fraction`` and ``high_fraction``
of its range of motion while the other active joints stay at the middle of
theirs.  Each leg (low → high or high → low) is one trial, scored exactly as
reach-to-target trials (:mod:`bciarm.tasks.reach_joint`: tolerance, hold,
timeout, assistance, smoothness, range reached, ``rom_violations``).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from bciarm.effectors.exoskeleton.layout import ExoReading
from bciarm.tasks.reach_joint import ReachJointTask


class RomExerciseTask(ReachJointTask):
    """Repetitions of one joint between two fractions of its range of motion."""

    class Params(ReachJointTask.Params):
        joint: str | None = Field(None, description="Exercised joint; None: the first active.")
        low_fraction: float = Field(0.15, ge=0, lt=1, description="Low end, fraction of range.")
        high_fraction: float = Field(0.85, gt=0, le=1, description="High end, fraction of range.")

        @model_validator(mode="after")
        def _ordered(self) -> "RomExerciseTask.Params":
            if self.high_fraction <= self.low_fraction:
                raise ValueError(f"high_fraction ({self.high_fraction}) must exceed "
                                 f"low_fraction ({self.low_fraction})")
            return self

    def __init__(self, name: str, params=None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        joint = self.params.joint or self.axes[0]
        if joint not in self.axes:
            raise ValueError(f"joint {joint!r} is not an active joint {list(self.axes)}")
        self.joint_index = self.axes.index(joint)
        self._high_next = False

    def draw_target(self, r: ExoReading) -> np.ndarray:
        lo, hi = self._active_rom(r)
        p = self.params
        target = (lo + hi) / 2.0
        j = self.joint_index
        # Go to whichever end is farther first, then alternate.
        if self.target is None:
            mid = target[j]
            self._high_next = r.active_position[j] < mid
        frac = p.high_fraction if self._high_next else p.low_fraction
        target[j] = lo[j] + frac * (hi[j] - lo[j])
        self._high_next = not self._high_next
        return target

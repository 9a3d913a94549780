"""Hand gestures: reach a sequence of named gripper/wrist poses (``"gestures"``).

Each trial asks for one named pose -- a wrist rotation from home (rotation
vector, rad, world frame) and a gripper aperture -- held for ``hold_s`` with
the hand near where the block started (within ``tol``).  The sequence
cycles through ``sequence``.  Defaults include a "heart" (a pinch with the
wrist tilted), after the 2025 report of a BCI-driven robotic hand making a
heart sign.  Needs wrist axes and the ``grasp`` axis.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bciarm.tasks.reach_grasp import ReachGraspTask, Step


class Gesture(BaseModel):
    """A named hand pose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    aperture: float = Field(0.04, ge=0, le=0.08)


DEFAULT_GESTURES = {
    "open": Gesture(aperture=0.075),
    "pinch": Gesture(aperture=0.01),
    "turn_left": Gesture(rotation=(0.0, 0.0, 0.5), aperture=0.04),
    "turn_right": Gesture(rotation=(0.0, 0.0, -0.5), aperture=0.04),
    "tilt": Gesture(rotation=(0.3, 0.0, 0.0), aperture=0.04),
    "heart": Gesture(rotation=(0.0, 0.3, 0.0), aperture=0.01),
}


class GesturesTask(ReachGraspTask):
    """One named pose per trial (module docstring)."""

    class Params(ReachGraspTask.Params):
        """Parameters of the gestures task."""

        gestures: dict[str, Gesture] = Field(default_factory=lambda: dict(DEFAULT_GESTURES))
        sequence: list[str] = Field(["open", "pinch", "turn_left", "turn_right", "tilt",
                                     "heart"], min_length=1)
        hold_s: float = Field(0.5, ge=0, description="Time to hold a pose, s.")
        tol: float = Field(0.04, gt=0, description="Hand must stay this near its start, m.")
        orientation_tol: float = Field(0.12, gt=0, description="Wrist tolerance, rad.")
        aperture_tol: float = Field(0.01, gt=0, description="Aperture tolerance, m.")
        calibration_poses: bool = Field(False, description="The gestures are poses already.")

        @model_validator(mode="after")
        def _known(self) -> GesturesTask.Params:
            unknown = [g for g in self.sequence if g not in self.gestures]
            if unknown:
                raise ValueError(f"sequence names unknown gesture(s) {unknown}; "
                                 f"known: {sorted(self.gestures)}")
            return self

    params: GesturesTask.Params

    def __init__(self, name: str, params=None, **kwargs: object) -> None:
        super().__init__(name, params, **kwargs)
        self.home: np.ndarray | None = None
        self._k = 0

    def plan(self) -> tuple[str, list[Step]] | None:
        w = self.world
        p = self.params
        if w is None:
            return None
        if self.home is None:
            self.home = w.hand.position.copy()
        name = p.sequence[self._k % len(p.sequence)]
        self._k += 1
        g = p.gestures[name]
        return name, [Step(name, self.home.copy(), rotation=np.asarray(g.rotation, float),
                           aperture=g.aperture, tol=p.tol, orientation_tol=p.orientation_tol,
                           aperture_tol=p.aperture_tol, hold_s=p.hold_s)]

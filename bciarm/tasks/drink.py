"""Drinking: grasp a full cup, bring it to the mouth upright, put it back (``"drink"``).

After Hochberg et al. 2012 (Nature 485:372), whose participant drank coffee
from a bottle with a robot arm.  A trial (scene ``arm_drink``): reach above
the cup, descend to its rim, grasp, lift, bring it to the mouth target and
hold it there ``drink_s``, carry it back above its place, lower it, release
and move the hand up.  It succeeds when the cup stands back within
``place_tol`` of where it was, upright.

A full cup must stay upright: if the cup (the tracked object, not the hand)
tilts past ``tilt_limit_deg`` while held the trial fails as ``"spill"``.  The
arm's wrist limit (``wrist.max_tilt_deg``) is what keeps it from happening;
the task only judges.  The task also records the fastest end-effector speed
inside the mouth zone (``zone_radius``), which the arm's speed zone caps.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, field_validator

from bciarm.tasks.reach_grasp import ReachGraspTask, Step


class DrinkTask(ReachGraspTask):
    """Cup to mouth and back, one drink per trial (module docstring)."""

    class Params(ReachGraspTask.Params):
        """Parameters of the drinking task."""

        objects: list[str] = Field(["cup"], description="Tracked objects; the first is the cup.")
        mouth: tuple[float, float, float] = Field((0.02, 0.12, 0.95),
                                                  description="Mouth target, world m.")
        mouth_radius: float = Field(0.03, gt=0, description="Acceptance radius at the mouth, m.")
        drink_s: float = Field(1.0, ge=0, description="Time the cup stays at the mouth, s.")
        zone_radius: float = Field(0.15, gt=0, description="Radius of the reduced-speed zone "
                                                           "around the mouth (reporting), m.")
        tilt_limit_deg: float = Field(20.0, gt=0, le=90,
                                      description="A held cup tilting past this spills, deg.")
        grasp_dz: float = Field(0.03, description="Grasp point above the cup centre, m.")
        lift_dz: float = Field(0.08, gt=0, description="Lift above the table before moving, m.")
        approach_dz: float = Field(0.07, gt=0)
        open_aperture: float = Field(0.08, gt=0)
        grip_aperture: float = Field(0.045, ge=0)
        grasp_tol: float = Field(0.012, gt=0)
        place_tol: float = Field(0.03, gt=0, description="Cup back within this of its place, m.")
        tol: float = Field(0.025, gt=0)

        @field_validator("objects")
        @classmethod
        def _one(cls, v: list[str]) -> list[str]:
            if not v:
                raise ValueError("objects must name the cup first")
            return v

    params: DrinkTask.Params

    def __init__(self, name: str, params=None, **kwargs: object) -> None:
        super().__init__(name, params, **kwargs)
        self.place: np.ndarray | None = None

    @property
    def cup(self) -> str:
        return self.params.objects[0]

    def plan(self) -> tuple[str, list[Step]] | None:
        w = self.world
        p = self.params
        if w is None or self.cup not in w.objects:
            return None
        c, tilt = w.objects[self.cup]
        if math.degrees(tilt) > p.tilt_limit_deg:
            return None  # the cup fell over: nothing more to drink (the block times out)
        if self.place is None:
            self.place = c.copy()  # the cup goes back where it first stood
        place = self.place
        grasp = c + [0, 0, p.grasp_dz]
        put = place + [0, 0, p.grasp_dz + 0.003]
        mouth = np.asarray(p.mouth, float)
        hold = dict(aperture=p.grip_aperture, hold=True)
        rot_tol = p.orientation_tol
        steps = [
            Step("approach", grasp + [0, 0, p.approach_dz], rotation=self.wrist_goal(),
                 aperture=p.open_aperture, tol=p.tol, orientation_tol=rot_tol),
            Step("descend", grasp, aperture=p.open_aperture, tol=p.grasp_tol,
                 orientation_tol=rot_tol),
            Step("grasp", grasp, aperture=p.open_aperture, hold=True, tol=p.grasp_tol,
                 kind="grasp"),
            Step("lift", grasp + [0, 0, p.lift_dz], tol=p.tol * 1.5, **hold),
            Step("mouth", mouth, tol=p.mouth_radius, hold_s=p.drink_s, orientation_tol=rot_tol,
                 **hold),
            Step("back", put + [0, 0, p.lift_dz], tol=p.tol * 1.5, **hold),
            Step("lower", put, tol=p.grasp_tol, orientation_tol=rot_tol, **hold),
            Step("release", put, aperture=p.open_aperture, tol=p.tol, kind="release"),
            Step("retreat", put + [0, 0, p.approach_dz], rotation=self.wrist_goal(),
                 aperture=p.open_aperture, tol=p.tol * 1.5, orientation_tol=rot_tol),
        ]
        return self.cup, steps

    def watch(self) -> str | None:
        from bciarm.effectors.grasp import CLOSED

        w = self.world
        p = self.params
        pos, tilt = w.objects[self.cup]
        held = w.hand_mode == CLOSED and w.holding
        if held:
            deg = math.degrees(tilt)
            self._max_tilt = deg if math.isnan(self._max_tilt) else max(self._max_tilt, deg)
            if deg > p.tilt_limit_deg:
                return "spill"
        d = float(np.linalg.norm(w.hand.position - np.asarray(p.mouth)))
        if d <= p.zone_radius:
            speed = float(np.linalg.norm(w.velocity))
            self._max_zone = speed if math.isnan(self._max_zone) else max(self._max_zone, speed)
        return None

    def judge(self) -> str:
        pos, tilt = self.world.objects[self.cup]
        ok = (np.linalg.norm((pos - self.place)[:2]) <= self.params.place_tol
              and math.degrees(tilt) < 10.0)
        return "success" if ok else "misplaced"

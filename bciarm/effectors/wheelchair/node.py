"""The ``wheelchair`` effector node: the bus around :class:`.controller.WheelchairController`.

Inputs: ``intent`` (space ``"drive"``: ``[forward, turn]`` fractions of the
active profile), ``event`` (``estop`` latches, ``resume`` clears, ``assist``
with ``data={"level": x}`` sets the assistance level, ``mode`` with
``data={"profile": name}`` switches indoor/outdoor, ``block_start`` applies
``open_loop_assist`` in open-loop blocks if set), ``task`` (the current
target is shown in the scene).

Outputs: ``state.<name>`` every tick (:class:`~bciarm.bus.messages.EffectorState`:
``position`` = chair (x, y, 0), ``velocity`` = world linear velocity,
``joint_*`` = wheels, ``extra`` laid out as :data:`EXTRA_LAYOUT` followed by
the range readings), and an ``event`` of kind ``collision`` at each new
contact with a wall or furniture.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from bciarm.bus.messages import EffectorState, Event
from bciarm.bus.node import NodeParams
from bciarm.effectors.node import EffectorNode
from bciarm.effectors.wheelchair.controller import WheelchairConfig, WheelchairController

#: Names of the first entries of ``EffectorState.extra``; the range-sensor
#: readings (m, beam 0 straight ahead, counter-clockwise) follow.
EXTRA_LAYOUT = ("heading", "forward", "turn", "command_forward", "command_turn", "clearance",
                "assist_level", "max_forward", "max_turn")
N_FIXED = len(EXTRA_LAYOUT)


def extra_value(state: EffectorState, name: str) -> float:
    """One named entry of a wheelchair state's ``extra`` array."""
    return float(state.extra[EXTRA_LAYOUT.index(name)])


def ranges_of(state: EffectorState) -> np.ndarray:
    """The range-sensor readings carried by a wheelchair state."""
    return np.asarray(state.extra[N_FIXED:], dtype=float)


class WheelchairEffector(EffectorNode):
    """Bus node: a powered wheelchair following a 2-D drive intent, safely.

    Parameters
    ----------
    name : str
    params : Params or dict
        WheelchairConfig fields plus ``driver`` and ``driver_params``.
    """

    class Params(WheelchairConfig, NodeParams):
        """WheelchairConfig plus the driver to run."""

        driver: str = "pybullet_wheelchair"
        driver_params: dict[str, Any] = Field(default_factory=dict)
        open_loop_assist: float | None = Field(
            None, ge=0, le=1, description="Assistance level during open-loop (calibration) "
                                          "blocks; None: assist.level throughout.  Lets a "
                                          "comparison run calibrate like the others.")

    params: "WheelchairEffector.Params"
    intent_space = "drive"
    intent_dim = 2

    config_class = WheelchairConfig
    controller_class = WheelchairController
    extra_outputs = ("event",)
    controller: WheelchairController | None

    def __init__(self, name: str, params: Any = None, **kwargs: Any) -> None:
        super().__init__(name, params, **kwargs)
        self._collisions_seen = 0

    # ------------------------------------------------------------------ figures for checks

    @property
    def max_speed(self) -> float:
        """Top forward speed of the active profile (m/s)."""
        return self.params.drive_profile().max_forward

    @property
    def max_accel(self) -> float:
        return self.params.drive_profile().accel

    @property
    def stopping_time_s(self) -> float:
        """Time to rest from top speed along the deceleration profile (no watchdog delay)."""
        from bciarm.effectors.wheelchair.motion import stopping_distance

        p = self.params.drive_profile()
        return stopping_distance(p.max_forward, p.decel, p.jerk, self.params.tick_s)[1]

    #: An e-stop brakes the wheels at full motor torque; the chair (195 kg)
    #: is at rest within this time from any indoor speed (measured: tests).
    estop_stop_s = 0.3
    #: From rest, a deliberate intent wakes the chair (idle handling) and the
    #: jerk-limited profile brings it to speed within about this time.
    response_time_s = 1.0

    def intent_velocity(self, state: EffectorState) -> np.ndarray:
        """The state's motion in intent units: measured [forward, turn] / profile limits."""
        fwd, turn = extra_value(state, "forward"), extra_value(state, "turn")
        vmax, wmax = extra_value(state, "max_forward"), extra_value(state, "max_turn")
        return np.array([fwd / vmax, turn / wmax])

    # ------------------------------------------------------------------ node hooks

    def on_event(self, msg: Event) -> None:
        ctl = self.controller
        if msg.kind == "block_start" and self.params.open_loop_assist is not None:
            open_loop = msg.data.get("mode") == "open_loop"
            ctl.set_assist(self.params.open_loop_assist if open_loop
                           else self.params.assist.level)
        elif msg.kind == "assist":
            level = msg.data.get("level")
            if isinstance(level, (int, float)) and math.isfinite(level):
                ctl.set_assist(float(level))
        elif msg.kind == "mode" and isinstance(msg.data.get("profile"), str):
            try:
                ctl.set_profile(msg.data["profile"])
            except ValueError as exc:
                self.log.warning("%s: %s", self.name, exc)

    def on_tick(self, now_ns: int) -> None:
        ctl = self.controller
        if ctl is None:
            return
        now_s = now_ns / 1e9
        st = ctl.update(None, now_s)
        derived = self.provenance(now_s)
        p = ctl.profile
        fixed = [st.pose[2], st.forward, st.turn, st.command[0], st.command[1],
                 min(st.clearance, 1e3), ctl.assist.level, p.max_forward, p.max_turn]
        extra = np.ascontiguousarray(np.r_[fixed, st.ranges], dtype="<f8")
        if not np.all(np.isfinite(extra)):
            extra = np.nan_to_num(extra, nan=0.0, posinf=1e3, neginf=-1e3)
        pos = np.array([st.pose[0], st.pose[1], 0.0])
        self.emit(self.state_topic, EffectorState, derived_from=derived,
                  position=np.ascontiguousarray(pos, dtype="<f8"),
                  velocity=np.ascontiguousarray(st.velocity, dtype="<f8"),
                  joint_position=np.ascontiguousarray(st.wheels, dtype="<f8"),
                  joint_velocity=np.ascontiguousarray(st.wheel_velocity, dtype="<f8"),
                  estopped=st.estopped, guards=st.guards, extra=extra)
        if ctl.collisions > self._collisions_seen:
            self._collisions_seen = ctl.collisions
            self.emit("event", Event, kind="collision",
                      data={"x": float(st.pose[0]), "y": float(st.pose[1]),
                            "count": int(ctl.collisions)})

"""The ``exoskeleton`` effector node: the bus around :class:`.controller.ExoController`.

Inputs: ``intent`` (space ``"joint"``: one rad/s per active joint of the
patient profile, in its order; or ``"cartesian"``: palm velocity along the
configured world axes), ``event`` (``estop`` latches; ``resume`` clears the
e-stop and a torque-limit stop; ``assist`` with ``data={"level": x}`` sets
the assistance level; ``joint_target`` with ``data={<joint name>: rad, ...}``
sets the task's joint-space goal; ``block_start`` applies
``open_loop_assist`` in open-loop blocks), ``task`` (the goal is shown while
the phase is ``reach`` or ``hold``; in end-point space ``TaskState.target``
is the goal; the target is drawn in the scene).

Outputs: ``state.<name>`` every tick (:class:`~bciarm.bus.messages.EffectorState`:
``position``/``velocity`` = palm, ``joint_*`` = every joint in driver order,
``extra`` as :mod:`.layout` documents: assistance level, goal, range of
motion, gravity and interaction torques, ...), and an ``event`` of kind
``torque_limit`` (``data``: joint, torque_nm, limit_nm) each time the torque
limit stops the exoskeleton.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from bciarm.bus.messages import EffectorState, Event, TaskState
from bciarm.bus.node import NodeParams
from bciarm.effectors.exoskeleton.controller import ExoConfig, ExoController
from bciarm.effectors.exoskeleton.layout import pack_extra, reading_of
from bciarm.effectors.node import EffectorNode
from bciarm.space import AXIS_INDEX

#: Task phases during which the goal is on show (assistance possible).
GOAL_PHASES = ("reach", "hold")


class ExoEffector(EffectorNode):
    """Bus node: an upper-limb exoskeleton following a joint-space (or end-point) intent.

    Parameters
    ----------
    name : str
    params : Params or dict
        ExoConfig fields plus ``driver``, ``driver_params`` and ``open_loop_assist``.
    """

    class Params(ExoConfig, NodeParams):
        """ExoConfig plus the driver to run."""

        driver: str = "pybullet_exo"
        driver_params: dict[str, Any] = Field(default_factory=dict)
        open_loop_assist: float | None = Field(
            0.0, ge=0, le=1, description="Assistance level during open-loop (calibration) "
                                         "blocks, where the task drives; None: assist.level "
                                         "throughout.")

        @model_validator(mode="after")
        def _axes_match_profile(self) -> "ExoEffector.Params":
            if self.space() == "joint" and self.axes is not None:
                active = list(self.load_profile().active)
                if list(self.axes) != active:
                    raise ValueError(f"joint-space axes {list(self.axes)} must be the patient "
                                     f"profile's active joints in order: {active} (profile "
                                     f"{self.profile!r}); fix the graph's axes or the profile")
            return self

    params: "ExoEffector.Params"
    config_class = ExoConfig
    controller_class = ExoController
    extra_outputs = ("event",)
    controller: ExoController | None

    def __init__(self, name: str, params: Any = None, **kwargs: Any) -> None:
        super().__init__(name, params, **kwargs)
        p = self.params
        self.profile = p.load_profile()
        self.intent_space = p.space()
        self._torque_seen = 0

    # ------------------------------------------------------------------ figures for checks

    @property
    def intent_dim(self) -> int:
        return len(self.profile.active) if self.intent_space == "joint" else len(self.params.axes)

    @property
    def max_speed(self) -> float:
        """Intent norm clamp (rad/s in joint space, m/s in end-point space)."""
        if self.params.max_speed is not None:
            return float(self.params.max_speed)
        if self.intent_space == "joint":
            return float(np.min(self.profile.max_speed(self.profile.active)))
        return 0.2

    @property
    def max_accel(self) -> float:
        return float(self.params.max_accel)

    #: An e-stop commands zero at full motor torque; the arm is still within this time.
    estop_stop_s = 0.05

    def state_speed(self, state: EffectorState) -> float:
        """Speed of a state in intent units (what ``max_speed`` bounds)."""
        return float(np.linalg.norm(self.intent_velocity(state)))

    def intent_velocity(self, state: EffectorState) -> np.ndarray:
        """A state's motion in intent units: active-joint speeds, or palm velocity on the axes."""
        if self.intent_space == "joint":
            r = reading_of(state)
            return r.active_velocity if r is not None else np.zeros(self.intent_dim)
        return np.asarray(state.velocity, dtype=float)[[AXIS_INDEX[a] for a in self.params.axes]]

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
        elif msg.kind == "joint_target" and self.intent_space == "joint":
            values = [msg.data.get(j) for j in self.profile.active]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                ctl.set_goal(np.array(values, dtype=float))
            else:
                ctl.set_goal(None)
                self._reject("joint_target")

    def on_task(self, msg: TaskState) -> None:
        ctl = self.controller
        ctl.goal_visible = msg.phase in GOAL_PHASES
        if self.intent_space == "cartesian":
            ctl.set_goal(msg.target if ctl.goal_visible else None)
        if ctl.driver.connected:
            ctl.driver.show_target(msg.target, msg.target_radius)

    def on_tick(self, now_ns: int) -> None:
        ctl = self.controller
        if ctl is None:
            return
        now_s = now_ns / 1e9
        st = ctl.update(None, now_s)
        u, a = st.intent, st.assist
        total = float(np.linalg.norm(u + a))
        assist_speed = float(np.linalg.norm(a))
        q = st.joint_position if np.all(np.isfinite(st.joint_position)) else np.zeros(
            len(ctl.names))
        qd = st.joint_velocity if np.all(np.isfinite(st.joint_velocity)) else np.zeros(
            len(ctl.names))
        active_q = q[ctl.active_idx]
        goal = ctl.goal if (ctl.goal is not None and ctl.space == "joint") else active_q
        extra = pack_extra(
            {"n_active": len(ctl.active_idx),
             "assist_level": assist_speed / total if total > 1e-12 else 0.0,
             "assist_speed": assist_speed, "intent_speed": float(np.linalg.norm(u)),
             "command_speed": total,
             "goal_active": float(ctl.goal_visible and ctl.goal is not None),
             "torque_stopped": float(st.torque_stopped), "rom_violation": float(st.rom_violation)},
            {"active_position": active_q, "active_velocity": qd[ctl.active_idx], "goal": goal,
             "active_index": ctl.active_idx},
            {"rom_lower": ctl.rom_lower, "rom_upper": ctl.rom_upper,
             "gravity_torque": st.gravity_torque, "interaction_torque": st.interaction_torque})
        pos = st.position if np.all(np.isfinite(st.position)) else np.zeros(3)
        vel = st.velocity if np.all(np.isfinite(st.velocity)) else np.zeros(3)
        self.emit(self.state_topic, EffectorState, derived_from=self.provenance(now_s),
                  position=np.ascontiguousarray(pos, dtype="<f8"),
                  velocity=np.ascontiguousarray(vel, dtype="<f8"),
                  joint_position=np.ascontiguousarray(q, dtype="<f8"),
                  joint_velocity=np.ascontiguousarray(qd, dtype="<f8"),
                  estopped=st.estopped, guards=st.guards, extra=extra)
        while self._torque_seen < len(ctl.torque_events):
            ev = ctl.torque_events[self._torque_seen]
            self._torque_seen += 1
            self.log.warning("%s: torque limit at %s (%.1f N·m > %.1f N·m): stopped",
                             self.name, ev["joint"], ev["torque_nm"], ev["limit_nm"])
            self.emit("event", Event, kind="torque_limit", data=dict(ev))

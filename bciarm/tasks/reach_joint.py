"""Reach-to-target in joint space with an exoskeleton (registry name ``"reach_joint"``).

Targets
    Postures of the active joints (the patient profile's ``active``, the
    graph's ``axes``), drawn from the node's seeded generator uniformly
    inside the central ``rom_fraction`` of each joint's range of motion (read
    from the exoskeleton's state, so the task follows the profile the effector
    enforces), at least ``min_distance_deg`` (joint-space norm) from the
    previous target.  Each target is one trial; the next starts where the
    previous one ended.

Trials and phases
    As :mod:`bciarm.tasks.center_out`: ``reach`` (target shown, timer
    running) → ``hold`` (every active joint within ``tolerance_deg`` of the
    target; stay ``hold_s``) → ``done`` (``outcome`` success or timeout, at
    ``timeout_s`` without a hold started).  A block ends an unfinished trial
    without recording it.

Messages
    At each trial start the task publishes an ``event`` of kind
    ``joint_target`` with ``data = {joint name: target angle (rad)}`` (the
    exoskeleton's assist-as-needed and the simulated user read it), then
    ``TaskState`` whose ``target`` is where the palm will be at the target
    posture (world, for display; forward kinematics of ``scene``) and whose
    ``target_radius`` is ``display_radius_m``.  In open-loop blocks the task
    is the autopilot: an ``Intent`` (space ``"joint"``) every tick aiming at
    the target with the simulated user's speed profile, no noise, no delay.

Metrics
    :mod:`bciarm.tasks.exo_metrics`: trials, success rate, time, path
    efficiency, ``rom_violations``, ``assist_fraction``, smoothness (SPARC) and
    range of motion reached.  The task measures range-of-motion violations
    itself from the measured joint angles of every state message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from bciarm.bus.messages import EffectorState, Event, Intent, TaskState
from bciarm.bus.node import Node, NodeParams
from bciarm.effectors.exoskeleton.layout import ExoReading, reading_of
from bciarm.sources.user import aim_velocity
from bciarm.space import intent_space
from bciarm.tasks.exo_metrics import EXO_METRIC_KEYS, ExoTrialRecord, compute_exo_metrics, sparc
from bciarm.tasks.inputs import TaskInputs

NS_PER_S = 1_000_000_000
PHASES = ("idle", "reach", "hold", "done")
MODES = ("open_loop", "closed_loop")


class ReachJointTask(TaskInputs, Node):
    """Reach-to-target in joint space, with autopilot for open-loop calibration.

    Attributes
    ----------
    trials : list of ExoTrialRecord
    phase, block, mode, trial
    target : ndarray (k,) or None
        Current target posture of the active joints (rad).
    """

    class Params(NodeParams):
        """Parameters of the joint-space reaching task."""

        tick_s: float | None = Field(0.05, gt=0, description="TaskState/autopilot period, s.")
        axes: list[str] | None = Field(
            None, description="Active joints (intent order); None: the profile's.")
        profile: str = Field("example", description="Patient profile (for the active joints "
                                                    "when axes is not given).")
        scene: str | None = Field("exo_upper_limb", description="Scene for the palm position "
                                                                "of a target (display); None: "
                                                                "none.")
        effector: str | None = Field(None, description="Follow only state.<effector>.")
        rom_fraction: float = Field(0.75, gt=0, le=1, description="Targets lie in this central "
                                                                  "fraction of each range.")
        min_distance_deg: float = Field(25.0, ge=0, description="Joint-space distance from the "
                                                                "previous target, at least.")
        tolerance_deg: float = Field(6.0, gt=0, description="Every active joint within this "
                                                            "of the target counts as there.")
        hold_s: float = Field(0.3, ge=0)
        timeout_s: float = Field(10.0, gt=0)
        display_radius_m: float = Field(0.04, gt=0)
        autopilot_speed: float = Field(0.5, ge=0, description="Open-loop speed, rad/s.")
        autopilot_gain: float = Field(2.5, gt=0, description="Open-loop speed per rad, 1/s.")

        @field_validator("axes")
        @classmethod
        def _joint_axes(cls, axes: list[str] | None) -> list[str] | None:
            if axes is not None and intent_space(axes) != "joint":
                raise ValueError(f"axes must be the exoskeleton's active joints (joint names), "
                                 f"got {axes}")
            return axes

    inputs = ("state.*", "event")
    outputs = ("task", "intent", "event")

    metric_keys = EXO_METRIC_KEYS
    json_keys = ("trials", "success_rate", "rom_violations", "assist_fraction",
                 "mean_time_to_target_s", "smoothness", "rom_reached_fraction", "realtime_factor")
    table_columns = (("trials", "trials", "{}"), ("success_rate", "ok", "{:.0%}"),
                     ("mean_time_to_target_s", "time", "{:.1f}s"),
                     ("assist_fraction", "assist", "{:.0%}"),
                     ("smoothness", "SPARC", "{:.2f}"),
                     ("rom_reached_fraction", "RoM", "{:.0%}"),
                     ("rom_violations", "viol.", "{}"))
    compute_metrics = staticmethod(compute_exo_metrics)

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        p = self.params
        if p.axes is None:
            from bciarm.effectors.exoskeleton.profile import load_profile

            self.axes = tuple(load_profile(p.profile).active)
        else:
            self.axes = tuple(p.axes)
        self.k = len(self.axes)
        self._hold_ns = round(p.hold_s * NS_PER_S)
        self._timeout_ns = round(p.timeout_s * NS_PER_S)
        self._tol = math.radians(p.tolerance_deg)
        self.trials: list[ExoTrialRecord] = []
        self.phase = "idle"
        self.block: str | None = None
        self.mode = ""
        self.trial = -1
        self.target: np.ndarray | None = None
        self._reading: ExoReading | None = None
        self._joint_q: np.ndarray | None = None
        self._palm = np.zeros(3)
        self._target_palm = np.zeros(3)
        self._n_in_block = 0
        self._kin: Any = None
        self._kin_failed = False
        self._last_state_ns: int | None = None
        self._reset_trial(0)

    # ------------------------------------------------------------------ queries

    def completed_trials(self, block: str | None = None) -> int:
        block = self.block if block is None else block
        return sum(1 for t in self.trials if t.block == block) if block is not None else 0

    @property
    def running(self) -> bool:
        return self.phase in ("reach", "hold")

    @property
    def position(self) -> np.ndarray | None:
        """Active joint angles (rad) from the latest state."""
        return None if self._reading is None else self._reading.active_position

    # ------------------------------------------------------------------ inputs

    def _on_state(self, msg: EffectorState) -> None:
        r = reading_of(msg)
        if r is None or r.active_position.size != self.k:
            return
        now = self.now_ns()
        dt = 0.0 if self._last_state_ns is None else (now - self._last_state_ns) / NS_PER_S
        self._last_state_ns = now
        q = np.asarray(msg.joint_position, dtype=float)
        if self.running and self._reading is not None:
            step = float(np.linalg.norm(r.active_position - self._reading.active_position))
            self._path += step
            self._assist += r.assist_speed * dt
            self._command += r.command_speed * dt
            self._speeds.append(float(np.linalg.norm(r.active_velocity)))
            self._min = np.minimum(self._min, r.active_position)
            self._max = np.maximum(self._max, r.active_position)
            if np.any(q < r.rom_lower) or np.any(q > r.rom_upper):
                self._violations += 1
        self._reading = r
        self._joint_q = q
        self._palm = np.asarray(msg.position, dtype=float)
        if self.block is not None and not self.running:
            self._next_trial(now)
        elif self.running:
            self._update(now)

    def on_tick(self, now_ns: int) -> None:
        if self.running:
            self._update(now_ns)
        if self.running:
            self._publish_state()
            if self.mode == "open_loop" and self._reading is not None:
                v = aim_velocity(self._reading.active_position, self.target,
                                 self.params.autopilot_speed, self.params.autopilot_gain)
                self.emit("intent", Intent, velocity=v, space="joint")
        elif self._reading is not None:
            self._publish_state()

    # ------------------------------------------------------------------ blocks

    def _start_block(self, data: dict) -> None:
        self.phase = "idle" if self.running else self.phase
        self.block = str(data.get("block", f"block{len({t.block for t in self.trials})}"))
        mode = str(data.get("mode", "closed_loop"))
        if mode not in MODES:
            self.log.warning("unknown mode %r in block_start; running closed loop", mode)
        self.mode = mode
        self._n_in_block = 0
        if self._reading is not None:
            self._next_trial(self.now_ns())

    def _end_block(self) -> None:
        self.block = None
        self.phase = "idle"
        self.trial = -1
        if self._reading is not None:
            self._publish_state()

    # ------------------------------------------------------------------ trials

    def draw_target(self, r: ExoReading) -> np.ndarray:
        """Next target posture (rad): uniform in the central part of the range, far enough."""
        lo, hi = self._active_rom(r)
        margin = (1.0 - self.params.rom_fraction) / 2.0 * (hi - lo)
        lo, hi = lo + margin, hi - margin
        prev = self.target if self.target is not None else r.active_position
        need = math.radians(self.params.min_distance_deg)
        best, best_d = None, -1.0
        for _ in range(50):
            cand = self.rng.uniform(lo, hi)
            d = float(np.linalg.norm(cand - prev))
            if d >= need:
                return cand
            if d > best_d:
                best, best_d = cand, d
        return best

    def _active_rom(self, r: ExoReading) -> tuple[np.ndarray, np.ndarray]:
        return r.rom_lower[r.active_index], r.rom_upper[r.active_index]

    def _palm_at(self, target: np.ndarray) -> np.ndarray:
        """World palm position at the target posture (the others as now), for display."""
        if self.params.scene is None or self._kin_failed or self._joint_q is None:
            return self._palm.copy()
        try:
            if self._kin is None:
                from bciarm.effectors.kinematics import ArmKinematics

                self._kin = ArmKinematics.from_scene(self.params.scene)
            q = self._joint_q.copy()
            q[self._reading.active_index] = target
            return self._kin.forward(q)[0]
        except Exception:  # noqa: BLE001 - display aid only
            self._kin_failed = True
            return self._palm.copy()

    def _reset_trial(self, now: int) -> None:
        self._onset_ns = now
        self._start = np.zeros(self.k)
        self._path = 0.0
        self._path_at_hold = math.nan
        self._acq = np.zeros(self.k)
        self._hold_start_ns: int | None = None
        self._assist = 0.0
        self._command = 0.0
        self._speeds: list[float] = []
        self._speeds_at_hold_end = 0
        self._violations = 0
        self._min = np.full(self.k, np.inf)
        self._max = np.full(self.k, -np.inf)

    def _next_trial(self, now: int) -> None:
        r = self._reading
        assert r is not None
        self.target = self.draw_target(r)
        self.trial = self._n_in_block
        self._n_in_block += 1
        self._reset_trial(now)
        self._start = r.active_position.copy()
        self._min = r.active_position.copy()
        self._max = r.active_position.copy()
        self.phase = "reach"
        self._target_palm = self._palm_at(self.target)
        self.emit("event", Event, kind="joint_target",
                  data={a: float(v) for a, v in zip(self.axes, self.target)})
        self._publish_state()
        self._update(now)

    def _inside(self) -> bool:
        return bool(np.max(np.abs(self._reading.active_position - self.target)) <= self._tol)

    def _update(self, now: int) -> None:
        if self._reading is None:
            return
        inside = self._inside()
        timed_out = now - self._onset_ns >= self._timeout_ns
        if self.phase == "reach":
            if inside:
                self.phase = "hold"
                self._hold_start_ns = now
                self._path_at_hold = self._path
                self._acq = self._reading.active_position.copy()
                self._publish_state()
                if self._hold_ns == 0:
                    self._finish("success", now)
            elif timed_out:
                self._finish("timeout", now)
        elif self.phase == "hold":
            if not inside:
                self.phase = "reach"
                self._hold_start_ns = None
                self._publish_state()
                if timed_out:
                    self._finish("timeout", now)
            elif now - self._hold_start_ns >= self._hold_ns:
                self._finish("success", now)

    def _finish(self, outcome: str, now: int) -> None:
        ok = outcome == "success"
        r = self._reading
        lo, hi = self._active_rom(r)
        fs = len(self._speeds) / max((now - self._onset_ns) / NS_PER_S, 1e-9)
        self.trials.append(ExoTrialRecord(
            block=self.block or "", mode=self.mode, index=self.trial, joints=self.axes,
            start_t_s=self._onset_ns / NS_PER_S, end_t_s=now / NS_PER_S,
            start_position=self._start.copy(), target=self.target.copy(),
            tolerance_rad=self._tol, outcome=outcome,
            time_to_target_s=(self._hold_start_ns - self._onset_ns) / NS_PER_S if ok else math.nan,
            path_rad=self._path_at_hold if ok else self._path,
            straight_rad=float(np.linalg.norm(self._acq - self._start)) if ok else math.nan,
            reached_min=self._min.copy(), reached_max=self._max.copy(),
            rom_lower=lo.copy(), rom_upper=hi.copy(),
            assist_integral=self._assist, command_integral=self._command,
            rom_violation_ticks=self._violations,
            sparc=sparc(self._speeds, fs) if ok else math.nan))
        self.phase = "done"
        self._publish_state(outcome)
        self._next_trial(now)

    # ------------------------------------------------------------------ output

    def _publish_state(self, outcome: str = "") -> None:
        target = self._target_palm if self.phase != "idle" else self._palm
        self.emit("task", TaskState, block=self.block or "", trial=self.trial, phase=self.phase,
                  mode=self.mode if self.block is not None else "",
                  target=np.array(target, dtype=float),
                  target_radius=self.params.display_radius_m, outcome=outcome)

    def on_stop(self) -> None:
        if self._kin is not None:
            self._kin.close()
            self._kin = None

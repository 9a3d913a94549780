"""Reach-and-grasp tasks: a trial is a sequence of hand goals (steps).

Base of ``pick_place`` (Box and Blocks), ``drink`` and ``gestures``.  A
subclass plans each trial as a list of :class:`Step` -- a goal pose (position,
wrist rotation from home, aperture), whether the hand should hold, an
acceptance radius, and what completes the step:

``reach``
    the hand is inside the goal (position within ``tol``, wrist within the
    orientation tolerance, aperture within ``aperture_tol`` when given) for
    ``hold_s``;
``grasp``
    the hand is closed on grasp and an object is between the fingers;
``release``
    the hand is open again and holds nothing;
``settle``
    the subclass's :meth:`ReachGraspTask.settled` says so (e.g. the
    released block has landed).

A step may ``follow`` a tracked object: its goal is then the object's
current position plus ``offset`` on every update (the participant aims at the
object where it is now, e.g. after a finger nudged it).
:meth:`ReachGraspTask.step_done` lets a subclass adjust later steps when one
completes.

The task sees the world only through ``state.<effector>``: the hand
(:data:`~bciarm.effectors.arm.ARM_EXTRA`) and the tracked objects after it
(``objects``, in the effector's ``track_objects`` order: x, y, z, tilt).
It publishes :class:`~bciarm.bus.messages.TaskState` with the goal in
``goal`` (:data:`~bciarm.bus.messages.GOAL_LAYOUT`) and, in open loop, the
autopilot's :class:`~bciarm.bus.messages.Intent` (the noise-free
:func:`~bciarm.sources.grasp_user.reach_grasp_velocity` plus grasp/release
clicks).

Scoring (:func:`compute_grasp_metrics`): ``success_rate``;
``blocks_per_min`` (successful trials per minute of trial time -- in Box and
Blocks, blocks moved over the partition per minute); ``grasp_success_rate``
(of the trials in which the hand closed on the object, the fraction whose
object was carried to its release point without a drop); ``drops`` (drop
events of the effector during trials).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, field_validator

from bciarm.bus.messages import (
    GRASP_CLOSE,
    GRASP_NONE,
    GRASP_RELEASE,
    EffectorState,
    Intent,
    TaskState,
)
from bciarm.bus.node import Node, NodeParams
from bciarm.sources import grasp_user as _gu
from bciarm.sources.grasp_user import HandView, Speeds, at_goal, reach_grasp_velocity
from bciarm.space import arm_axis_indices
from bciarm.tasks.inputs import TaskInputs

NS_PER_S = 1_000_000_000
STEP_KINDS = ("reach", "grasp", "release", "settle")
#: A grasp step completes once the object was held this long, s.
GRASP_CONFIRM_S = 0.1


@dataclass
class Step:
    """One goal of a trial (see the module docstring)."""

    name: str
    position: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    aperture: float = 0.075
    hold: bool = False
    tol: float = 0.02
    orientation_tol: float = 0.0
    aperture_tol: float | None = None
    hold_s: float = 0.0
    kind: str = "reach"
    #: Tracked object this goal moves with (``position`` = object + ``offset``), or "".
    follow: str = ""
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def track(self, objects: dict[str, tuple[np.ndarray, float]]) -> None:
        """Move a ``follow`` goal to where its object is now (a person aims at what they see)."""
        if self.follow and self.follow in objects:
            self.position = objects[self.follow][0] + self.offset

    def goal(self) -> np.ndarray:
        """The :data:`~bciarm.bus.messages.GOAL_LAYOUT` vector."""
        return np.r_[self.position, self.rotation, self.aperture, float(self.hold),
                     self.orientation_tol]


@dataclass(frozen=True)
class GraspTrial:
    """One finished reach-and-grasp trial.

    Attributes
    ----------
    block, mode : str
    index : int
    item : str
        Object (or gesture) of the trial.
    start_t_s, end_t_s : float
    outcome : str
        ``"success"``, ``"timeout"``, ``"drop"``, ``"slip"``, ``"spill"``, ``"missed"``, ...
    grasp_attempted : bool
        The hand closed on grasp during a grasp step.
    grasp_ok : bool
        ... and the object reached its release point without a drop.
    drops : int
        Drop events during the trial.
    steps_done : int
    max_tilt_deg : float
        Largest tilt of the held object (NaN if not tracked).
    max_zone_speed : float
        Largest end-effector speed inside the task's reduced-speed zone, m/s
        (NaN if the task has none or the hand never entered it).
    step_s : str
        Time spent in each step, s, in order (``"approach=1.20 descend=0.85 ..."``;
        the last entry is the unfinished step of a failed trial): where a
        trial's time goes.
    """

    block: str
    mode: str
    index: int
    item: str
    start_t_s: float
    end_t_s: float
    outcome: str
    grasp_attempted: bool
    grasp_ok: bool
    drops: int
    steps_done: int
    max_tilt_deg: float = math.nan
    max_zone_speed: float = math.nan
    step_s: str = ""

    @property
    def success(self) -> bool:
        return self.outcome == "success"

    @property
    def duration_s(self) -> float:
        return self.end_t_s - self.start_t_s


GRASP_METRIC_KEYS = ("trials", "success_rate", "blocks_per_min", "grasp_success_rate", "drops",
                     "mean_trial_s", "max_tilt_deg", "max_zone_speed")


def _summary(trials: Sequence[GraspTrial]) -> dict:
    n = len(trials)
    ok = sum(t.success for t in trials)
    total_s = sum(t.duration_s for t in trials)
    attempted = [t for t in trials if t.grasp_attempted]
    tilts = [t.max_tilt_deg for t in trials if math.isfinite(t.max_tilt_deg)]
    zone = [t.max_zone_speed for t in trials if math.isfinite(t.max_zone_speed)]
    return {
        "trials": n,
        "success_rate": ok / n if n else math.nan,
        "blocks_per_min": ok / (total_s / 60.0) if total_s > 0 else math.nan,
        "grasp_success_rate": (sum(t.grasp_ok for t in attempted) / len(attempted)
                               if attempted else math.nan),
        "drops": int(sum(t.drops for t in trials)),
        "mean_trial_s": float(np.mean([t.duration_s for t in trials if t.success]))
        if ok else math.nan,
        "max_tilt_deg": max(tilts) if tilts else math.nan,
        "max_zone_speed": max(zone) if zone else math.nan,
    }


def compute_grasp_metrics(trials: Iterable[GraspTrial]) -> dict:
    """Summary of reach-and-grasp trials (module docstring), plus ``per_block``."""
    trials = list(trials)
    out = _summary(trials)
    blocks: dict[str, list[GraspTrial]] = {}
    for t in trials:
        blocks.setdefault(t.block, []).append(t)
    out["per_block"] = {b: _summary(ts) for b, ts in blocks.items()}
    return out


@dataclass
class WorldView:
    """The hand and the tracked objects, from the last state message."""

    hand: HandView
    holding: bool
    hand_mode: int
    tilt: float
    drops: int
    velocity: np.ndarray
    objects: dict[str, tuple[np.ndarray, float]]
    t_ns: int = 0


class ReachGraspTask(TaskInputs, Node):
    """Base of the reach-and-grasp tasks (module docstring).  Subclasses implement :meth:`plan`."""

    class Params(NodeParams):
        """Parameters shared by the reach-and-grasp tasks."""

        tick_s: float | None = Field(0.05, gt=0, description="TaskState / autopilot period, s.")
        axes: list[str] = Field(["x", "y", "z", "roll", "pitch", "yaw", "grasp"],
                                description="Arm task axes (the autopilot drives these).")
        effector: str | None = Field(None, description="Follow only state.<effector>.")
        objects: list[str] = Field(default_factory=list,
                                   description="Tracked objects, in the effector's "
                                               "track_objects order.")
        timeout_s: float = Field(30.0, gt=0, description="Time allowed per trial, s.")
        orientation_tol: float = Field(0.25, gt=0, description="Wrist tolerance of reach "
                                                               "steps, rad.")
        autopilot_speed: float = Field(_gu.DEFAULT_SPEED, gt=0)
        autopilot_gain: float = Field(_gu.DEFAULT_GAIN, gt=0)
        autopilot_angular_speed: float = Field(_gu.DEFAULT_ANGULAR_SPEED, gt=0)
        autopilot_angular_gain: float = Field(_gu.DEFAULT_ANGULAR_GAIN, gt=0)
        autopilot_aperture_speed: float = Field(_gu.DEFAULT_APERTURE_SPEED, gt=0)
        autopilot_aperture_gain: float = Field(_gu.DEFAULT_APERTURE_GAIN, gt=0)
        calibration_poses: bool = Field(
            True, description="Open loop (calibration): every other trial reaches a random "
                              "hand pose (position, wrist, aperture) around the start, so the "
                              "decoder sees every axis move as much as the others; the rest "
                              "are task trials (the click decoder learns grasps from them).")
        calibration_reach_m: float = Field(0.08, gt=0, le=0.2,
                                           description="Half-size of the calibration pose box, m.")
        calibration_wrist_rad: float = Field(
            0.3, ge=0, le=1.0,
            description="Open loop only: pass-through goals turn the wrist by up to this much "
                        "about each wrist axis, so calibration sees wrist motion to fit the "
                        "wrist rows of the decoder (a constant wrist gives it nothing).")

        @field_validator("axes")
        @classmethod
        def _arm_axes(cls, v: list[str]) -> list[str]:
            arm_axis_indices(v)
            return v

    inputs = ("state.*", "event")
    outputs = ("task", "intent")

    metric_keys = GRASP_METRIC_KEYS
    #: What a trial is (the realtime runtime rebuilds them from the task process's reply).
    record_class = GraspTrial
    json_keys = ("trials", "success_rate", "blocks_per_min", "grasp_success_rate", "drops")
    table_columns = (("trials", "trials", "{}"), ("success_rate", "success", "{:.1%}"),
                     ("blocks_per_min", "per min", "{:.1f}"),
                     ("grasp_success_rate", "grasp ok", "{:.1%}"), ("drops", "drops", "{}"))
    compute_metrics = staticmethod(compute_grasp_metrics)

    @staticmethod
    def plot_session(session_dir, config, blocks):
        """``grasp.png`` in the session folder (:mod:`bciarm.tasks.grasp_plots`)."""
        from bciarm.tasks.grasp_plots import plot_grasp_session

        return plot_grasp_session(session_dir, config, blocks)

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        p = self.params
        self._idx = arm_axis_indices(p.axes)
        self._speeds = Speeds(p.autopilot_speed, p.autopilot_gain, p.autopilot_angular_speed,
                              p.autopilot_angular_gain, p.autopilot_aperture_speed,
                              p.autopilot_aperture_gain)
        self.trials: list[GraspTrial] = []
        self.world: WorldView | None = None
        self.phase = "idle"
        self.block: str | None = None
        self.mode = ""
        self.trial = -1
        self.steps: list[Step] = []
        self.step_i = 0
        self.item = ""
        self._n_in_block = 0
        self._onset_ns = 0
        self._dwell_ns: int | None = None
        self._grasp_ns: int | None = None
        self._drops0 = 0
        self._attempted = False
        self._carried = False
        self._release_seen = False
        self._max_tilt = math.nan
        self._max_zone = math.nan
        self._layout_warned = False
        self._home: np.ndarray | None = None
        self._step_ns = 0
        self._step_times: list[str] = []

    # ------------------------------------------------------------------ subclass API

    def plan(self) -> tuple[str, list[Step]] | None:
        """The next trial: ``(item, steps)``, or None when there is nothing to do."""
        raise NotImplementedError

    def wrist_goal(self) -> np.ndarray:
        """Wrist goal of a pass-through step: random in open loop (calibration), else home."""
        goal = np.zeros(3)
        amp = self.params.calibration_wrist_rad
        if self.mode == "open_loop" and amp > 0:
            axes = [i for i, a in enumerate(("roll", "pitch", "yaw")) if a in self.params.axes]
            goal[axes] = self.rng.uniform(-amp, amp, size=len(axes))
            tilt = float(np.linalg.norm(goal[:2]))
            if tilt > amp:  # keep the tilt (roll/pitch) within amp too: reachable by the wrist
                goal[:2] *= amp / tilt
        return goal

    def step_done(self, step: Step) -> None:
        """Called when ``step`` is complete, before the next one starts (default: nothing)."""

    def settled(self) -> bool:
        """For ``settle`` steps: has the world come to rest as the step wants?"""
        return True

    def watch(self) -> str | None:
        """Called on every update of a running trial; a returned outcome ends it (failure)."""
        return None

    def judge(self) -> str:
        """Outcome once every step is done (default ``"success"``)."""
        return "success"

    # ------------------------------------------------------------------ queries

    def completed_trials(self, block: str | None = None) -> int:
        block = self.block if block is None else block
        return sum(1 for t in self.trials if t.block == block) if block is not None else 0

    @property
    def running(self) -> bool:
        return self.phase in ("reach", "hold")

    @property
    def step(self) -> Step:
        return self.steps[self.step_i]

    # ------------------------------------------------------------------ inputs

    def _on_state(self, msg: EffectorState) -> None:
        from bciarm.effectors.arm import ARM_EXTRA
        from bciarm.effectors.arm import EXTRA_INDEX as E

        extra = np.asarray(msg.extra)
        need = len(ARM_EXTRA) + 4 * len(self.params.objects)
        if extra.size != need:
            if not self._layout_warned:
                self.log.error("state.%s carries %d extra values, expected %d (hand + %d "
                               "tracked objects): set the arm's gripper and track_objects",
                               topic_src(msg), extra.size, need, len(self.params.objects))
                self._layout_warned = True
            return
        objs = {}
        for i, name in enumerate(self.params.objects):
            o = extra[len(ARM_EXTRA) + 4 * i: len(ARM_EXTRA) + 4 * (i + 1)]
            objs[name] = (o[:3].copy(), float(o[3]))
        self.world = WorldView(
            hand=HandView(np.asarray(msg.position, float), extra[E["rx"]:E["rz"] + 1].copy(),
                          float(extra[E["aperture"]])),
            holding=bool(extra[E["holding"]] > 0.5), hand_mode=int(round(extra[E["hand_mode"]])),
            tilt=float(extra[E["tilt"]]), drops=int(round(extra[E["drops"]])),
            velocity=np.asarray(msg.velocity, float), objects=objs, t_ns=msg.header.t_ns)
        now = self.now_ns()
        if self.block is not None and not self.running:
            self._next_trial(now)
        elif self.running:
            self._update(now)

    def on_tick(self, now_ns: int) -> None:
        if self.running:
            self._update(now_ns)
        if self.running:
            self._publish()
            if self.mode == "open_loop" and self.world is not None:
                self._autopilot()

    # ------------------------------------------------------------------ blocks and trials

    def _start_block(self, data: dict) -> None:
        self.phase = "idle"
        self.block = str(data.get("block", "block"))
        self.mode = str(data.get("mode", "closed_loop"))
        self._n_in_block = 0
        if self.world is not None:
            self._next_trial(self.now_ns())

    def _end_block(self) -> None:
        self.block = None
        self.phase = "idle"
        self.trial = -1

    def _plan_pose(self) -> tuple[str, list[Step]]:
        """A calibration trial: reach a random hand pose around the start and hold it."""
        p = self.params
        r = p.calibration_reach_m
        pos = self._home + self.rng.uniform([-r, -r, -0.75 * r], [r, r, 0.75 * r])
        amp = p.calibration_wrist_rad
        return "pose", [Step("pose", pos, rotation=self.wrist_goal(),
                             aperture=float(self.rng.uniform(0.02, 0.08)), tol=0.02,
                             orientation_tol=max(0.1, amp / 3), aperture_tol=0.01, hold_s=0.2)]

    def _next_trial(self, now: int) -> None:
        if self.world is not None and self._home is None:
            self._home = self.world.hand.position.copy()
        if (self.mode == "open_loop" and self.params.calibration_poses
                and self._n_in_block % 2 == 0):
            planned: tuple[str, list[Step]] | None = self._plan_pose()
        else:
            planned = self.plan()
        if planned is None:
            # Nothing to do: say so (the user stops aiming) and wait; the block
            # ends on its time cap.
            self.phase = "idle"
            self._publish()
            return
        self.item, self.steps = planned
        self.step_i = 0
        self.trial = self._n_in_block
        self._n_in_block += 1
        self._onset_ns = now
        self._step_ns = now
        self._step_times = []
        self._dwell_ns = None
        self._grasp_ns = None
        self._drops0 = self.world.drops if self.world is not None else 0
        self._attempted = False
        self._carried = False
        self._release_seen = False
        self._max_tilt = math.nan
        self._max_zone = math.nan
        self.phase = "reach"
        self._publish()

    def _update(self, now: int) -> None:
        w = self.world
        if w is None:
            return
        if w.drops > self._drops0:
            return self._finish("drop", now)
        bad = self.watch()
        if bad is not None:
            return self._finish(bad, now)
        if now - self._onset_ns >= round(self.params.timeout_s * NS_PER_S):
            return self._finish("timeout", now)
        st = self.step
        st.track(w.objects)
        from bciarm.effectors.grasp import CLOSED

        done = False
        if st.kind == "reach":
            inside = at_goal(w.hand, st.goal(), st.tol) and (
                st.aperture_tol is None or abs(w.hand.aperture - st.aperture) <= st.aperture_tol)
            if inside:
                if self._dwell_ns is None:
                    self._dwell_ns = now
                    self.phase = "hold"
                done = now - self._dwell_ns >= round(st.hold_s * NS_PER_S)
            elif self._dwell_ns is not None:
                self._dwell_ns = None
                self.phase = "reach"
        elif st.kind == "grasp":
            if w.hand_mode == CLOSED:
                self._attempted = True
            if w.hand_mode == CLOSED and w.holding:
                self._grasp_ns = now if self._grasp_ns is None else self._grasp_ns
                done = now - self._grasp_ns >= round(GRASP_CONFIRM_S * NS_PER_S)
            else:
                self._grasp_ns = None
        elif st.kind == "release":
            if st.hold is False and self._attempted and not self._release_seen:
                # Reached the release point still holding (a block that slipped out
                # on the way, too early to count as a drop, is no good grasp).
                self._carried = w.holding
            self._release_seen = True
            done = w.hand_mode != CLOSED and not w.holding
        elif st.kind == "settle":
            done = self.settled()
        if done:
            self.step_done(st)
            self._time_step(now)
            self.step_i += 1
            self._dwell_ns = None
            self.phase = "reach"
            if self.step_i >= len(self.steps):
                return self._finish("success" if self.item == "pose" else self.judge(), now)
            self._publish()

    def _time_step(self, now: int) -> None:
        self._step_times.append(f"{self.step.name}={(now - self._step_ns) / NS_PER_S:.2f}")
        self._step_ns = now

    def _finish(self, outcome: str, now: int) -> None:
        w = self.world
        if self.step_i < len(self.steps):
            self._time_step(now)  # the step the trial ended in
        self.trials.append(GraspTrial(
            block=self.block or "", mode=self.mode, index=self.trial, item=self.item,
            start_t_s=self._onset_ns / NS_PER_S, end_t_s=now / NS_PER_S, outcome=outcome,
            grasp_attempted=self._attempted, grasp_ok=self._attempted and self._carried
            and outcome != "drop",
            drops=(w.drops - self._drops0) if w is not None else 0, steps_done=self.step_i,
            max_tilt_deg=self._max_tilt, max_zone_speed=self._max_zone,
            step_s=" ".join(self._step_times)))
        self.phase = "done"
        self._publish(outcome)
        self.phase = "idle"
        if self.block is not None:
            self._next_trial(now)

    # ------------------------------------------------------------------ output

    def _autopilot(self) -> None:
        from bciarm.effectors.grasp import CLOSED

        w = self.world
        st = self.step
        goal = st.goal()
        v = reach_grasp_velocity(w.hand, goal, self._speeds)[self._idx]
        click = GRASP_NONE
        if st.hold and st.kind == "grasp" and at_goal(w.hand, goal, st.tol):
            click = GRASP_CLOSE
        elif not st.hold and w.hand_mode == CLOSED:
            click = GRASP_RELEASE
        self.emit("intent", Intent, velocity=np.ascontiguousarray(v, dtype=np.float64),
                  space="cartesian", grasp=click)

    def _publish(self, outcome: str = "") -> None:
        if not self.steps:
            return
        st = self.step if self.step_i < len(self.steps) else self.steps[-1]
        self.emit("task", TaskState, block=self.block or "", trial=self.trial, phase=self.phase,
                  mode=self.mode if self.block is not None else "",
                  target=np.array(st.position, dtype=float), target_radius=float(st.tol),
                  outcome=outcome, goal=np.ascontiguousarray(st.goal(), dtype=np.float64))


def topic_src(msg: EffectorState) -> str:
    return msg.header.src

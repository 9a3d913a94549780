"""Wheelchair navigation task (registry name ``"navigation"``): sequences of goals in a floor plan.

Goals
    Named places of the scene (``places`` in the scene YAML: rooms and
    corridor waypoints).  Each goal is one trial; goals come in shuffled
    bags of all places (never the place the chair is already at), drawn
    from the node's seeded generator.  A goal is reached when the chair's
    centre is within ``goal_radius_m``; it fails after ``timeout_s``.

Route
    The user is assumed to know the apartment: at goal onset the task plans
    a comfortable route (:meth:`~bciarm.tasks.planner.FloorPlan.route`,
    keeping to the middle of corridors and doorways) and publishes as the
    ``TaskState.target`` the point ``lookahead_m`` ahead along it
    (``narrow_lookahead_m`` in narrow places such as doorways, so the chair
    passes them straight) — the place the user is heading for right now (the simulated user steers at
    it, :mod:`bciarm.sources.drive_user`).  ``target_radius`` is the goal
    radius.

Modes
    ``open_loop`` (calibration): the task is the autopilot and publishes a
    noise-free drive intent (space ``"drive"``) toward that target every
    tick (the simulated user's policy, including pushing on when wedged).  ``closed_loop``: the decoder drives.

Metrics
    :mod:`bciarm.tasks.nav_metrics` (goals, success rate, time, path length
    against the shortest path, collisions, near misses, jerk, stops).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from bciarm.bus.messages import EffectorState, Event, Intent, TaskState
from bciarm.bus.node import Node, NodeParams
from bciarm.sources.drive_user import Unsticker, drive_intent
from bciarm.tasks.inputs import TaskInputs
from bciarm.tasks.nav_metrics import NAV_METRIC_KEYS, GoalRecord, compute_nav_metrics
from bciarm.tasks.planner import FloorPlan, lookahead_point, path_length
from bciarm.tasks.state import RestorableTrials

NS_PER_S = 1_000_000_000
JERK_DT = 0.05  # resampling period of the forward speed for the jerk metric, s


class NavigationTask(TaskInputs, RestorableTrials, Node):
    """Goal-to-goal navigation with autopilot for open-loop calibration."""

    class Params(NodeParams):
        """Parameters of the navigation task."""

        tick_s: float | None = Field(0.05, gt=0, description="TaskState / autopilot period, s.")
        scene: str = Field("apartment", description="Mobile scene with places (goals).")
        goals: list[str] | None = Field(None, description="Place names to visit; None: all.")
        effector: str | None = Field(None, description="Follow only state.<effector>.")
        goal_radius_m: float = Field(0.35, gt=0, description="Arrival radius, m.")
        timeout_s: float = Field(90.0, gt=0, description="Time allowed per goal, s.")
        lookahead_m: float = Field(0.8, gt=0, description="Target point ahead on the route, m.")
        narrow_lookahead_m: float = Field(
            0.4, gt=0, description="Lookahead where the chair is in a narrow place (doorway): "
                                   "a person keeps straight through a doorway, m.")
        narrow_m: float = Field(0.6, gt=0, description="A place is narrow when walls or furniture "
                                                        "are closer than this to the chair, m.")
        near_miss_m: float = Field(0.1, gt=0, description="Near-miss clearance, m.")
        autopilot_preferred: float = Field(0.8, gt=0, le=1,
                                           description="Autopilot fraction of top speed.")
        plan_inflate_m: float = Field(0.33, gt=0, description="Planner clearance radius, m.")

    inputs = ("state.*", "event")
    outputs = ("task", "intent")

    #: Summary keys (what ``bciarm run`` prints) and ``--json`` keys.
    metric_keys = NAV_METRIC_KEYS
    record_class = GoalRecord
    json_keys = ("goals", "goal_success_rate", "collisions", "near_misses", "path_length_ratio",
                 "mean_abs_jerk")

    #: Metrics table columns: (key, header, format; None shows as a dash).
    table_columns = (("goals", "goals", "{}"), ("goal_success_rate", "success", "{:.1%}"),
                     ("mean_time_s", "time", "{:.1f} s"),
                     ("path_length_ratio", "path ratio", "{:.2f}"),
                     ("collisions", "collisions", "{}"), ("near_misses", "near misses", "{}"),
                     ("mean_abs_jerk", "|jerk|", "{:.2f}"), ("stops", "stops", "{}"))

    @staticmethod
    def compute_metrics(trials: list[GoalRecord]) -> dict:
        return compute_nav_metrics(trials)

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        from bciarm.sim.scene import load_scene

        p = self.params
        self.spec = load_scene(p.scene)
        places = self.spec.places
        names = list(places) if p.goals is None else list(p.goals)
        unknown = [g for g in names if g not in places]
        if unknown or len(names) < 2:
            raise ValueError(f"goals {unknown or names} : need at least two places among "
                             f"{sorted(places)}")
        self.places = {g: places[g] for g in names}
        self.plan = FloorPlan(self.spec, inflate_m=p.plan_inflate_m)
        self.trials: list[GoalRecord] = []
        self.block: str | None = None
        self.mode = ""
        self.phase = "idle"
        self.goal: str | None = None
        self.trial = -1
        self._n = 0
        self._bag: list[str] = []
        self._pose: np.ndarray | None = None
        self._route: np.ndarray | None = None
        self._route_k = 0
        self.target: np.ndarray | None = None
        self._unsticker = Unsticker()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._onset_ns = 0
        self._start = np.zeros(2)
        self._path = 0.0
        self._shortest = 0.0
        self._collisions = 0
        self._near = 0
        self._near_armed = True
        self._stops = 0
        self._moving = False
        self._jerk_sum = 0.0
        self._jerk_n = 0
        self._bin: list[float] = []
        self._speeds: list[float] = []
        self._bin_t0: int | None = None
        self._min_clear = math.inf

    # ------------------------------------------------------------------ queries

    def completed_trials(self, block: str | None = None) -> int:
        block = self.block if block is None else block
        return sum(1 for t in self.trials if t.block == block) if block is not None else 0

    @property
    def running(self) -> bool:
        return self.phase == "reach"

    # ------------------------------------------------------------------ inputs

    def _on_event(self, msg: Event) -> None:
        if msg.kind == "collision" and self.running:
            self._collisions += 1

    def _on_state(self, msg: EffectorState) -> None:
        if msg.extra.size < 6:
            return  # not a wheelchair state
        pose = np.array([msg.position[0], msg.position[1], msg.extra[0]])
        now = self.now_ns()
        if self.running and self._pose is not None:
            self._path += float(np.linalg.norm(pose[:2] - self._pose[:2]))
            self._track(now, float(msg.extra[1]), float(msg.extra[5]))
        self._pose = pose
        if self.block is not None and not self.running:
            self._next_goal(now)
        elif self.running:
            self._update(now)

    def _track(self, now: int, speed: float, clearance: float) -> None:
        nm = self.params.near_miss_m
        self._min_clear = min(self._min_clear, clearance)
        if clearance > 0 and clearance < nm and self._near_armed:
            self._near += 1
            self._near_armed = False
        elif clearance > 1.5 * nm:
            self._near_armed = True
        if abs(speed) > 0.1:
            self._moving = True
        elif abs(speed) < 0.02 and self._moving:
            self._moving = False
            self._stops += 1
        # Jerk: forward speed averaged over JERK_DT bins, second difference.
        if self._bin_t0 is None:
            self._bin_t0 = now
        self._bin.append(speed)
        if now - self._bin_t0 >= round(JERK_DT * NS_PER_S) - 1000:
            self._speeds.append(float(np.mean(self._bin)))
            self._bin, self._bin_t0 = [], now
            if len(self._speeds) >= 3:
                v0, v1, v2 = self._speeds[-3:]
                self._jerk_sum += abs(v2 - 2 * v1 + v0) / JERK_DT ** 2
                self._jerk_n += 1

    def on_tick(self, now_ns: int) -> None:
        if self.running:
            self._update(now_ns)
        if self.running and self._pose is not None:
            self._aim()
            self._publish()
            if self.mode == "open_loop":
                u = drive_intent(self._pose, self.target, self.params.autopilot_preferred)
                u = self._unsticker.adjust(now_ns / NS_PER_S, self._pose, u)
                self.emit("intent", Intent, velocity=u, space="drive")
        elif self._pose is not None:
            self._publish()

    # ------------------------------------------------------------------ blocks and goals

    def _start_block(self, data: dict) -> None:
        self.phase = "idle"
        self.block = str(data.get("block", "block"))
        self.mode = str(data.get("mode", "closed_loop"))
        self._n = self.next_index(self.block)
        if self._pose is not None:
            self._next_goal(self.now_ns())

    def _end_block(self) -> None:
        self.phase = "idle"
        self.block = None
        self.trial = -1

    def _draw(self) -> str:
        """Next goal: from a shuffled bag, never where the chair is nor the last goal."""
        here = None
        if self._pose is not None:
            for g, xy in self.places.items():
                if np.linalg.norm(xy - self._pose[:2]) <= self.params.goal_radius_m:
                    here = g
        for _ in range(2):
            for i, g in enumerate(self._bag):
                if g != here and g != self.goal:
                    return self._bag.pop(i)
            self._bag += [str(g) for g in self.rng.permutation(list(self.places))]
        raise AssertionError("unreachable: at least two places")

    def _next_goal(self, now: int) -> None:
        assert self._pose is not None
        self.goal = self._draw()
        xy = self.places[self.goal]
        self._reset_counters()
        self._onset_ns = now
        self._start = self._pose[:2].copy()
        self._route = self.plan.route(self._start, xy)
        self._route_k = 0
        self._shortest = path_length(self.plan.shortest(self._start, xy))
        self.trial = self._n
        self._n += 1
        self.phase = "reach"
        self._aim()
        self._publish()

    def _aim(self) -> None:
        assert self._pose is not None and self._route is not None
        p = self.params
        i, j = self.plan.cell(self._pose[:2])
        ahead = p.narrow_lookahead_m if self.plan.distance[i, j] < p.narrow_m else p.lookahead_m
        pt, self._route_k = lookahead_point(self._route, self._pose[:2], self._route_k, ahead)
        self.target = pt

    def _update(self, now: int) -> None:
        if self._pose is None or self.goal is None:
            return
        d = float(np.linalg.norm(self._pose[:2] - self.places[self.goal]))
        if d <= self.params.goal_radius_m:
            self._finish("success", now)
        elif now - self._onset_ns >= round(self.params.timeout_s * NS_PER_S):
            self._finish("timeout", now)

    def _finish(self, outcome: str, now: int) -> None:
        assert self.goal is not None and self._pose is not None
        self.trials.append(GoalRecord(
            block=self.block or "", mode=self.mode, index=self.trial, goal=self.goal,
            target=self.places[self.goal].copy(), start_t_s=self._onset_ns / NS_PER_S,
            end_t_s=now / NS_PER_S, start_position=self._start.copy(), outcome=outcome,
            path_length_m=self._path, shortest_m=self._shortest, collisions=self._collisions,
            near_misses=self._near, stops=self._stops, jerk_sum=self._jerk_sum,
            jerk_n=self._jerk_n, min_clearance_m=self._min_clear))
        self.phase = "done"
        self._publish(outcome)
        self._next_goal(now)

    # ------------------------------------------------------------------ output

    def _publish(self, outcome: str = "") -> None:
        if self._pose is None:
            return
        t = self.target if self.target is not None and self.phase != "idle" else self._pose[:2]
        self.emit("task", TaskState, block=self.block or "", trial=self.trial, phase=self.phase,
                  mode=self.mode if self.block is not None else "",
                  target=np.array([t[0], t[1], 0.0]), target_radius=self.params.goal_radius_m,
                  outcome=outcome)

"""Center-out-and-back reaching task (registry name ``"center_out"``).

Targets
    Outer targets sit at ``radius_m`` from a centre in the task space:
    ``n_targets`` (default 8) equally spaced on a circle for two task axes,
    the two points ±radius for one axis, and for three axes the 8 vertices of
    a cube inscribed in the sphere of radius ``radius_m`` (other counts: a
    Fibonacci lattice on that sphere).  Off-plane coordinates are the
    centre's.  The centre is ``centre`` if given, else the effector's position
    at the first state message, so it matches wherever the arm starts.

Trials
    Each target is one trial.  Trials alternate centre → outer → centre → …;
    outer targets come in shuffled blocks of ``n_targets`` drawn from the
    node's seeded generator (the bag is refilled at every block start), so
    every direction appears equally often.  After a failure the next target
    is the centre.  A block starts with the centre target unless the effector
    is already inside it, in which case it starts with an outer target (a
    trial with nothing to do would count as a free success).

Phases (``TaskState.phase``)
    ``idle``: no block running; no trials, no intents.
    ``reach``: target shown, timer running.
    ``hold``: the effector is inside the target (within ``target_radius_m``
    in the task axes); it must stay ``hold_s``.  Leaving returns to
    ``reach`` (the dial-in).
    ``done``: published once at the end of a trial, with ``outcome``
    ``"success"`` or ``"timeout"``; the next trial's ``reach`` follows at
    the same instant.
    A trial fails if no hold has been *started* ``timeout_s`` after target
    onset; a hold in progress at that moment may still complete, but if it
    breaks the trial fails at once.

Modes
    ``open_loop`` (calibration): the task is the autopilot and publishes an
    :class:`~bciarm.bus.messages.Intent` every tick, aiming straight at the
    target with the simulated user's speed profile
    (:func:`bciarm.sources.user.aim_velocity`, no noise, no delay).
    ``closed_loop``: the decoder drives; the task publishes no intents.
    Blocks are started and ended by ``Event`` messages on ``"event"``:
    ``block_start`` with ``data={"block": name, "mode": mode}`` and
    ``block_end``.  Ending a block discards an unfinished trial (it is not a
    failure).

Timing
    Phases are updated on every state message (10 ms from the effector) and
    every tick, so times are resolved to the effector's period.  ``TaskState``
    is published on every phase or target change and on every tick.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, field_validator, model_validator

from bciarm.bus.messages import EffectorState, Intent, TaskState
from bciarm.bus.node import Node, NodeParams
from bciarm.sources import user as _user
from bciarm.sources.user import aim_velocity
from bciarm.space import axis_indices
from bciarm.tasks.inputs import TaskInputs
from bciarm.tasks.metrics import METRIC_KEYS, TrialRecord, compute_metrics
from bciarm.tasks.state import RestorableTrials

NS_PER_S = 1_000_000_000
PHASES = ("idle", "reach", "hold", "done")
MODES = ("open_loop", "closed_loop")
CENTRE = -1  # target_id of the centre target


def outer_targets(centre: np.ndarray, axes: list[str], radius: float, n: int = 8,
                  first_angle_deg: float = 0.0) -> np.ndarray:
    """World positions (shape (M, 3)) of the outer targets around ``centre``.

    One axis: ±radius (M = 2).  Two axes: ``n`` points on a circle, the first
    at ``first_angle_deg`` from the first axis toward the second.  Three
    axes: the cube's 8 vertices ``(±1, ±1, ±1) * radius / sqrt(3)`` when
    ``n == 8``, else a Fibonacci lattice of ``n`` points on the sphere.
    """
    idx = axis_indices(axes)
    k = len(idx)
    if k == 1:
        offsets = np.array([[radius], [-radius]])
    elif k == 2:
        a = math.radians(first_angle_deg) + 2 * np.pi * np.arange(n) / n
        offsets = radius * np.c_[np.cos(a), np.sin(a)]
    elif n == 8:
        corners = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)])
        offsets = corners * radius / math.sqrt(3.0)
    else:
        i = np.arange(n) + 0.5
        z = 1 - 2 * i / n
        phi = np.pi * (1 + math.sqrt(5.0)) * i
        rho = np.sqrt(1 - z * z)
        offsets = radius * np.c_[rho * np.cos(phi), rho * np.sin(phi), z]
    out = np.repeat(np.asarray(centre, dtype=float).reshape(1, 3), len(offsets), axis=0)
    out[:, idx] += offsets
    return out


class CenterOutTask(TaskInputs, RestorableTrials, Node):
    """Center-out-and-back task with autopilot for open-loop calibration.

    See the module docstring for the protocol.

    Attributes
    ----------
    trials : list of TrialRecord
        Every finished trial, in order.
    centre : ndarray (3,) or None
        Centre target (world), known after the first state message.
    targets : ndarray (M, 3) or None
        Outer targets (world).
    phase, block, mode, trial, target
        Current state (``block`` is None while idle).
    """

    class Params(NodeParams):
        """Parameters of the center-out task."""

        tick_s: float | None = Field(
            0.05, gt=0, description="Publishing period of TaskState and open-loop intents, s "
                                    "(matches the neural bins; must stay below the effector's "
                                    "0.1 s watchdog).")
        axes: list[str] = Field(["x", "y"], description="Task axes among x, y, z.")
        effector: str | None = Field(
            None, description="Follow only state.<effector>; None follows any state.* topic.")
        centre: list[float] | None = Field(
            None, description="Centre target (world x, y, z, m); None: the effector's first "
                              "reported position.")
        radius_m: float = Field(0.12, gt=0, description="Distance of outer targets from the "
                                                        "centre, m.")
        n_targets: int = Field(8, ge=1, le=64, description="Number of outer targets (ignored "
                                                           "for one axis: always 2).")
        first_angle_deg: float = Field(0.0, description="Angle of outer target 0 in 2-D, deg.")
        target_radius_m: float = Field(0.025, gt=0, description="Acceptance radius, m.")
        hold_s: float = Field(0.5, ge=0, description="Time to stay inside a target, s.")
        timeout_s: float = Field(10.0, gt=0, description="Time allowed to start a hold, s.")
        autopilot_speed: float = Field(
            _user.DEFAULT_PREFERRED_SPEED, ge=0,
            description="Open-loop autopilot saturation speed, m/s.")
        autopilot_gain: float = Field(
            _user.DEFAULT_GAIN, gt=0, description="Open-loop autopilot speed per metre, 1/s.")

        @field_validator("axes")
        @classmethod
        def _check_axes(cls, v: list[str]) -> list[str]:
            axis_indices(v)
            return v

        @model_validator(mode="after")
        def _targets_apart(self) -> "CenterOutTask.Params":
            # Overlapping centre and outer targets would make trials trivial.
            if self.radius_m <= 2 * self.target_radius_m:
                raise ValueError(f"radius_m ({self.radius_m}) must exceed twice target_radius_m "
                                 f"({self.target_radius_m}) so targets do not overlap")
            return self

        @field_validator("centre")
        @classmethod
        def _check_centre(cls, v: list[float] | None) -> list[float] | None:
            if v is not None and (len(v) != 3 or not all(math.isfinite(x) for x in v)):
                raise ValueError("centre must be three finite numbers (world x, y, z)")
            return v

    inputs = ("state.*", "event")
    outputs = ("task", "intent")

    #: Summary keys (what ``bciarm run`` prints) and ``--json`` keys.
    metric_keys = METRIC_KEYS
    record_class = TrialRecord
    json_keys = ("trials", "success_rate", "mean_time_to_target_s", "path_efficiency",
                 "bitrate_bps", "realtime_factor")
    #: Metrics table columns: (key, header, format; None shows as a dash).
    table_columns = (("trials", "trials", "{}"), ("success_rate", "success", "{:.1%}"),
                     ("mean_time_to_target_s", "time to target", "{:.2f} s"),
                     ("path_efficiency", "path eff.", "{:.2f}"),
                     ("bitrate_bps", "bit/s", "{:.2f}"))
    compute_metrics = staticmethod(compute_metrics)

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        p = self.params
        self._idx = axis_indices(p.axes)
        self._hold_ns = round(p.hold_s * NS_PER_S)
        self._timeout_ns = round(p.timeout_s * NS_PER_S)
        self.trials: list[TrialRecord] = []
        self.centre: np.ndarray | None = None
        self.targets: np.ndarray | None = None
        if p.centre is not None:
            self._set_centre(np.asarray(p.centre, dtype=float))
        self.phase = "idle"
        self.block: str | None = None
        self.mode = ""
        self.trial = -1
        self.target_id = CENTRE
        self.target: np.ndarray | None = None
        self._position: np.ndarray | None = None
        self._n_in_block = 0
        self._bag: list[int] = []
        self._want_centre: bool | None = None  # None: decide at trial start
        # Per-trial bookkeeping.
        self._onset_ns = 0
        self._start_pos = np.zeros(3)
        self._path = 0.0
        self._hold_start_ns: int | None = None
        self._path_at_hold = math.nan
        self._acq_pos = np.zeros(3)
        self._holds_broken = 0

    # ------------------------------------------------------------------ queries

    def trials_in(self, block: str) -> list[TrialRecord]:
        """Finished trials of ``block``."""
        return [t for t in self.trials if t.block == block]

    def completed_trials(self, block: str | None = None) -> int:
        """Number of finished trials in ``block`` (default: the current block).

        The session runner stops a block with, e.g.,
        ``runtime.run_for(600, until=lambda: task.completed_trials("cal") >= 40)``.
        """
        block = self.block if block is None else block
        return sum(1 for t in self.trials if t.block == block) if block is not None else 0

    @property
    def running(self) -> bool:
        """A trial is in progress."""
        return self.phase in ("reach", "hold")

    # ------------------------------------------------------------------ inputs

    def _on_state(self, msg: EffectorState) -> None:
        pos = np.array(msg.position, dtype=float)
        if self.centre is None:
            self._set_centre(pos)
        if self.running and self._position is not None:
            self._path += float(np.linalg.norm((pos - self._position)[self._idx]))
        self._position = pos
        now = self.now_ns()
        if self.block is not None and not self.running:
            self._next_trial(now)  # the block was waiting for a position
        elif self.running:
            self._update(now)

    def on_tick(self, now_ns: int) -> None:
        if self.running:
            self._update(now_ns)
        if self.running:
            self._publish_state()
            if self.mode == "open_loop" and self._position is not None:
                v = aim_velocity(self._position[self._idx], self.target[self._idx],
                                 self.params.autopilot_speed, self.params.autopilot_gain)
                self.emit("intent", Intent, velocity=v, space="cartesian")
        elif self.centre is not None:
            self._publish_state()

    # ------------------------------------------------------------------ blocks

    def _set_centre(self, centre: np.ndarray) -> None:
        p = self.params
        self.centre = centre.copy()
        self.targets = outer_targets(self.centre, p.axes, p.radius_m, p.n_targets,
                                     p.first_angle_deg)

    def _start_block(self, data: dict) -> None:
        self._discard_trial()
        self.block = str(data.get("block", f"block{len({t.block for t in self.trials})}"))
        mode = str(data.get("mode", "closed_loop"))
        if mode not in MODES:
            self.log.warning("unknown mode %r in block_start; running closed loop", mode)
        self.mode = mode
        self._n_in_block = self.next_index(self.block)
        self._bag = []
        self._want_centre = None
        if self._position is not None:
            self._next_trial(self.now_ns())
        # else: the first state message starts the first trial.

    def _end_block(self) -> None:
        self._discard_trial()
        self.block = None
        self.phase = "idle"
        self.trial = -1
        if self.centre is not None:
            self._publish_state()

    def _discard_trial(self) -> None:
        # An unfinished trial is not a failure: it leaves no record.
        self._hold_start_ns = None
        if self.running:
            self.phase = "idle"

    # ------------------------------------------------------------------ trials

    def _inside(self, target: np.ndarray) -> bool:
        assert self._position is not None
        d = np.linalg.norm((self._position - target)[self._idx])
        return bool(d <= self.params.target_radius_m)

    def _draw_outer(self) -> int:
        if not self._bag:
            self._bag = [int(i) for i in self.rng.permutation(len(self.targets))]
        return self._bag.pop(0)

    def _next_trial(self, now: int) -> None:
        assert self._position is not None and self.centre is not None
        want_centre = self._want_centre
        if want_centre is None:
            want_centre = not self._inside(self.centre)
        self.target_id = CENTRE if want_centre else self._draw_outer()
        self.target = self.centre if want_centre else self.targets[self.target_id]
        self.trial = self._n_in_block
        self._n_in_block += 1
        self._onset_ns = now
        self._start_pos = self._position.copy()
        self._path = 0.0
        self._hold_start_ns = None
        self._path_at_hold = math.nan
        self._holds_broken = 0
        self.phase = "reach"
        self._publish_state()
        self._update(now)

    def _update(self, now: int) -> None:
        if self._position is None:
            return
        inside = self._inside(self.target)
        timed_out = now - self._onset_ns >= self._timeout_ns
        if self.phase == "reach":
            if inside:
                self.phase = "hold"
                self._hold_start_ns = now
                self._path_at_hold = self._path
                self._acq_pos = self._position.copy()
                self._publish_state()
                if self._hold_ns == 0:
                    self._finish("success", now)
            elif timed_out:
                self._finish("timeout", now)
        elif self.phase == "hold":
            if not inside:
                self.phase = "reach"
                self._hold_start_ns = None
                self._holds_broken += 1
                self._publish_state()
                if timed_out:
                    self._finish("timeout", now)
            elif now - self._hold_start_ns >= self._hold_ns:
                self._finish("success", now)

    def _finish(self, outcome: str, now: int) -> None:
        ok = outcome == "success"
        idx = self._idx
        self.trials.append(TrialRecord(
            block=self.block, mode=self.mode, index=self.trial, target_id=self.target_id,
            start_t_s=self._onset_ns / NS_PER_S, end_t_s=now / NS_PER_S,
            start_position=self._start_pos.copy(), target=np.array(self.target, dtype=float),
            target_radius=self.params.target_radius_m, outcome=outcome,
            time_to_target_s=(self._hold_start_ns - self._onset_ns) / NS_PER_S if ok else math.nan,
            path_length_m=self._path_at_hold if ok else self._path,
            straight_m=(float(np.linalg.norm((self._acq_pos - self._start_pos)[idx])) if ok
                        else math.nan),
            distance_m=float(np.linalg.norm((self.target - self._start_pos)[idx])),
            holds_broken=self._holds_broken,
        ))
        self.phase = "done"
        self._publish_state(outcome)
        # Centre after an outer target and after any failure; outer after a centre success.
        self._want_centre = not (ok and self.target_id == CENTRE)
        self._next_trial(now)

    # ------------------------------------------------------------------ output

    def _publish_state(self, outcome: str = "") -> None:
        target = self.target if self.target is not None and self.phase != "idle" else self.centre
        self.emit("task", TaskState, block=self.block or "", trial=self.trial, phase=self.phase,
                  mode=self.mode if self.block is not None else "",
                  target=np.array(target, dtype=float), target_radius=self.params.target_radius_m,
                  outcome=outcome)

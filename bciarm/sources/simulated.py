"""The ``simulated`` source: a simulated user driving a cosine-tuned population.

Closes the loop in simulation::

    state.<effector>, task ──▶ SimulatedUser (delayed feedback) ──▶ intended velocity
                                 ──▶ CosineTunedPopulation ──▶ NeuralFrame on "neural"

Every ``bin_s`` the user forms an intention from what it saw
``feedback_delay_s`` ago, the population turns it into Poisson counts and the
node publishes one :class:`~bciarm.bus.messages.NeuralFrame`.  The frame is
its own provenance origin: its header's ``neural_seq``/``neural_t_ns`` equal
its ``seq`` and acquisition time (the end of the bin).
"""

from __future__ import annotations

import numpy as np
from typing import Literal

from pydantic import Field, model_validator

from bciarm.bus.messages import EffectorState, Event, Header, Message, NeuralFrame, TaskState
from bciarm.bus.node import Node, NodeParams
from bciarm.sources import population as _pop
from bciarm.sources import user as _user
from bciarm.sources.drift import Drift, DriftSpec
from bciarm.sources.population import CosineTunedPopulation
from bciarm.sources.user import ObservationSpec, SimulatedUser
from bciarm.sources.drive_user import DriveUser
from bciarm.sources.joint_user import JointView
from bciarm.space import DRIVE_AXES, axis_indices, intent_space

NS_PER_S = 1_000_000_000

#: Task phases during which a target is on screen (anything else: no target).
TARGET_PHASES = ("reach", "hold", "done")


def frame_header(node: Node, topic: str) -> Header:
    """Header for a neural frame: a fresh header that is its own provenance."""
    h = node.header(topic)
    return Header(h.seq, h.t_ns, h.src, h.seq, h.t_ns)


class SimulatedSource(Node):
    """Simulated user + cosine-tuned population, publishing spike counts.

    Inputs ``state.*`` (effector position) and ``task`` (target, phase),
    and ``event`` (a joint user's goal: ``joint_target``); output ``neural``.
    See :class:`SimulatedSource.Params`.

    Attributes
    ----------
    population : CosineTunedPopulation
        Built in ``on_start`` (None before).
    user : SimulatedUser
        Built in ``on_start`` (None before).
    intended_velocity : ndarray, shape (k,)
        The intention behind the last published frame (task axes, m/s).
    history_t_ns, history_seq : list of int
    history_velocity : list of ndarray
        Every frame's time, seq and intended velocity (``keep_history``),
        for analysis: e.g. decoder output against true intention.
    """

    class Params(NodeParams):
        """Parameters of the simulated source."""

        n_channels: int = Field(192, ge=1, le=65536, description="Number of channels (units).")
        bin_s: float = Field(0.05, gt=0, le=1.0, description="Bin width, s; also the tick period.")
        tick_s: float | None = Field(
            None, description="Tick period, s; defaults to bin_s and must equal it.")
        axes: list[str] = Field(["x", "y"], description="Task axes among x, y, z, or "
                                                        "[forward, turn] for a drive user.")
        user: Literal["reach", "drive", "joint"] = Field(
            "reach", description="reach: aims the effector at the target in the task axes; "
                                 "drive: steers a wheelchair (axes [forward, turn]; see "
                                 "bciarm.sources.drive_user); joint: aims an exoskeleton's "
                                 "active joints (axes = joint names, rad/s; see "
                                 "bciarm.sources.joint_user).")
        drive_preferred: float = Field(
            0.8, gt=0, le=1, description="Drive user: preferred fraction of top speed.")
        effector: str | None = Field(
            None, description="Follow only state.<effector>; None follows any state.* topic.")
        feedback_delay_s: float = Field(
            _user.DEFAULT_FEEDBACK_DELAY_S, ge=0.0, le=1.0,
            description="Visual feedback delay of the user, s (0.1-0.2 is physiological).")
        preferred_speed: float = Field(
            _user.DEFAULT_PREFERRED_SPEED, ge=0.0, description="User's saturation speed, m/s.")
        gain: float = Field(
            _user.DEFAULT_GAIN, gt=0.0, description="User's speed per metre of distance, 1/s.")
        noise_rel: float = Field(
            _user.DEFAULT_NOISE_REL, ge=0.0,
            description="Motor noise s.d. as a fraction of intended speed.")
        noise_abs: float = Field(
            _user.DEFAULT_NOISE_ABS, ge=0.0, description="Constant motor noise s.d., m/s.")
        baseline_hz: float = Field(
            _pop.DEFAULT_BASELINE_HZ, gt=0.0, description="Median baseline rate, Hz (log-normal).")
        baseline_spread: float = Field(
            _pop.DEFAULT_BASELINE_SPREAD, ge=0.0, description="S.d. of log baseline.")
        baseline_range_hz: tuple[float, float] = Field(
            _pop.DEFAULT_BASELINE_RANGE_HZ, description="Clip baselines into this range, Hz.")
        depth_hz: float = Field(
            _pop.DEFAULT_DEPTH_HZ, ge=0.0,
            description="Median modulation depth at v_ref, Hz (log-normal).")
        depth_spread: float = Field(
            _pop.DEFAULT_DEPTH_SPREAD, ge=0.0, description="S.d. of log depth.")
        untuned_fraction: float = Field(
            _pop.DEFAULT_UNTUNED_FRACTION, ge=0.0, le=1.0, description="Fraction of untuned units.")
        v_ref: float = Field(
            _pop.DEFAULT_V_REF, gt=0.0, description="Speed at which modulation equals depth, m/s.")
        population_seed: int | None = Field(
            None, description="Seed of the tuning parameters (the 'subject'); None draws them "
                              "from the node's session generator.  Fix it to keep the same "
                              "subject across sessions with different seeds.")
        keep_history: bool = Field(True, description="Record every frame's intended velocity.")
        observation: ObservationSpec = Field(
            default_factory=ObservationSpec,
            description="How a reach user's intention differs while watching open-loop "
                        "calibration (engagement, extra_lag_s, noise_rel; off by default); see "
                        "bciarm.sources.user.")
        drift: DriftSpec = Field(default_factory=DriftSpec,
                                 description="Non-stationarity (off by default); see "
                                             "bciarm.sources.drift.")

        @model_validator(mode="before")
        @classmethod
        def _tick_defaults_to_bin(cls, data: object) -> object:
            if isinstance(data, dict) and data.get("tick_s") is None:
                data = {**data, "tick_s": data.get("bin_s", 0.05)}
            return data

        @model_validator(mode="after")
        def _tick_equals_bin(self) -> "SimulatedSource.Params":
            if abs(self.tick_s - self.bin_s) > 1e-12:
                raise ValueError(f"tick_s ({self.tick_s}) must equal bin_s ({self.bin_s}): "
                                 "one neural frame per bin")
            return self

        @model_validator(mode="after")
        def _check_axes(self) -> "SimulatedSource.Params":
            if self.user == "drive":
                if intent_space(self.axes) != "drive":
                    raise ValueError(f"a drive user needs axes {list(DRIVE_AXES)}, got {self.axes}")
            elif self.user == "joint":
                if intent_space(self.axes) != "joint":
                    raise ValueError(f"a joint user needs joint names as axes, got {self.axes}")
            else:
                axis_indices(self.axes)
            return self

    inputs = ("state.*", "task", "event")
    outputs = ("neural",)

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        p = self.params
        self._drive = p.user == "drive"
        self._joints = JointView(p.axes) if p.user == "joint" else None
        self._idx = (np.arange(3) if self._drive or self._joints is not None
                     else axis_indices(p.axes))
        self.population: CosineTunedPopulation | None = None
        self.user: SimulatedUser | None = None
        self.drift: Drift | None = None
        self.intended_velocity = np.zeros(len(p.axes))
        self._position: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._spike_rng: np.random.Generator | None = None
        self.history_t_ns: list[int] = []
        self.history_seq: list[int] = []
        self.history_velocity: list[np.ndarray] = []

    # ------------------------------------------------------------------ lifecycle

    def on_start(self) -> None:
        p = self.params
        k = len(p.axes)
        # Independent streams so that, e.g., changing the motor noise does not
        # change the population or the spike noise.
        try:
            pop_rng, user_rng, spike_rng = self.rng.spawn(3)
        except (TypeError, ValueError):  # a generator not built from a SeedSequence
            pop_rng, user_rng, spike_rng = (np.random.default_rng(s)
                                            for s in self.rng.integers(0, 2**63, size=3))
        if p.population_seed is not None:
            pop_rng = np.random.default_rng(p.population_seed)
        self.population = CosineTunedPopulation(
            p.n_channels, k, rng=pop_rng, baseline_hz=p.baseline_hz,
            baseline_spread=p.baseline_spread, baseline_range_hz=p.baseline_range_hz,
            depth_hz=p.depth_hz, depth_spread=p.depth_spread,
            untuned_fraction=p.untuned_fraction, v_ref=p.v_ref)
        if self._drive:
            self.user = DriveUser(feedback_delay_s=p.feedback_delay_s,
                                  preferred=p.drive_preferred, rng=user_rng)
        else:
            self.user = SimulatedUser(
                k, feedback_delay_s=p.feedback_delay_s, preferred_speed=p.preferred_speed,
                gain=p.gain, noise_rel=p.noise_rel, noise_abs=p.noise_abs, rng=user_rng,
                observation=p.observation)
        self._spike_rng = spike_rng
        # A fourth, independent stream only when drift is on, so the default
        # session draws exactly what it drew before drift existed.
        self.drift = None
        if p.drift.enabled:
            try:
                (drift_rng,) = self.rng.spawn(1)
            except (TypeError, ValueError):
                drift_rng = np.random.default_rng(int(self.rng.integers(0, 2**63)))
            self.drift = Drift(p.drift, drift_rng)

    # ------------------------------------------------------------------ inputs

    def on_message(self, topic: str, msg: Message) -> None:
        if isinstance(msg, EffectorState):
            if self.params.effector is not None and topic != f"state.{self.params.effector}":
                return
            if self._joints is not None:
                position = self._joints.position(msg)
                if position is None:
                    return
                self._position = position
            elif self._drive:
                # Pose (x, y, heading): the wheelchair's extra[0] is its heading.
                if msg.extra.size < 1:
                    return
                self._position = np.array([msg.position[0], msg.position[1], msg.extra[0]])
            else:
                self._position = np.asarray(msg.position, dtype=float)[self._idx]
        elif isinstance(msg, TaskState):
            if self._joints is not None:
                self._target = self._joints.goal if msg.phase in TARGET_PHASES else None
            else:
                self._target = (np.asarray(msg.target, dtype=float)[self._idx]
                                if msg.phase in TARGET_PHASES else None)
        elif isinstance(msg, Event) and msg.kind == "block_start":
            # Open loop: the user watches the autopilot (see ObservationSpec).
            if isinstance(self.user, SimulatedUser):
                self.user.observing = msg.data.get("mode") == "open_loop"
            return
        elif isinstance(msg, Event) and self._joints is not None and self._joints.on_event(msg):
            return  # the goal is shown with the task's next TaskState
        else:
            return
        if self.user is not None:
            # The screen changed: remember what the user sees, and when.
            self.user.observe(self.now_ns() / NS_PER_S, self._position, self._target)

    # ------------------------------------------------------------------ output

    def on_tick(self, now_ns: int) -> None:
        assert self.user is not None and self.population is not None
        v = self.user.intend(now_ns / NS_PER_S)
        if self.drift is not None:
            self.drift.advance(self.population, now_ns / NS_PER_S, self.params.bin_s)
        counts = self.population.sample(v, self.params.bin_s, self._spike_rng)
        header = frame_header(self, "neural")
        self.intended_velocity = v
        if self.params.keep_history:
            self.history_t_ns.append(header.t_ns)
            self.history_seq.append(header.seq)
            self.history_velocity.append(v)
        self.publish("neural", NeuralFrame(header=header, counts=counts, bin_s=self.params.bin_s))

    def intended_history(self) -> tuple[np.ndarray, np.ndarray]:
        """``(t_s, velocity)``: time (s, shape (T,)) and intention (shape (T, k)) of every frame."""
        t = np.asarray(self.history_t_ns, dtype=float) / NS_PER_S
        v = (np.vstack(self.history_velocity) if self.history_velocity
             else np.zeros((0, len(self.params.axes))))
        return t, v

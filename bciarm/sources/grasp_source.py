"""The ``simulated_grasp`` source: a reach-and-grasp user and a motor-cortex population.

Like :class:`~bciarm.sources.simulated.SimulatedSource`, closed loop in
simulation, with two populations side by side in every frame::

    [ n_channels velocity units | grasp_units grasp units ]

* velocity units: cosine-tuned to the intended velocity over the task axes
  (translation m/s, wrist rad/s and aperture m/s, each part scaled to the
  same reference speed so every axis modulates the units alike);
* grasp units: rate ``b + d * s * g`` with ``g`` = 1 while the user intends
  to grasp (hold), 0 otherwise, and ``s = ±1`` per unit -- the hand-area
  activity an attempted squeeze evokes, which the click decoder
  (:mod:`bciarm.decoders.click`) classifies.  They carry no velocity, so the
  Kalman decoder learns to ignore them.

Seven dimensions share the units' tuning, so each carries about sqrt(2/7) of
the signal a 2-D task gets from the same population.  Offline (smooth random
7-D intentions, steady-state Kalman fit on 100-150 s, tested on 200 s more)
the 2-D defaults (192 channels, 4 Hz depth) decode 0.32-0.65 R² per axis;
256 channels at 6 Hz -- two arrays' worth of well-tuned units, as in
Collinger et al. 2013's participant -- decode 0.63-0.71, and are the defaults
here.

The user sees the hand from ``state.<effector>`` (position; wrist rotation
and aperture from :data:`~bciarm.effectors.arm.ARM_EXTRA`) and the goal from
``task`` (:attr:`~bciarm.bus.messages.TaskState.goal`).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from bciarm.bus.messages import EffectorState, Message, NeuralFrame, TaskState
from bciarm.bus.node import Node, NodeParams
from bciarm.sources import grasp_user as _gu
from bciarm.sources import population as _pop
from bciarm.sources.grasp_user import HandView, ReachGraspUser, Speeds
from bciarm.sources.population import CosineTunedPopulation
from bciarm.sources.simulated import NS_PER_S, TARGET_PHASES, frame_header
from bciarm.space import ARM_INDEX, arm_axis_indices


class GraspSource(Node):
    """Simulated reach-and-grasp user + velocity and grasp populations.

    Inputs ``state.*`` and ``task``; output ``neural``.

    Attributes
    ----------
    grasp_history : list of bool
        The grasp intent behind every frame (``keep_history``).
    """

    class Params(NodeParams):
        """Parameters of the reach-and-grasp source."""

        n_channels: int = Field(256, ge=1, le=65536, description="Velocity-tuned channels.")
        grasp_units: int = Field(32, ge=0, le=4096, description="Channels tuned to grasp intent.")
        bin_s: float = Field(0.05, gt=0, le=1.0, description="Bin width and tick period, s.")
        tick_s: float | None = Field(0.05, description="Must equal bin_s.")
        axes: list[str] = Field(["x", "y", "z", "roll", "pitch", "yaw", "grasp"],
                                description="Arm task axes.")
        effector: str | None = Field(None, description="Follow only state.<effector>.")
        feedback_delay_s: float = Field(0.15, ge=0, le=1.0)
        preferred_speed: float = Field(_gu.DEFAULT_SPEED, gt=0, description="m/s")
        gain: float = Field(_gu.DEFAULT_GAIN, gt=0, description="1/s")
        angular_speed: float = Field(_gu.DEFAULT_ANGULAR_SPEED, gt=0, description="rad/s")
        angular_gain: float = Field(_gu.DEFAULT_ANGULAR_GAIN, gt=0, description="1/s")
        aperture_speed: float = Field(_gu.DEFAULT_APERTURE_SPEED, gt=0, description="m/s")
        aperture_gain: float = Field(_gu.DEFAULT_APERTURE_GAIN, gt=0, description="1/s")
        noise_rel: float = Field(0.15, ge=0)
        noise_abs: float = Field(0.005, ge=0)
        baseline_hz: float = Field(_pop.DEFAULT_BASELINE_HZ, gt=0)
        depth_hz: float = Field(6.0, ge=0, description="Median modulation depth at v_ref, Hz "
                                "(the 2-D default is 4; see the module docstring).")
        grasp_depth_hz: float = Field(8.0, ge=0, description="Median modulation of grasp units "
                                                             "by an attempted grasp, Hz.")
        untuned_fraction: float = Field(_pop.DEFAULT_UNTUNED_FRACTION, ge=0, le=1)
        v_ref: float = Field(_pop.DEFAULT_V_REF, gt=0)
        population_seed: int | None = Field(None, description="Fix the 'subject' across seeds.")
        keep_history: bool = True

        @field_validator("axes")
        @classmethod
        def _arm_axes(cls, v: list[str]) -> list[str]:
            arm_axis_indices(v)
            return v

        @field_validator("tick_s")
        @classmethod
        def _tick(cls, v: float | None, info) -> float | None:
            bin_s = info.data.get("bin_s", 0.05)
            if v is not None and abs(v - bin_s) > 1e-12:
                raise ValueError(f"tick_s ({v}) must equal bin_s ({bin_s}): one frame per bin")
            return bin_s

    inputs = ("state.*", "task")
    outputs = ("neural",)

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        p = self.params
        self._idx = arm_axis_indices(p.axes)
        self.user: ReachGraspUser | None = None
        self.velocity_units: CosineTunedPopulation | None = None
        self.grasp_units: CosineTunedPopulation | None = None
        self._spike_rng: np.random.Generator | None = None
        self._hand: HandView | None = None
        self._goal: np.ndarray | None = None
        self._radius = 0.02
        # Scale each axis so 1 "v_ref" of every part modulates units alike.
        scale = {**{a: 1.0 for a in ("x", "y", "z", "grasp")},
                 **{a: p.preferred_speed / p.angular_speed for a in ("roll", "pitch", "yaw")}}
        scale["grasp"] = p.preferred_speed / p.aperture_speed
        self._scale = np.array([scale[a] for a in p.axes])
        self.intended_velocity = np.zeros(len(p.axes))
        self.grasp_intent = False
        self.history_t_ns: list[int] = []
        self.history_velocity: list[np.ndarray] = []
        self.grasp_history: list[bool] = []

    def on_start(self) -> None:
        p = self.params
        try:
            pop_rng, user_rng, spike_rng = self.rng.spawn(3)
        except (TypeError, ValueError):  # a generator not built from a SeedSequence
            pop_rng, user_rng, spike_rng = (np.random.default_rng(s)
                                            for s in self.rng.integers(0, 2**63, size=3))
        if p.population_seed is not None:
            pop_rng = np.random.default_rng(p.population_seed)
        self.velocity_units = CosineTunedPopulation(
            p.n_channels, len(p.axes), rng=pop_rng, baseline_hz=p.baseline_hz,
            depth_hz=p.depth_hz, untuned_fraction=p.untuned_fraction, v_ref=p.v_ref)
        if p.grasp_units:
            self.grasp_units = CosineTunedPopulation(
                p.grasp_units, 1, rng=pop_rng, baseline_hz=p.baseline_hz,
                depth_hz=p.grasp_depth_hz, untuned_fraction=0.0, v_ref=1.0)
        self.user = ReachGraspUser(
            p.axes, feedback_delay_s=p.feedback_delay_s,
            speeds=Speeds(p.preferred_speed, p.gain, p.angular_speed, p.angular_gain,
                          p.aperture_speed, p.aperture_gain),
            noise_rel=p.noise_rel, noise_abs=p.noise_abs, rng=user_rng)
        self._spike_rng = spike_rng

    def on_message(self, topic: str, msg: Message) -> None:
        from bciarm.effectors.arm import ARM_EXTRA, EXTRA_INDEX

        if isinstance(msg, EffectorState):
            if self.params.effector is not None and topic != f"state.{self.params.effector}":
                return
            extra = np.asarray(msg.extra)
            if extra.size >= len(ARM_EXTRA):
                rot = extra[EXTRA_INDEX["rx"]:EXTRA_INDEX["rz"] + 1]
                aperture = float(extra[EXTRA_INDEX["aperture"]])
            else:
                rot, aperture = np.zeros(3), 0.0
            self._hand = HandView(np.asarray(msg.position, float), np.asarray(rot, float),
                                  aperture)
        elif isinstance(msg, TaskState):
            ok = msg.phase in TARGET_PHASES and msg.goal.size >= 8
            self._goal = np.asarray(msg.goal, float) if ok else None
            self._radius = float(msg.target_radius)
        else:
            return
        if self.user is not None:
            self.user.observe(self.now_ns() / NS_PER_S, self._hand, self._goal, self._radius)

    def on_tick(self, now_ns: int) -> None:
        assert self.user is not None and self.velocity_units is not None
        v, hold = self.user.intend(now_ns / NS_PER_S)
        counts = self.velocity_units.sample(v * self._scale, self.params.bin_s, self._spike_rng)
        if self.grasp_units is not None:
            g = self.grasp_units.sample(np.array([1.0 if hold else 0.0]), self.params.bin_s,
                                        self._spike_rng)
            counts = np.concatenate([counts, g])
        header = frame_header(self, "neural")
        self.intended_velocity = v
        self.grasp_intent = hold
        if self.params.keep_history:
            self.history_t_ns.append(header.t_ns)
            self.history_velocity.append(v)
            self.grasp_history.append(hold)
        self.publish("neural", NeuralFrame(header=header, counts=counts, bin_s=self.params.bin_s))


__all__ = ["ARM_INDEX", "GraspSource"]

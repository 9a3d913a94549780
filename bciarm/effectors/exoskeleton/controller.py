"""Exoskeleton control loop (no bus): intent → assisted, guarded joint velocities.

One control tick (:meth:`ExoController.update`):

1. read the joints (driver order, by URDF name);
2. **intent intake** (:class:`~bciarm.effectors.safety.CartesianSafety` in the
   intent space — the active joints' angular velocities, or the end-point's
   linear velocity): invalid (NaN, Inf, wrong size) rejected and dropped, so
   the exo brakes now; e-stop latch; **watchdog** (no valid intent for
   ``watchdog_s`` → decelerate to zero); norm clamp to ``max_speed``
   (so 1e308 is just "full speed"); acceleration limit;
3. **assist-as-needed** (:mod:`.assist`) toward the task's goal;
4. **to joint velocities**: joint space — the active joints take ``u + a``;
   end-point space — damped least squares on the active joints' columns of
   the position Jacobian (pybullet, :class:`~bciarm.effectors.kinematics.ArmKinematics`),
   with the un-commanded axes held; inactive joints are held where they
   were (a P-term);
5. **range-of-motion guard** (:class:`~bciarm.effectors.safety.JointSafety`
   with the patient's range of motion, shrunk by ``rom_guard_rad``, as its
   limits): independent of everything above, it slows every joint smoothly
   inside ``soft_limit_rad`` of a range end (speed toward it ∝ distance),
   clamps to the patient's max speeds, limits acceleration, and finally
   clamps each joint so that the next tick cannot carry it past its range
   end even at the commanded speed — whatever came in (NaN included);
6. ``driver.command_velocity`` (clamps to the URDF limits once more) →
   ``driver.advance``;
7. **torque supervision**: interaction torque = motor torque − gravity torque
   ``τ_g(q) = ID(q, 0, 0)`` (:class:`.dynamics.GravityModel`); above the
   profile's ``max_torque`` at any joint for ``torque_persist_s`` → stop now
   (``driver.stop()``) and latch until ``resume``; reported (guard
   ``torque_limit``, :attr:`ExoController.torque_events`).

Gravity compensation.  The joint drives run velocity loops (pybullet's
velocity motor; a CiA 402 drive in profile velocity mode); such a loop holds
the arm by producing ``τ_g`` itself.  The controller computes ``τ_g`` every
tick from the URDF (the patient's arm included) and uses it as the
feed-forward part of the joint torque: it is subtracted from the measured
motor torque so that the torque limit watches only the torque exchanged with
the patient, never the arm's own weight; it is reported every tick; and at
start the controller checks that the motors can hold the arm anywhere in the
range of motion (``τ_g`` below the motor torque).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bciarm.drivers.base import Driver, RobotModel
from bciarm.effectors.exoskeleton.assist import AssistConfig, assist_as_needed
from bciarm.effectors.exoskeleton.profile import PatientProfile, load_profile
from bciarm.effectors.safety import (CartesianSafety, JointSafety, as_finite_vector,
                                     braking_time_s, check_stop_contract, clip_norm,
                                     watchdog_in_force_s)
from bciarm.space import AXIS_INDEX, intent_space

#: Guard names this controller adds to those of the safety module.
TORQUE_LIMIT = "torque_limit"
SENSOR = "sensor"


class ExoConfig(BaseModel):
    """Settings of :class:`ExoController` (all have working defaults).

    Attributes
    ----------
    tick_s : float
        Control period, s.
    profile : str
        Patient profile: built-in name (``configs/patients/<name>.yaml``) or path.
    scene : str
        Scene whose robot description (URDF) gives kinematics and gravity
        when the driver cannot describe its robot (a real CANopen exo).
    axes : list of str, optional
        Intent space.  None or the profile's active joints (in order): joint
        space, one rad/s per active joint.  World axes (``[x, z]``, ...):
        end-point space, m/s of the palm.
    max_speed : float, optional
        Intent norm clamp (rad/s or m/s).  Default: joint space the smallest
        active-joint max speed of the profile; end-point space 0.2 m/s.
    max_accel : float
        Intent acceleration limit (rad/s² or m/s²).
    stop_within_s : float
        The stop contract (as the arm's): after the last valid intent (none
        since, or only garbage) the commanded intent velocity is zero within
        this time, s.  Default 0.5: a patient's limb is braked at
        ``max_decel``, not at an arm's 13 m/s².
    max_decel : float, optional
        Braking deceleration of a watchdog stop (rad/s² or m/s²); default
        ``max_accel``.  With ``max_speed`` it sets the braking time (whole
        ticks); a config that cannot stop within ``stop_within_s`` is rejected.
    watchdog_s : float, optional
        No valid intent for this long → decelerate to zero at ``max_decel``.
        Default: derived, ``stop_within_s`` − one tick − the braking time.
    soft_limit_rad : float
        Width of the zone at each end of the range of motion in which a joint
        slows (speed toward the end ∝ distance to it).
    rom_guard_rad : float
        The guard stops joints this far inside the range of motion, so
        tracking error can never carry one outside it.
    max_joint_accel : float
        Joint acceleration limit, rad/s².
    hold_gain : float
        Gain holding inactive joints (and end-point axes not commanded), 1/s.
    damping : float
        Damped-least-squares λ (end-point space), m.
    assist : AssistConfig
        Assist-as-needed; ``assist.level`` 0 turns it off.
    torque_persist_s : float
        The interaction torque must exceed its limit this long to stop the exo
        (a single-step solver spike is not a patient pushing back).
    gravity_compensation : bool
        Subtract ``τ_g(q)`` from the motor torque before the torque check.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_s: float = Field(0.01, gt=0)
    profile: str = "example"
    scene: str = "exo_upper_limb"
    axes: list[str] | None = None
    max_speed: float | None = Field(None, gt=0)
    max_accel: float = Field(2.0, gt=0)
    stop_within_s: float = Field(0.5, gt=0)
    max_decel: float | None = Field(None, gt=0)
    watchdog_s: float | None = Field(None, gt=0)
    soft_limit_rad: float = Field(0.2, gt=0)
    rom_guard_rad: float = Field(0.005, ge=0, le=0.1)
    max_joint_accel: float = Field(6.0, gt=0)
    hold_gain: float = Field(2.0, ge=0)
    damping: float = Field(0.05, ge=0)
    assist: AssistConfig = Field(default_factory=AssistConfig)
    torque_persist_s: float = Field(0.03, ge=0)
    gravity_compensation: bool = True

    @field_validator("profile")
    @classmethod
    def _profile_loads(cls, name: str) -> str:
        load_profile(name)  # a bad profile fails here, naming its file and key
        return name

    @field_validator("axes")
    @classmethod
    def _axes_ok(cls, axes: list[str] | None) -> list[str] | None:
        if axes is not None:
            if not axes or len(set(axes)) != len(axes):
                raise ValueError(f"axes must be distinct names, got {axes}")
            if intent_space(axes) not in ("joint", "cartesian"):
                raise ValueError(f"axes must be the profile's active joints or world axes "
                                 f"(x, y, z), got {axes}")
        return axes

    def load_profile(self) -> PatientProfile:
        return load_profile(self.profile)

    @property
    def intent_max_speed(self) -> float:
        """The intent norm clamp (rad/s or m/s): ``max_speed``, else the profile's
        slowest active joint (joint space) or 0.2 m/s (end-point space)."""
        if self.max_speed is not None:
            return float(self.max_speed)
        if self.space() == "joint":
            prof = self.load_profile()
            return float(np.min(prof.max_speed(prof.active)))
        return 0.2

    @property
    def braking_decel(self) -> float:
        """Deceleration of a watchdog stop (``max_decel`` or ``max_accel``)."""
        return float(self.max_decel if self.max_decel is not None else self.max_accel)

    @property
    def braking_s(self) -> float:
        """Time to brake from the intent clamp at ``braking_decel``, whole ticks, s."""
        return braking_time_s(self.intent_max_speed, self.braking_decel, self.tick_s)

    @property
    def watchdog_timeout_s(self) -> float:
        """The watchdog trip time in force (``watchdog_s`` or the derived one), s."""
        return watchdog_in_force_s(self.watchdog_s, self.stop_within_s, self.tick_s,
                                   self.braking_s)

    @model_validator(mode="after")
    def _stops_in_time(self) -> "ExoConfig":
        check_stop_contract(
            stopping=f"the exoskeleton from its top intent speed {self.intent_max_speed:.3f}",
            top_speed=self.intent_max_speed, decel=self.braking_decel, accel=self.max_accel,
            unit="", tick_s=self.tick_s, stop_within_s=self.stop_within_s,
            watchdog_s=self.watchdog_s, fix="if the patient tolerates it", digits=2)
        return self

    def space(self) -> str:
        """``"joint"`` or ``"cartesian"``."""
        return "joint" if self.axes is None else intent_space(self.axes)


@dataclass(frozen=True, eq=False)
class ExoStatus:
    """What one tick did and the state after it.

    Attributes
    ----------
    t_s : float
    position, velocity : ndarray (3,)
        Palm (end-point) world position and linear velocity.
    joint_position, joint_velocity : ndarray (n,)
        Every joint, driver order.
    intent : ndarray
        The guarded user intent ``u`` (intent space).
    assist : ndarray
        Assistance ``a`` (intent space).
    joint_command : ndarray (n,)
        Sent to the driver.
    gravity_torque, interaction_torque : ndarray (n,)
    rom_violation : bool
        A measured joint lies outside the patient's range of motion.
    estopped, torque_stopped : bool
    guards : tuple of str
    """

    t_s: float
    position: np.ndarray
    velocity: np.ndarray
    joint_position: np.ndarray
    joint_velocity: np.ndarray
    intent: np.ndarray
    assist: np.ndarray
    joint_command: np.ndarray
    gravity_torque: np.ndarray
    interaction_torque: np.ndarray
    rom_violation: bool
    estopped: bool
    torque_stopped: bool
    guards: tuple[str, ...]


class ExoController:
    """Bus-free exoskeleton control loop around a joint-velocity :class:`Driver`.

    Parameters
    ----------
    driver : Driver
        Any joint-velocity driver whose joints include the profile's (by
        name): :class:`~bciarm.drivers.pybullet_exo.PyBulletExoDriver`, or
        :class:`~bciarm.drivers.canopen402.CanOpen402Driver` with the exo's
        joint names.  If it offers ``joint_torques()`` the torque limit is
        supervised.
    config : ExoConfig or dict, optional
    **overrides
        ExoConfig fields.
    """

    def __init__(self, driver: Driver, config: ExoConfig | dict[str, Any] | None = None,
                 **overrides: Any) -> None:
        if isinstance(config, ExoConfig):
            config = config.model_dump() if overrides else config
        if not isinstance(config, ExoConfig):
            config = ExoConfig(**{**(config or {}), **overrides})
        self.config: ExoConfig = config
        self.driver = driver
        self.profile = config.load_profile()
        self.space = config.space()
        if self.space == "joint" and config.axes is not None and (
                tuple(config.axes) != self.profile.active):
            raise ValueError(f"joint-space axes {config.axes} must be the profile's active "
                             f"joints in order, {list(self.profile.active)} "
                             f"({self.profile.source})")
        self.kinematics: Any = None
        self.gravity: Any = None
        self.intake: CartesianSafety | None = None
        self.joints: JointSafety | None = None
        self.names: tuple[str, ...] = ()
        self.active_idx = np.zeros(0, dtype=int)
        self.inactive_idx = np.zeros(0, dtype=int)
        self.axes_idx = np.zeros(0, dtype=int)
        self.rom_lower = self.rom_upper = np.zeros(0)
        self.max_torque = np.zeros(0)
        self.goal: np.ndarray | None = None
        self.goal_visible = False
        self.assist_level = float(config.assist.level)
        self.torque_stopped = False
        self.torque_events: list[dict[str, Any]] = []
        self.rom_violations = 0
        self._over_s = np.zeros(0)
        self._hold = np.zeros(0)
        self._x_ref = np.zeros(3)
        self.now_s = 0.0
        self.ticks = 0
        self.last: ExoStatus | None = None
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def intent_dim(self) -> int:
        return len(self.profile.active) if self.space == "joint" else len(self.config.axes or ())

    @property
    def max_speed(self) -> float:
        """The intent norm clamp actually used (rad/s or m/s)."""
        if self.config.max_speed is not None:
            return float(self.config.max_speed)
        if self.space == "joint":
            return float(np.min(self.profile.max_speed(self.profile.active)))
        return 0.2

    @property
    def estopped(self) -> bool:
        return self.intake is not None and self.intake.estop.latched

    def _robot_model(self) -> RobotModel:
        try:
            return self.driver.robot_model()
        except NotImplementedError:
            from bciarm.sim.scene import load_scene

            return load_scene(self.config.scene).robot_model()

    def start(self, now_s: float = 0.0) -> ExoStatus:
        """Connect the driver; set up kinematics, gravity model and guards from the profile."""
        if self._started:
            assert self.last is not None
            return self.last
        from bciarm.effectors.exoskeleton.dynamics import GravityModel
        from bciarm.effectors.kinematics import ArmKinematics

        cfg = self.config
        self.names = tuple(self.driver.joint_names)
        prof = self.profile
        missing = [j for j in prof.active if j not in self.names]
        if missing:
            raise ValueError(f"{prof.source}: active joint(s) {missing} are not joints of the "
                             f"driver ({list(self.names)})")
        # Models first: loading URDFs takes a while, and a real device's
        # supervision (heartbeats, command timeout) is running once connected.
        model = self._robot_model()
        kin_model = RobotModel(urdf=model.urdf, joint_names=self.names, ee_link=model.ee_link,
                               base_position=model.base_position,
                               base_orientation=model.base_orientation,
                               fixed_joints=model.fixed_joints, home=model.home,
                               workspace_lower=model.workspace_lower,
                               workspace_upper=model.workspace_upper)
        self.kinematics = ArmKinematics(kin_model)
        self.gravity = GravityModel(kin_model)
        self.driver.connect()
        self.active_idx = np.array([self.names.index(j) for j in prof.active])
        self.inactive_idx = np.array([i for i in range(len(self.names))
                                      if i not in set(self.active_idx.tolist())], dtype=int)
        lower, upper = prof.rom(self.names)
        limits = self.driver.limits
        prof.check_fits(self.names, limits.lower, limits.upper)
        self.rom_lower, self.rom_upper = lower, upper
        self.max_torque = prof.max_torque(self.names)
        guard = min(cfg.rom_guard_rad, 0.25 * float(np.min(upper - lower)))
        vmax = np.minimum(prof.max_speed(self.names), limits.max_velocity)
        # A watchdog stop: every joint may brake from its speed limit within the braking
        # time of the stop contract, so the joints never hold the stop up.
        self.joints = JointSafety(lower + guard, upper - guard, vmax, cfg.max_joint_accel,
                                  cfg.soft_limit_rad, cfg.tick_s,
                                  max_decel=np.maximum(cfg.max_joint_accel, vmax / cfg.braking_s))
        # The motors must be able to hold the arm anywhere in its range.
        motor = getattr(getattr(self.driver, "handles", None), "max_force", None)
        if motor is not None:
            corners = np.array(np.meshgrid(*[[a, b] for a, b in zip(lower, upper)])).reshape(
                len(self.names), -1).T
            need = np.max(np.abs([self.gravity.gravity_torque(c) for c in corners]), axis=0)
            weak = [n for n, t, m in zip(self.names, need, motor) if t > 0.9 * m]
            if weak:
                raise ValueError(f"the motors of {weak} cannot hold the arm against gravity in "
                                 f"the profile's range of motion (need {need.round(1)} N·m)")
        dim = 3 if self.space == "cartesian" else len(prof.active)
        axes = None
        workspace = None
        if self.space == "cartesian":
            self.axes_idx = np.array([AXIS_INDEX[a] for a in cfg.axes or ()])
            axes = self.axes_idx.tolist()
            if model.workspace_lower is not None and model.workspace_upper is not None:
                workspace = (np.asarray(model.workspace_lower, float),
                             np.asarray(model.workspace_upper, float))
        self.intake = CartesianSafety(self.max_speed, cfg.max_accel, cfg.watchdog_timeout_s,
                                      cfg.tick_s, dim=dim, axes=axes, workspace=workspace,
                                      max_decel=cfg.braking_decel)
        self._over_s = np.zeros(len(self.names))
        q = np.asarray(self.driver.read().position, dtype=float)
        self._hold = np.clip(q, lower, upper)
        if self.space == "cartesian":
            self._x_ref, _ = self.kinematics.forward(q)
        self.now_s = float(now_s)
        self._started = True
        n = len(self.names)
        self.last = self._status(now_s, np.zeros(self.intent_dim), np.zeros(self.intent_dim),
                                 np.zeros(n), np.zeros(n), ())
        return self.last

    def close(self) -> None:
        """Stop the device; release it, kinematics and gravity model.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.driver.connected:
                self.driver.stop()
        finally:
            self.driver.close()
            for obj in (self.kinematics, self.gravity):
                if obj is not None:
                    obj.close()

    # ------------------------------------------------------------------ commands

    def offer_intent(self, velocity: Any, now_s: float) -> bool:
        """Hand in an intent (one entry per intent axis); False if rejected or e-stopped."""
        self._require_started()
        return self.intake.offer(velocity, now_s)

    def intent_fresh(self, now_s: float) -> bool:
        return self.intake is not None and self.intake.intent_fresh(now_s)

    def estop(self, reason: str = "") -> None:
        """Latch the e-stop: zero velocity now, until :meth:`resume`."""
        self._require_started()
        self.intake.trigger_estop(reason)
        self.joints.trigger_estop(reason)
        if self.driver.connected:
            self.driver.stop()

    def resume(self) -> bool:
        """Clear the e-stop and a torque-limit stop; motion needs a fresh intent.

        Returns True if either was latched.
        """
        self._require_started()
        was = self.intake.resume() or self.torque_stopped
        self.joints.resume()
        self.torque_stopped = False
        self._over_s[:] = 0.0
        q = np.asarray(self.driver.read().position, dtype=float)
        if np.all(np.isfinite(q)):
            self._hold = np.clip(q, self.rom_lower, self.rom_upper)
            if self.space == "cartesian":
                self._x_ref, _ = self.kinematics.forward(q)
        return was

    def set_goal(self, goal: Any) -> None:
        """The task's goal in the intent space (None: no goal, no assistance).

        A malformed goal counts as none.
        """
        if goal is None:
            self.goal = None
            return
        dim = 3 if self.space == "cartesian" else len(self.profile.active)
        self.goal = as_finite_vector(goal, dim)

    def set_assist(self, level: float) -> None:
        """Assistance level 0..1 (clipped)."""
        if np.isfinite(level):
            self.assist_level = float(np.clip(level, 0.0, 1.0))

    def show_target(self, position: Any, radius: float) -> None:
        if self.driver.connected:
            self.driver.show_target(position, radius)

    # ------------------------------------------------------------------ the control tick

    def update(self, intent: Any = None, now_s: float | None = None) -> ExoStatus:
        """Run one control tick (see the module docstring)."""
        self._require_started()
        cfg = self.config
        now_s = self.now_s + cfg.tick_s if now_s is None else float(now_s)
        self.now_s = now_s
        if intent is not None:
            self.intake.offer(intent, now_s)
        n = len(self.names)
        state = self.driver.read()
        q = np.asarray(state.position, dtype=float)
        if q.shape != (n,) or not np.all(np.isfinite(q)):
            self.driver.stop()
            self.driver.advance(cfg.tick_s)
            return self._status(now_s, np.zeros(self.intent_dim), np.zeros(self.intent_dim),
                                np.zeros(n), np.zeros(n), (SENSOR,))
        x = self.kinematics.forward(q)[0] if self.space == "cartesian" else q[self.active_idx]
        out = self.intake.step(now_s, x)
        guards = list(out.guards)
        u_full = out.velocity
        a = np.zeros_like(u_full)
        halted = self.estopped or self.torque_stopped
        if halted:
            self.joints.step(np.zeros(n), q, now_s)
            self.driver.stop()
            qdot = np.zeros(n)
            if self.torque_stopped and TORQUE_LIMIT not in guards:
                guards.append(TORQUE_LIMIT)
        else:
            goal = self.goal if self.goal_visible else None
            a = assist_as_needed(u_full, x, goal, cfg.assist, self.assist_level)
            qdot_des = self._joint_velocity(u_full + a, q)
            jout = self.joints.step(qdot_des, q, now_s, braking=self.intake.braking)
            guards.extend(g for g in jout.guards if g not in guards)
            qdot = self.driver.command_velocity(jout.velocity)
        self.driver.advance(cfg.tick_s)
        self.ticks += 1
        status = self._status(now_s, u_full, a, qdot, self._supervise_torque(halted, guards),
                              tuple(guards))
        self.last = status
        return status

    def _joint_velocity(self, v: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Intent-space velocity (+ holds) → joint velocities, driver order."""
        cfg = self.config
        qdot = np.zeros(len(self.names))
        if self.inactive_idx.size:
            hold, _ = clip_norm(cfg.hold_gain * (self._hold[self.inactive_idx]
                                                 - q[self.inactive_idx]), 0.2)
            qdot[self.inactive_idx] = hold
        if self.space == "joint":
            qdot[self.active_idx] = v
            return self._restore(qdot, q)
        # End-point: commanded axes follow the intent (their reference follows
        # the palm while moving); the others are held at their reference.
        x, _ = self.kinematics.forward(q)
        axes = self.axes_idx
        if np.any(v[axes] != 0.0):
            self._x_ref[axes] = x[axes]
        xdot = v + np.clip(cfg.hold_gain * (self._x_ref - x), -0.05, 0.05)
        xdot, _ = clip_norm(xdot, self.max_speed)
        jac = self.kinematics.jacobian(q)[:3][:, self.active_idx]
        jjt = jac @ jac.T + (cfg.damping ** 2) * np.eye(3)
        qdot[self.active_idx] = jac.T @ np.linalg.solve(jjt, xdot)
        return self._restore(qdot, q)

    def _restore(self, qdot: np.ndarray, q: np.ndarray) -> np.ndarray:
        """A joint found beyond its guarded range (it started there, or sagged) heads back in."""
        lo, hi = self.joints.lower, self.joints.upper
        outside = (q < lo) | (q > hi)
        if np.any(outside):
            back = np.clip(q, lo, hi) - q
            qdot = np.where(outside, self.config.hold_gain * back + 0.02 * np.sign(back), qdot)
        return qdot

    def _supervise_torque(self, halted: bool, guards: list[str]) -> np.ndarray:
        """Interaction torque this tick; latch a torque stop when over the limit long enough."""
        torques = getattr(self.driver, "joint_torques", None)
        n = len(self.names)
        if torques is None:
            return np.zeros(n)
        q = np.asarray(self.driver.read().position, dtype=float)
        tau = np.asarray(torques(), dtype=float).reshape(-1)
        if tau.shape != (n,) or not np.all(np.isfinite(tau)) or not np.all(np.isfinite(q)):
            return np.zeros(n)
        if self.config.gravity_compensation:
            tau = tau - self.gravity.gravity_torque(q)
        if halted:
            self._over_s[:] = 0.0  # braking impulses while stopped are not the patient
            return tau
        over = np.abs(tau) > self.max_torque
        self._over_s = np.where(over, self._over_s + self.config.tick_s, 0.0)
        tripped = self._over_s >= max(self.config.torque_persist_s, self.config.tick_s) - 1e-12
        if np.any(tripped):
            j = int(np.argmax(np.where(tripped, np.abs(tau) / self.max_torque, 0.0)))
            self.torque_stopped = True
            self.driver.stop()
            self.torque_events.append({"joint": self.names[j], "torque_nm": float(tau[j]),
                                       "limit_nm": float(self.max_torque[j]),
                                       "t_s": float(self.now_s)})
            if TORQUE_LIMIT not in guards:
                guards.append(TORQUE_LIMIT)
        return tau

    # ------------------------------------------------------------------ helpers

    def _status(self, now_s: float, intent: np.ndarray, assist: np.ndarray,
                joint_command: np.ndarray, interaction: np.ndarray,
                guards: tuple[str, ...]) -> ExoStatus:
        state = self.driver.read()
        q = np.asarray(state.position, dtype=float)
        qd = np.asarray(state.velocity, dtype=float)
        n = len(self.names)
        if q.shape == (n,) and np.all(np.isfinite(q)):
            x, _ = self.kinematics.forward(q)
            v = (self.kinematics.jacobian(q)[:3] @ qd if np.all(np.isfinite(qd))
                 else np.zeros(3))
            tau_g = self.gravity.gravity_torque(q)
            outside = bool(np.any(q < self.rom_lower) or np.any(q > self.rom_upper))
        else:
            x, v, tau_g, outside = np.zeros(3), np.zeros(3), np.zeros(n), False
        if outside:
            self.rom_violations += 1
        return ExoStatus(now_s, x, v, q, qd, np.asarray(intent, float), np.asarray(assist, float),
                         np.asarray(joint_command, float), tau_g, np.asarray(interaction, float),
                         outside, self.estopped, self.torque_stopped, guards)

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("ExoController.start() has not been called")
        if self._closed:
            raise RuntimeError("ExoController is closed")

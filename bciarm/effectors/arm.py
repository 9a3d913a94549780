"""Robot-arm effector: Cartesian velocity intent → guarded joint velocities.

Two layers:

:class:`ArmController` (no bus)
    One control tick = read the driver → end-effector pose and Jacobian
    (:class:`~bciarm.effectors.kinematics.ArmKinematics`) → task-space safety
    chain on the latest intent → a P-term holding the off-plane coordinate(s)
    and the starting orientation (and keeping station while the command is
    zero) → damped least squares to joint velocities, plus a small
    null-space pull toward the home posture → joint-space safety chain →
    ``driver.command_velocity`` → ``driver.advance(tick_s)``.  Drive it
    directly with :meth:`ArmController.update`.

:class:`ArmEffector` (registered effector ``"arm"``)
    The bus node around it: reads ``intent``, ``event`` (``estop`` /
    ``resume``) and ``task`` (target shown in the scene), publishes an
    :class:`~bciarm.bus.messages.EffectorState` on ``state.<name>`` every tick.

Reach and grasp: with wrist axes (``roll``, ``pitch``, ``yaw``: world angular
velocity) the orientation reference integrates the commanded rate under the
wrist limits (:class:`~bciarm.effectors.grasp.OrientationLimits`); with a
``gripper`` the fingers follow the ``grasp`` axis and the click decoder's
grasp/release command under a grip-force limit
(:class:`~bciarm.effectors.grasp.GripperGuard`); ``speed_zones`` cap the speed
near a person (:class:`~bciarm.effectors.grasp.SpeedZone`).  Such an arm
publishes :data:`ARM_EXTRA` in ``EffectorState.extra``; a plain reaching arm
publishes nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bciarm.bus.messages import GRASP_NONE, EffectorState, Event, Intent, Message
from bciarm.bus.node import NodeParams
from bciarm.drivers.base import Driver
from bciarm.effectors.node import EffectorNode
from bciarm.effectors.kinematics import ArmKinematics, orientation_error
from bciarm.effectors.grasp import (DROP, ORIENTATION, SPEED_ZONE, GripperGuard, GripperParams,
                                    OrientationLimits, SpeedZoneParams, WristParams,
                                    quat_from_rotvec, relative_rotation, speed_zones, tilt_and_yaw)
from bciarm.effectors.safety import (SPEED, CartesianSafety, JointSafety, as_finite_vector,
                                     braking_time_s, check_stop_contract, clip_norm,
                                     watchdog_in_force_s)
from bciarm.drivers.gripper import GripperState, has_gripper
from bciarm.space import AXIS_INDEX, ARM_AXES, ARM_INDEX, Axis


#: Cap on the null-space pull toward the home posture (rad/s, norm).
MAX_NULLSPACE_SPEED = 0.3

#: Layout of ``EffectorState.extra`` for a reach-and-grasp arm; then 4 entries
#: (x, y, z, tilt rad) per tracked object, in ``track_objects`` order.
ARM_EXTRA = ("qx", "qy", "qz", "qw", "rx", "ry", "rz", "wx", "wy", "wz", "aperture",
             "aperture_velocity", "grip_force", "holding", "hand_mode", "tilt", "drops")
EXTRA_INDEX = {k: i for i, k in enumerate(ARM_EXTRA)}


class WorkspaceParams(BaseModel):
    """A workspace box, world coordinates (m)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]

    @field_validator("upper")
    @classmethod
    def _above_lower(cls, upper: tuple[float, float, float], info: Any) -> tuple:
        lower = info.data.get("lower")
        if lower is not None and not all(u > lo for u, lo in zip(upper, lower)):
            raise ValueError(f"upper {upper} must be above lower {lower} in every axis")
        return upper


class ArmConfig(BaseModel):
    """Settings of :class:`ArmController` (all have working defaults).

    Attributes
    ----------
    tick_s : float
        Control period, s; each update advances a simulated device this much.
    axes : tuple of {"x", "y", "z"}
        Task axes an intent drives, in intent order.  Axes not listed are held
        at their starting value (a 2-D task moves in a plane).
    max_speed : float
        End-effector speed limit, m/s.
    max_accel : float
        End-effector acceleration/deceleration limit in normal motion, m/s².
    stop_within_s : float
        The stop contract: after the last valid intent (none since, or only
        garbage) the commanded velocity is zero within this time, s.  The
        watchdog trip time and the braking follow from it.
    max_decel : float
        Braking deceleration of a watchdog stop, m/s²: the device's own
        limit (default 13, the Franka Panda's Cartesian translational limit).
        Must stop the arm from ``max_speed`` within ``stop_within_s`` minus
        one tick (to notice) and one tick of watchdog; a config that cannot is
        rejected.  While braking, each joint may slow down at up to its speed
        limit divided by the braking time, so the joints follow.
    watchdog_s : float, optional
        Stop (decelerating) when no valid intent arrived for this long, s.
        Default: derived, ``stop_within_s - tick_s - braking_s``.  If given,
        it must leave room for the braking within ``stop_within_s``.
    workspace : WorkspaceParams, optional
        Box the end-effector stays in; default the scene's / robot's box.
    damping : float
        Damping λ of the damped-least-squares inverse (m); larger is more
        robust near singularities, less exact.
    joint_velocity_factor : float
        Fraction of the URDF joint speed limit the controller may use.
    max_joint_velocity : float, optional
        Further cap on every joint's speed, rad/s.
    max_joint_accel : float
        Joint acceleration limit, rad/s².
    joint_limit_margin : float
        Within this distance of a joint limit the joint slows down to 0, rad.
    position_gain : float
        Gain of the P-term holding the off-plane coordinate(s), and the
        in-plane position while the command is zero, 1/s.
    max_correction_speed : float
        Cap on the P-term's speed, m/s.
    orientation_gain : float
        Gain holding the starting orientation, 1/s.
    max_angular_speed : float
        Cap on the orientation correction, rad/s.
    nullspace_gain : float
        Gain of the null-space pull toward the home posture, 1/s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_s: float = Field(0.01, gt=0)
    axes: tuple[Axis, ...] = ("x", "y")
    gripper: GripperParams | None = None
    wrist: WristParams = Field(default_factory=WristParams)
    speed_zones: tuple[SpeedZoneParams, ...] = ()
    track_objects: tuple[str, ...] = ()
    max_speed: float = Field(0.25, gt=0)
    max_accel: float = Field(1.0, gt=0)
    stop_within_s: float = Field(0.1, gt=0)
    max_decel: float = Field(13.0, gt=0)
    watchdog_s: float | None = Field(None, gt=0)
    workspace: WorkspaceParams | None = None
    damping: float = Field(0.05, ge=0)
    joint_velocity_factor: float = Field(0.5, gt=0, le=1)
    max_joint_velocity: float | None = Field(None, gt=0)
    max_joint_accel: float = Field(10.0, gt=0)
    joint_limit_margin: float = Field(0.1, gt=0)
    position_gain: float = Field(5.0, ge=0)
    max_correction_speed: float = Field(0.05, ge=0)
    orientation_gain: float = Field(5.0, ge=0)
    max_angular_speed: float = Field(1.0, ge=0)
    nullspace_gain: float = Field(1.0, ge=0)

    @field_validator("axes")
    @classmethod
    def _distinct_axes(cls, axes: tuple[str, ...]) -> tuple[str, ...]:
        if (not axes or len(set(axes)) != len(axes) or any(a not in ARM_INDEX for a in axes)
                or not any(a in AXIS_INDEX for a in axes)):
            raise ValueError(f"axes must be distinct names among {list(ARM_AXES)}, with at "
                             f"least one of x, y, z; got {list(axes)}")
        return axes

    @property
    def braking_s(self) -> float:
        """Time to brake from ``max_speed`` at ``max_decel``, in whole ticks, s."""
        return braking_time_s(self.max_speed, self.max_decel, self.tick_s)

    @property
    def watchdog_timeout_s(self) -> float:
        """The watchdog trip time in force (``watchdog_s`` or the derived one), s."""
        return watchdog_in_force_s(self.watchdog_s, self.stop_within_s, self.tick_s,
                                   self.braking_s)

    @model_validator(mode="after")
    def _stops_in_time(self) -> ArmConfig:
        check_stop_contract(stopping=f"the arm from max_speed {self.max_speed} m/s",
                            top_speed=self.max_speed, decel=self.max_decel,
                            accel=self.max_accel, unit="m/s²", tick_s=self.tick_s,
                            stop_within_s=self.stop_within_s, watchdog_s=self.watchdog_s,
                            fix="if the device can brake that hard")
        return self

    @model_validator(mode="after")
    def _grasp_needs_gripper(self) -> "ArmConfig":
        if "grasp" in self.axes and self.gripper is None:
            raise ValueError("the grasp axis needs gripper settings: add `gripper: {}` "
                             "(grip_force, ...) to the arm's params")
        return self


@dataclass(frozen=True, eq=False)
class ArmStatus:
    """What one control tick did (and the state after it).

    Attributes
    ----------
    t_s : float
        Controller time of the tick.
    position, orientation : ndarray
        End-effector world position (3) and quaternion (4) after the tick.
    velocity : ndarray
        End-effector linear velocity (world, m/s) after the tick, J(q)·q̇.
    joint_position, joint_velocity : ndarray
        Measured joint state after the tick.
    command : ndarray
        Cartesian velocity the safety chain allowed (3).
    joint_command : ndarray
        Joint velocities sent to the driver.
    estopped : bool
    guards : tuple of str
        Guards that acted this tick.
    """

    t_s: float
    position: np.ndarray
    orientation: np.ndarray
    velocity: np.ndarray
    joint_position: np.ndarray
    joint_velocity: np.ndarray
    command: np.ndarray
    joint_command: np.ndarray
    estopped: bool
    guards: tuple[str, ...]
    angular_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    gripper: GripperState | None = None
    hand_mode: int = 0
    drops: int = 0


class ArmController:
    """Bus-free arm control loop around a :class:`~bciarm.drivers.base.Driver`.

    Parameters
    ----------
    driver : Driver
        Connected or not; :meth:`start` connects it.  The controller owns it
        from then on and closes it in :meth:`close`.
    config : ArmConfig or dict, optional
    kinematics : ArmKinematics, optional
        Default: built from ``driver.robot_model()``.
    **overrides
        ArmConfig fields given directly.

    Examples
    --------
    >>> ctl = ArmController(PyBulletArmDriver(), max_speed=0.2)
    >>> ctl.start()
    >>> status = ctl.update(np.array([0.1, 0.0]), now_s=0.01)
    >>> ctl.close()
    """

    def __init__(self, driver: Driver, config: ArmConfig | dict[str, Any] | None = None,
                 kinematics: ArmKinematics | None = None, **overrides: Any) -> None:
        if isinstance(config, ArmConfig):
            config = config.model_dump() if overrides else config
        if not isinstance(config, ArmConfig):
            config = ArmConfig(**{**(config or {}), **overrides})
        self.config: ArmConfig = config
        self.driver = driver
        self.kinematics = kinematics
        # Translation axes (world indices) and where each part sits in an intent.
        self.axes = tuple(AXIS_INDEX[a] for a in config.axes if a in AXIS_INDEX)
        self._trans_pos = [i for i, a in enumerate(config.axes) if a in AXIS_INDEX]
        self._rot_pos = [i for i, a in enumerate(config.axes) if ARM_INDEX[a] in (3, 4, 5)]
        self._rot_world = [ARM_INDEX[config.axes[i]] - 3 for i in self._rot_pos]
        self._grasp_pos = config.axes.index("grasp") if "grasp" in config.axes else None
        self.extended = bool(self._rot_pos or config.gripper is not None or config.track_objects
                             or self._grasp_pos is not None)
        self.gripper: GripperGuard | None = None
        self.wrist: OrientationLimits | None = None
        self.zones = speed_zones(config.speed_zones, config.tick_s)
        self.quat_home = np.array([0.0, 0.0, 0.0, 1.0])
        self._omega_intent = np.zeros(3)
        self._aperture_intent: float | None = None
        self._click = GRASP_NONE
        self._pending_click = GRASP_NONE
        self._omega = np.zeros(3)
        self.cartesian: CartesianSafety | None = None
        self.joints: JointSafety | None = None
        self.workspace: tuple[np.ndarray, np.ndarray] | None = None
        self.x_ref = np.zeros(3)
        self.quat_ref = np.array([0.0, 0.0, 0.0, 1.0])
        self.q_home = np.zeros(0)
        self.now_s = 0.0
        self.ticks = 0
        self.last: ArmStatus | None = None
        self._started = False
        self._closed = False
        self._own_kinematics = kinematics is None

    # ------------------------------------------------------------------ lifecycle

    @property
    def intent_dim(self) -> int:
        """Entries an intent must have (one per task axis)."""
        return len(self.axes)

    @property
    def estopped(self) -> bool:
        return self.cartesian is not None and self.cartesian.estop.latched

    def start(self, now_s: float = 0.0) -> ArmStatus:
        """Connect the driver, set up kinematics and guards, take the current pose as reference."""
        if self._started:
            assert self.last is not None
            return self.last
        cfg = self.config
        self.driver.connect()
        if cfg.gripper is not None and not has_gripper(self.driver):
            # Refused before anything else: no arm session without the hand it asked for.
            why = getattr(self.driver, "no_gripper_reason", "")
            raise ValueError(f"{type(self.driver).__name__} has no gripper, but the arm "
                             "config sets `gripper`; use a scene with robot.gripper "
                             "(e.g. arm_box_blocks) or remove `gripper`" + (f" ({why})"
                                                                            if why else ""))
        if self.kinematics is None:
            self.kinematics = ArmKinematics(self.driver.robot_model())
        model = self.kinematics.model
        if tuple(self.kinematics.joint_names) != tuple(self.driver.joint_names):
            raise ValueError(f"kinematics joints {self.kinematics.joint_names} differ from "
                             f"driver joints {self.driver.joint_names}")
        if cfg.workspace is not None:
            self.workspace = (np.array(cfg.workspace.lower), np.array(cfg.workspace.upper))
        elif model.workspace_lower is not None and model.workspace_upper is not None:
            self.workspace = (np.asarray(model.workspace_lower, float),
                              np.asarray(model.workspace_upper, float))
        self.cartesian = CartesianSafety(cfg.max_speed, cfg.max_accel, cfg.watchdog_timeout_s,
                                         cfg.tick_s, dim=3, axes=self.axes,
                                         workspace=self.workspace, max_decel=cfg.max_decel)
        limits = self.driver.limits
        vmax = limits.max_velocity * cfg.joint_velocity_factor
        if cfg.max_joint_velocity is not None:
            vmax = np.minimum(vmax, cfg.max_joint_velocity)
        # A watchdog stop: every joint may brake from its speed limit within the
        # Cartesian braking time, so the joints never hold the stop up.
        self.joints = JointSafety(limits.lower, limits.upper, vmax, cfg.max_joint_accel,
                                  cfg.joint_limit_margin, cfg.tick_s,
                                  max_decel=np.maximum(cfg.max_joint_accel, vmax / cfg.braking_s))
        self.q_home = model.home_vector()
        state = self.driver.read()
        x, quat = self.kinematics.forward(state.position)
        self.x_ref = self._in_box(x)
        self.quat_ref = quat
        self.quat_home = quat.copy()
        self.wrist = OrientationLimits(cfg.wrist, quat)
        if cfg.gripper is not None:
            self.gripper = GripperGuard(cfg.gripper, self.driver.gripper_limits(), cfg.tick_s)
        self.now_s = float(now_s)
        self._started = True
        self.last = self._status(now_s, np.zeros(3), np.zeros(self.kinematics.n), ())
        return self.last

    def close(self) -> None:
        """Stop the device and release it and the kinematics.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.driver.connected:
                self.driver.stop()
        finally:
            self.driver.close()
            if self._own_kinematics and self.kinematics is not None:
                self.kinematics.close()

    # ------------------------------------------------------------------ commands

    def offer_intent(self, velocity: Any, now_s: float) -> bool:
        """Hand in an intent (one entry per task axis, m/s) received at ``now_s``.

        Returns False if it was rejected (non-finite, wrong size) or ignored
        (e-stop latched).
        """
        self._require_started()
        click, self._pending_click = self._pending_click, GRASP_NONE
        if not self.extended:
            return self.cartesian.offer(velocity, now_s)
        v = as_finite_vector(velocity, len(self.config.axes))
        if v is None:
            # Garbage: the Cartesian guard counts it and brakes; wrist and fingers stop too.
            self.cartesian.offer(velocity, now_s)
            self._omega_intent = np.zeros(3)
            self._aperture_intent = None
            return False
        if not self.cartesian.offer(v[self._trans_pos], now_s):
            return False
        self._omega_intent = np.zeros(3)
        self._omega_intent[self._rot_world] = v[self._rot_pos]
        self._aperture_intent = None if self._grasp_pos is None else float(v[self._grasp_pos])
        self._click = click
        return True

    def offer_click(self, grasp: int) -> None:
        """The discrete hand command that comes with the next :meth:`offer_intent`."""
        self._pending_click = int(grasp)

    def intent_fresh(self, now_s: float) -> bool:
        """True if a valid intent younger than the watchdog timeout is held."""
        return self.cartesian is not None and self.cartesian.intent_fresh(now_s)

    def estop(self, reason: str = "") -> None:
        """Latch the e-stop: zero velocity now (``driver.stop()``), until :meth:`resume`."""
        self._require_started()
        self.cartesian.trigger_estop(reason)
        self.joints.trigger_estop(reason)
        if self.driver.connected:
            self.driver.stop()

    def resume(self) -> bool:
        """Clear the e-stop.  Motion restarts only with a fresh intent.

        Returns True if the e-stop was latched.
        """
        self._require_started()
        was = self.cartesian.resume()
        self.joints.resume()
        # Hold where the arm stopped, not where the reference was when it latched.
        x, _ = self.kinematics.forward(self.driver.read().position)
        for i in self.axes:
            self.x_ref[i] = x[i]
        self.x_ref = self._in_box(self.x_ref)
        if self._rot_pos:
            self.quat_ref = self.kinematics.forward(self.driver.read().position)[1]
            self._omega = np.zeros(3)
            self._omega_intent = np.zeros(3)
        return was

    def show_target(self, position: Any, radius: float) -> None:
        """Show a task target in the scene (visual only)."""
        if self.driver.connected:
            self.driver.show_target(position, radius)

    # ------------------------------------------------------------------ the control tick

    def update(self, intent: Any = None, now_s: float | None = None,
               grasp: int = GRASP_NONE) -> ArmStatus:
        """Run one control tick.

        Parameters
        ----------
        intent : array_like, optional
            A new intent (one entry per axis, m/s) arriving now; None keeps
            the held one (subject to the watchdog).  Garbage is rejected and
            counts as no intent.
        now_s : float, optional
            Time of this tick; default previous tick + ``tick_s``.
        grasp : int
            Discrete hand command arriving with ``intent`` (``GRASP_NONE``,
            ``GRASP_RELEASE`` or ``GRASP_CLOSE``).

        Returns
        -------
        ArmStatus
        """
        self._require_started()
        cfg = self.config
        now_s = self.now_s + cfg.tick_s if now_s is None else float(now_s)
        self.now_s = now_s
        if intent is not None:
            self.offer_click(grasp)
            self.offer_intent(intent, now_s)
        kin = self.kinematics
        state = self.driver.read()
        q = np.asarray(state.position, dtype=float)
        if not np.all(np.isfinite(q)):
            # A device that cannot say where it is gets stopped.
            self.driver.stop()
            self.driver.advance(cfg.tick_s)
            return self._status(now_s, np.zeros(3), np.zeros(kin.n), ("sensor",))
        x, quat = kin.forward(q)
        jac = kin.jacobian(q)

        out = self.cartesian.step(now_s, x)
        guards = list(out.guards)
        fresh = self.cartesian.intent_fresh(now_s)
        if self.gripper is not None:
            cmd = self.gripper.command(self._aperture_intent, self._click, fresh,
                                       self.estopped, self.driver.read_gripper())
            self._click = GRASP_NONE  # a click acts once; the hand mode remembers it
            self.driver.command_gripper(cmd.velocity, cmd.force)
            guards.extend(g for g in cmd.guards if g not in guards)
        if self.estopped:
            self.joints.step(np.zeros(kin.n), q, now_s)
            self.driver.stop()
            self._omega = np.zeros(3)
            qdot = np.zeros(kin.n)
        else:
            omega_cmd = self._wrist_rate(fresh, quat, guards)
            xdot, clipped = self._task_velocity(out.velocity, x, quat, omega_cmd, guards)
            if clipped and SPEED not in guards:
                guards.append(SPEED)
            qdot_des = self._resolve(jac, xdot, q)
            jout = self.joints.step(qdot_des, q, now_s, braking=self.cartesian.braking)
            guards.extend(g for g in jout.guards if g not in guards)
            qdot = self.driver.command_velocity(jout.velocity)
        self.driver.advance(cfg.tick_s)
        self.ticks += 1
        self.last = self._status(now_s, out.velocity, qdot, tuple(guards))
        return self.last

    def _wrist_rate(self, fresh: bool, quat: np.ndarray, guards: list[str]) -> np.ndarray:
        """Guarded wrist angular velocity: watchdog, speed, acceleration, orientation limits."""
        if not self._rot_pos:
            return np.zeros(3)
        w = self.config.wrist
        target = self._omega_intent if fresh else np.zeros(3)
        target, clipped = clip_norm(target, w.max_angular_speed)
        if clipped and SPEED not in guards:
            guards.append(SPEED)
        step, _ = clip_norm(target - self._omega, w.max_angular_accel * self.config.tick_s)
        omega = self._omega + step
        assert self.wrist is not None
        omega, acted = self.wrist.limit(omega, self.quat_ref)
        if acted:
            guards.append(ORIENTATION)
        self._omega = omega
        return omega

    def _task_velocity(self, v_cmd: np.ndarray, x: np.ndarray, quat: np.ndarray,
                       omega_cmd: np.ndarray | None = None,
                       guards: list[str] | None = None) -> tuple[np.ndarray, bool]:
        """Guarded command + reference tracking → 6-D end-effector twist."""
        cfg = self.config
        if omega_cmd is not None and np.any(omega_cmd != 0.0):
            # The orientation reference integrates the (already limited) wrist
            # rate, so the P-term below tracks it on every axis.
            self.quat_ref = _normalise(_quat_mul(quat_from_rotvec(omega_cmd * cfg.tick_s),
                                                 self.quat_ref))
        # In-plane, the reference follows the arm while it is commanded to
        # move (the user closes that loop; a reference running ahead would make
        # the arm creep on after a stop) and is latched where the arm is once
        # the command is zero, so it keeps station instead of drifting.
        # Off-plane axes are never commanded: their reference stays at the
        # starting value, which holds the plane's height.
        axes = list(self.axes)
        if np.any(v_cmd[axes] != 0.0):
            self.x_ref[axes] = x[axes]
        self.x_ref = self._in_box(self.x_ref)
        correction, _ = clip_norm(cfg.position_gain * (self.x_ref - x), cfg.max_correction_speed)
        v_lin, clipped = clip_norm(v_cmd + correction, cfg.max_speed)
        for zone in self.zones:
            # Last on the linear velocity: nothing after it may speed the arm up.
            v_lin, acted = zone.limit(v_lin, x)
            if acted and guards is not None and SPEED_ZONE not in guards:
                guards.append(SPEED_ZONE)
        ff = np.zeros(3) if omega_cmd is None else omega_cmd
        omega, _ = clip_norm(ff + cfg.orientation_gain * orientation_error(self.quat_ref, quat),
                             cfg.max_angular_speed)
        return np.concatenate([v_lin, omega]), clipped

    def _resolve(self, jac: np.ndarray, xdot: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Damped least squares: q̇ = Jᵀ(JJᵀ+λ²I)⁻¹ẋ + (I − J⁺J)·k(q_home − q)."""
        cfg = self.config
        jjt = jac @ jac.T + (cfg.damping ** 2) * np.eye(jac.shape[0])
        qdot = jac.T @ np.linalg.solve(jjt, xdot)
        if cfg.nullspace_gain > 0 and self.q_home.size == q.size:
            # The projector uses the exact pseudo-inverse: built from the damped
            # one, J(I − J⁺J) = λ²(JJᵀ+λ²I)⁻¹J is not zero and the home pull
            # leaked ~1 cm/s into the end-effector motion (measured), enough to
            # keep the arm from settling on a target.
            null = np.eye(q.size) - _pseudo_inverse(jac) @ jac
            pull, _ = clip_norm(cfg.nullspace_gain * (self.q_home - q), MAX_NULLSPACE_SPEED)
            qdot = qdot + null @ pull
        return qdot

    # ------------------------------------------------------------------ helpers

    def _in_box(self, x: np.ndarray) -> np.ndarray:
        if self.workspace is None:
            return np.array(x, dtype=float)
        return np.clip(x, self.workspace[0], self.workspace[1])

    def _status(self, now_s: float, command: np.ndarray, joint_command: np.ndarray,
                guards: tuple[str, ...]) -> ArmStatus:
        state = self.driver.read()
        q = np.asarray(state.position, dtype=float)
        qd = np.asarray(state.velocity, dtype=float)
        if np.all(np.isfinite(q)):
            x, quat = self.kinematics.forward(q)
            v = self.kinematics.jacobian(q)[:3] @ qd if np.all(np.isfinite(qd)) else np.zeros(3)
        else:
            x, quat, v = np.full(3, np.nan), np.array([0.0, 0, 0, 1]), np.zeros(3)
        w = np.zeros(3)
        if np.all(np.isfinite(q)) and np.all(np.isfinite(qd)) and self.extended:
            w = self.kinematics.jacobian(q)[3:] @ qd
        grip = self.driver.read_gripper() if self.gripper is not None else None
        return ArmStatus(now_s, x, quat, v, q, qd, np.asarray(command, float),
                         np.asarray(joint_command, float), self.estopped, guards, w, grip,
                         self.gripper.mode if self.gripper is not None else 0,
                         self.gripper.drops if self.gripper is not None else 0)

    def extra(self, status: ArmStatus) -> np.ndarray:
        """:data:`ARM_EXTRA` (plus tracked objects) for a state message; empty for a plain arm."""
        if not self.extended:
            return np.zeros(0)
        quat = status.orientation
        tilt, _, _ = tilt_and_yaw(quat, self.quat_home)
        g = status.gripper
        head = np.r_[quat, relative_rotation(quat, self.quat_home), status.angular_velocity,
                     (g.aperture, g.velocity, g.force, float(g.holding)) if g is not None
                     else (0.0, 0.0, 0.0, 0.0), status.hand_mode, tilt, status.drops]
        objs = []
        if self.config.track_objects:
            poses = self.driver.object_poses(self.config.track_objects)
            for name in self.config.track_objects:
                pos, q = poses[name]
                objs.append(np.r_[pos, tilt_and_yaw(q, np.array([0.0, 0, 0, 1]))[0]])
        out = np.concatenate([head, *objs]) if objs else head
        return np.where(np.isfinite(out), out, 0.0)

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("ArmController.start() has not been called")
        if self._closed:
            raise RuntimeError("ArmController is closed")


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from bciarm.effectors.kinematics import quat_multiply

    return quat_multiply(a, b)


def _normalise(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q)


def _pseudo_inverse(jac: np.ndarray) -> np.ndarray:
    """J⁺ = Jᵀ(JJᵀ)⁻¹ for a full-row-rank Jacobian; SVD (pinv) near singularity.

    The closed form costs a 6×6 solve instead of an SVD; it is exact while J
    has full row rank, which the DLS keeps true away from singular postures.
    """
    try:
        inv = jac.T @ np.linalg.solve(jac @ jac.T, np.eye(jac.shape[0]))
    except np.linalg.LinAlgError:
        return np.linalg.pinv(jac, rcond=1e-4)
    if not np.all(np.isfinite(inv)) or np.abs(inv).max() > 1e4:
        return np.linalg.pinv(jac, rcond=1e-4)
    return inv


class ArmEffector(EffectorNode):
    """Bus node: a robot arm following a Cartesian velocity intent, safely.

    Inputs: ``intent`` (:class:`~bciarm.bus.messages.Intent`, one velocity
    entry per axis in ``params.axes``), ``event`` (``estop`` latches,
    ``resume`` clears), ``task`` (the target is shown in the scene).
    Output: ``state.<name>`` (:class:`~bciarm.bus.messages.EffectorState`)
    every tick, ``derived_from`` the intent that drove it.

    Parameters
    ----------
    name : str
    params : Params or dict
        ArmConfig fields plus ``driver`` (registry name) and ``driver_params``.
    """

    class Params(ArmConfig, NodeParams):
        """ArmConfig plus the driver to run."""

        driver: str = "pybullet_arm"
        driver_params: dict[str, Any] = Field(default_factory=dict)

    params: "ArmEffector.Params"
    config_class = ArmConfig
    controller_class = ArmController
    intent_space = "cartesian"
    controller: ArmController | None

    def __init__(self, name: str, params: Any = None, **kwargs: Any) -> None:
        super().__init__(name, params, **kwargs)
        if self.params.gripper is not None:
            self.outputs = (*self.outputs, "event")  # drop events

    def on_message(self, topic: str, msg: Message) -> None:
        if isinstance(msg, Intent) and self.controller is not None:
            # The click rides on the intent; it is applied only if the intent is accepted.
            self.controller.offer_click(msg.grasp)
        super().on_message(topic, msg)

    def intent_velocity(self, msg: EffectorState) -> np.ndarray:
        """The intent that would have produced a state message (for calibration).

        Linear velocity on the translation axes, wrist angular velocity and
        aperture rate from :data:`ARM_EXTRA`; in ``axes`` order.
        """
        full = np.zeros(len(ARM_AXES))
        full[:3] = msg.velocity
        extra = np.asarray(msg.extra)
        if extra.size >= len(ARM_EXTRA):
            full[3:6] = extra[EXTRA_INDEX["wx"]:EXTRA_INDEX["wz"] + 1]
            full[6] = extra[EXTRA_INDEX["aperture_velocity"]]
        return full[[ARM_INDEX[a] for a in self.params.axes]]

    @property
    def intent_dim(self) -> int:
        """Entries an intent must have (one per axis)."""
        return len(self.params.axes)

    @property
    def watchdog_s(self) -> float:
        """The watchdog trip time in force (derived from ``stop_within_s`` by default), s."""
        return self.params.watchdog_timeout_s

    @property
    def stopping_time_s(self) -> float:
        """Time to rest from ``max_speed`` once the watchdog brakes, s."""
        return self.params.braking_s

    def on_tick(self, now_ns: int) -> None:
        ctl = self.controller
        if ctl is None:
            return
        now_s = now_ns / 1e9
        st = ctl.update(None, now_s)
        derived = self.provenance(now_s)
        pos = st.position if np.all(np.isfinite(st.position)) else np.zeros(3)
        self.emit(self.state_topic, EffectorState, derived_from=derived,
                  position=np.ascontiguousarray(pos, dtype="<f8"),
                  velocity=np.ascontiguousarray(st.velocity, dtype="<f8"),
                  joint_position=np.ascontiguousarray(st.joint_position, dtype="<f8"),
                  joint_velocity=np.ascontiguousarray(st.joint_velocity, dtype="<f8"),
                  estopped=st.estopped, guards=st.guards,
                  extra=np.ascontiguousarray(ctl.extra(st), dtype="<f8"))
        if DROP in st.guards:
            name = ctl.gripper.dropped[-1] if ctl.gripper is not None and ctl.gripper.dropped else ""
            self.log.warning("%s: object %r dropped", self.name, name)
            self.emit("event", Event, kind="drop", data={"effector": self.name, "object": name})

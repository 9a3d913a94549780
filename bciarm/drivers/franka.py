"""Franka Emika Panda / FR3 over libfranka, through franky (``pip install 'bciarm[franka]'``).

The arm effector drives this driver exactly as it drives the simulated arm:
joint velocities in, joint state out, kinematics from the same Panda URDF
(:meth:`FrankaDriver.robot_model` is the ``arm_table`` scene's robot, whose
base frame is the Franka's base frame ``O``).

Commands
    Every :meth:`~bciarm.drivers.base.Driver.command_velocity` becomes a
    franky ``JointVelocityMotion`` started *asynchronously*: franky's 1 kHz
    control thread replans (Ruckig, within the robot's velocity,
    acceleration and jerk limits × ``dynamics_factor``) from wherever the
    arm is toward the new target.  The joint velocity limits reported by
    :attr:`FrankaDriver.limits` are the tighter of the kinematics URDF, the
    robot's own URDF (``model_urdf``) and franky's limits, so the bciarm
    safety chain never asks for more than the robot will do.

Driver-side watchdog
    Each motion holds its target for only ``command_timeout_s`` after
    reaching it; if no newer command replaces it (the controller hung, the
    process died, the bus went silent) franky brakes the arm to rest at the
    robot's deceleration limits and the robot holds its position.  Nothing
    in this process has to keep running for that to happen: it is the motion
    itself that lapses.

Pacing
    A real robot's time passes on its own clock.  :meth:`FrankaDriver.advance`
    (the driver is :attr:`~bciarm.drivers.base.Driver.paced`) waits until the
    robot's clock (``RobotState.time``) has moved on by ``dt`` since the
    previous tick's deadline, so the inline runtime runs at the robot's pace:
    wall-clock pace on a real robot, and the simulator's pace when franky-sim
    runs slower than real time on a loaded machine.

Errors and recovery
    libfranka reports control errors (reflexes, a lost network link) by
    ending the motion with an exception that franky raises at the next
    ``move``; the robot is then at rest.  The driver logs it (``errors``),
    recovers (``recover_from_errors``; if the connection itself is gone, a
    reconnect) and carries on with the next command — at most
    ``max_recoveries`` times in ``recovery_window_s``, after which it raises
    :class:`~bciarm.drivers.base.DriverError` (a robot that keeps failing
    needs a person).

Franka Hand
    With a Hand attached (``gripper: auto``, the default, uses it when one
    answers; ``true`` requires it; ``false`` never connects to it) the driver
    has the gripper methods of :mod:`bciarm.drivers.gripper`, so an arm with
    the ``grasp`` axis and ``gripper`` settings drives it; the velocity the
    effector's grip guard asks for becomes non-blocking Hand actions (``move``,
    force-limited ``grasp``, ``stop``) -- see :mod:`bciarm.drivers.franka_hand`
    for the mapping, the force clamp (``gripper_max_force``) and why a fault
    never opens a held grasp.

Units and joint order as everywhere in bciarm: rad, rad/s, SI, joints in
URDF order (``panda_joint1`` … ``panda_joint7``, the robot's joints 1–7).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from bciarm.drivers.base import Driver, DriverError, JointLimits, JointState, RobotModel
from bciarm.drivers.gripper import GripperLimits, GripperState
from bciarm.drivers.pacing import DeviceClockPacer

log = logging.getLogger("bciarm.drivers.franka")

#: Joints of a Franka arm.
N_JOINTS = 7
#: Headroom under the robot's velocity limit: franky rejects targets above it.
VELOCITY_HEADROOM = 0.99


def import_franky() -> Any:
    """Import franky, or raise a DriverError naming the extra to install."""
    try:
        import franky
    except ImportError as exc:
        raise DriverError(
            "the Franka driver needs franky (PyPI: franky-control), which is not installed "
            f"({exc}); install it with pip install 'bciarm[franka]'") from exc
    return franky


def urdf_revolute_limits(urdf_text: str) -> list[tuple[float, float, float]]:
    """(lower, upper, velocity) of the revolute joints of a URDF, in document order."""
    root = ET.fromstring(urdf_text)
    out = []
    for joint in root.iter("joint"):
        if joint.get("type") != "revolute":
            continue
        lim = joint.find("limit")
        if lim is None:
            continue
        out.append((float(lim.get("lower", "-inf")), float(lim.get("upper", "inf")),
                    float(lim.get("velocity", "inf"))))
    return out


def model_limits(model: RobotModel) -> JointLimits:
    """Joint limits of ``model``'s controlled joints, read from its URDF with pybullet."""
    import pybullet as p

    from bciarm.sim.scene import joint_indices_by_name

    cid = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(str(model.urdf), useFixedBase=True, physicsClientId=cid)
        by_name = joint_indices_by_name(cid, body)
        infos = [p.getJointInfo(body, by_name[n], physicsClientId=cid) for n in model.joint_names]
    finally:
        p.disconnect(cid)
    return JointLimits(lower=[i[8] for i in infos], upper=[i[9] for i in infos],
                       max_velocity=[i[11] for i in infos])


def _within(fn: Callable[[], Any], timeout_s: float, message: str) -> Any:
    """``fn()`` in a worker thread; TimeoutError(message) if it takes longer than ``timeout_s``.

    A call that overruns is left to finish in its (daemon) thread.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    worker = threading.Thread(target=run, name="franka-recovery", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(message)
    if "error" in result:
        raise result["error"]
    return result["value"]


class FrankaDriver(Driver):
    """A Franka arm (Panda or FR3) over libfranka via franky; see the module docstring.

    Parameters
    ----------
    host : str
        The robot's FCI address (``127.0.0.1`` for franky-sim on this machine).
    scene : str or Path
        Scene whose robot gives the kinematics (URDF, joint names, end
        effector, base pose in the scene's world frame, home posture,
        workspace box).  Default ``arm_table``, the simulated arm's.
    command_timeout_s : float
        Driver-side watchdog: how long a command is held once reached; with
        no newer command the arm then brakes to rest.
    dynamics_factor : float
        franky's relative dynamics factor (0–1]: scales the robot's velocity,
        acceleration and jerk limits for every motion.
    home_on_connect : bool
        Move to the scene's home posture (joint motion, ``home_dynamics_factor``)
        when connecting.  The arm moves by itself: keep the workspace clear.
    home_dynamics_factor : float
        Dynamics factor of that homing move.
    realtime_kernel : bool
        Require a real-time kernel (libfranka ``RealtimeConfig.Enforce``).
        Default False (``Ignore``): needed on a non-RT kernel and with
        franky-sim; a real robot runs better on an RT kernel.
    auto_recover : bool
        Recover from control errors by itself (see the module docstring).
    max_recoveries : int
        At most this many recoveries in ``recovery_window_s``; one more error
        raises DriverError.
    recovery_window_s : float
    recovery_timeout_s : float
        How long one recovery (or reconnect) may take before DriverError.
    gripper : bool or "auto"
        Use the Franka Hand: ``"auto"`` if one answers, ``True`` required
        (DriverError without one), ``False`` never.
    gripper_max_force : float
        Largest grasp force sent to the Hand, N (default 70, its continuous
        force; at most 140); the arm's ``gripper.grip_force`` caps it further.
    gripper_homing : bool
        Home the Hand on connect (its fingers open fully and come back).
    gripper_state_timeout_s : float
        A Hand whose state has not advanced for this long is a fault
        (``DriverError``; the arm stops), s (default 1.0).

    Attributes
    ----------
    errors : list of (float, str, str)
        ``(time.monotonic(), where, "ExceptionType: message")`` of every error.
    recoveries : list of float
        ``time.monotonic()`` of every successful recovery.
    commands : int
        Motions sent.
    last_command_t : float
        ``time.monotonic()`` of the last motion sent.
    last_command_device_t : float
        Robot clock (``RobotState.time``, s) read just after the last motion was sent.
    late_ticks : int
        :meth:`advance` calls that gave up waiting for the robot's clock.
    """

    simulated = False
    paced = True
    #: Modules the contract suite needs to build :meth:`contract_instance`.
    contract_requires: ClassVar[tuple[str, ...]] = ("franky", "franky_sim")

    def __init__(self, host: str = "127.0.0.1", scene: str | Path = "arm_table",
                 command_timeout_s: float = 0.025, dynamics_factor: float = 1.0,
                 home_on_connect: bool = False, home_dynamics_factor: float = 0.2,
                 realtime_kernel: bool = False, auto_recover: bool = True,
                 max_recoveries: int = 3, recovery_window_s: float = 60.0,
                 recovery_timeout_s: float = 5.0, gripper: bool | str = "auto",
                 gripper_max_force: float = 70.0, gripper_homing: bool = False,
                 gripper_state_timeout_s: float = 1.0) -> None:
        super().__init__()
        from bciarm.sim.scene import load_scene

        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be the robot's address, got {host!r}")
        if not 0.005 <= float(command_timeout_s) <= 1.0:
            raise ValueError(f"command_timeout_s must be within [0.005, 1] s, got "
                             f"{command_timeout_s!r}")
        for name, value in (("dynamics_factor", dynamics_factor),
                            ("home_dynamics_factor", home_dynamics_factor)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if int(max_recoveries) < 0 or not float(recovery_window_s) > 0:
            raise ValueError("max_recoveries must be >= 0 and recovery_window_s > 0")
        self.host = host
        self.scene = scene
        # Reading the layout is cheap and catches a bad scene before anything opens.
        self._model = load_scene(scene).robot_model()
        if len(self._model.joint_names) != N_JOINTS:
            raise ValueError(f"scene {scene!r} names {len(self._model.joint_names)} joints; a "
                             f"Franka arm has {N_JOINTS}")
        self.command_timeout_s = float(command_timeout_s)
        self.dynamics_factor = float(dynamics_factor)
        self.home_on_connect = bool(home_on_connect)
        self.home_dynamics_factor = float(home_dynamics_factor)
        self.realtime_kernel = bool(realtime_kernel)
        self.auto_recover = bool(auto_recover)
        self.max_recoveries = int(max_recoveries)
        self.recovery_window_s = float(recovery_window_s)
        self.recovery_timeout_s = float(recovery_timeout_s)
        if gripper not in (True, False, "auto"):
            raise ValueError(f"gripper must be true, false or 'auto', got {gripper!r}")
        self.gripper = gripper
        from bciarm.drivers.franka_hand import FrankaHand

        # Validates the force now; connects in connect().
        self._hand_spec = FrankaHand(host, max_force=gripper_max_force, homing=gripper_homing,
                                     state_timeout_s=gripper_state_timeout_s)
        self._hand: FrankaHand | None = None
        self.errors: list[tuple[float, str, str]] = []
        self.recoveries: list[float] = []
        self.commands = 0
        self.last_command_t = -math.inf
        self.last_command_device_t = -math.inf
        self._pacer = DeviceClockPacer(self.device_time)
        self._franky: Any = None
        self._robot: Any = None
        self._limits: JointLimits | None = None

    # ------------------------------------------------------------------ Driver API

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self._model.joint_names)

    @property
    def limits(self) -> JointLimits:
        if self._limits is None:
            raise DriverError("FrankaDriver: limits come from the robot; connect() first")
        return self._limits

    def robot_model(self) -> RobotModel:
        return dataclasses.replace(self._model)

    @property
    def robot(self) -> Any:
        """The franky ``Robot`` (for tools and tests; None before connect)."""
        return self._robot

    @classmethod
    def contract_instance(cls) -> "FrankaDriver":
        """A driver wired to a private franky-sim on a free loopback address (contract tests).

        The simulator is stopped when the driver is closed.
        """
        from bciarm.testing.franky_sim import FrankySim

        sim = FrankySim("auto").start()
        try:
            drv = cls(host=sim.host)
        except Exception:
            sim.stop()
            raise
        drv._owned = sim  # type: ignore[attr-defined]
        return drv

    # ------------------------------------------------------------------ connection

    def _open(self) -> Any:
        franky = self._franky
        config = (franky.RealtimeConfig.Enforce if self.realtime_kernel
                  else franky.RealtimeConfig.Ignore)
        try:
            robot = franky.Robot(self.host, realtime_config=config)
        except Exception as exc:  # noqa: BLE001 - franky raises its own types
            raise DriverError(
                f"FrankaDriver: could not connect to the Franka at {self.host} "
                f"({type(exc).__name__}: {exc}). Check that the robot is on, its brakes are "
                f"unlocked and FCI is active in Desk, and that {self.host} is reachable; for "
                f"the simulator run: python -m bciarm.testing.franky_sim --hostname {self.host}"
            ) from exc
        robot.relative_dynamics_factor = self.dynamics_factor
        robot.recover_from_errors()  # start clean: a robot left in a reflex will not move
        return robot

    def _connect(self) -> None:
        self._franky = import_franky()
        robot = self._open()
        self._robot = robot
        try:
            self._limits = self._device_limits(robot)
            if self.home_on_connect:
                self.move_home()
            self._connect_hand()
        except Exception:
            self._robot = None
            raise
        self._pacer.reset()

    def _connect_hand(self) -> None:
        if self.gripper is False:
            return
        try:
            self._hand_spec.open()
        except DriverError as exc:
            if self.gripper is True:
                raise
            log.info("FrankaDriver: no Franka Hand used (%s)", exc)
            return
        self._hand = self._hand_spec

    def _device_limits(self, robot: Any) -> JointLimits:
        """The tighter of the kinematics URDF, the robot's own URDF and franky's limits."""
        urdf = model_limits(self._model)
        lower, upper, vmax = urdf.lower.copy(), urdf.upper.copy(), urdf.max_velocity.copy()
        try:
            device = urdf_revolute_limits(robot.model_urdf)[:N_JOINTS]
        except Exception as exc:  # noqa: BLE001 - older libfranka has no model_urdf
            log.info("FrankaDriver: robot URDF unavailable (%s); using the model's limits", exc)
            device = []
        if len(device) == N_JOINTS:
            dev = np.array(device)
            lower, upper = np.maximum(lower, dev[:, 0]), np.minimum(upper, dev[:, 1])
            vmax = np.minimum(vmax, dev[:, 2])
        vmax = np.minimum(vmax, np.asarray(robot.joint_velocity_limit.max, dtype=float))
        return JointLimits(lower=lower, upper=upper,
                           max_velocity=vmax * self.dynamics_factor * VELOCITY_HEADROOM)

    def move_home(self) -> None:
        """Joint motion to the scene's home posture (blocking, ``home_dynamics_factor``).

        Raises
        ------
        DriverError
            The motion failed (the robot is then stopped).
        """
        self._require_robot()
        home = self._model.home_vector()
        motion = self._franky.JointMotion(home.tolist(),
                                          relative_dynamics_factor=self.home_dynamics_factor)
        try:
            self._robot.move(motion)
        except Exception as exc:  # noqa: BLE001
            raise DriverError(f"FrankaDriver: moving home to {np.round(home, 4).tolist()} "
                              f"failed ({type(exc).__name__}: {exc})") from exc

    def _require_robot(self) -> None:
        if self._robot is None:
            raise DriverError("FrankaDriver is not connected; call connect() first")

    # ------------------------------------------------------------------ Driver hooks

    def _read(self) -> JointState:
        try:
            s = self._robot.state
        except Exception as exc:  # noqa: BLE001
            self._recover("read", exc)
            try:
                s = self._robot.state
            except Exception as exc2:  # noqa: BLE001
                raise DriverError(f"FrankaDriver at {self.host}: cannot read the robot's state "
                                  f"after recovering ({type(exc2).__name__}: {exc2})") from exc2
        return JointState(position=np.array(s.q, dtype=float), velocity=np.array(s.dq, dtype=float),
                          t_s=float(s.time.to_sec()))

    def _command_velocity(self, qdot: np.ndarray) -> None:
        franky = self._franky
        motion = franky.JointVelocityMotion(
            qdot.tolist(), duration=franky.Duration(max(1, round(self.command_timeout_s * 1e3))))
        try:
            self._robot.move(motion, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - the previous motion ended in an error
            # The robot is at rest after a control error; recover and let the
            # next command move it again (not this one: the caller's view of
            # the arm is one error old).
            self._recover("command", exc)
            return
        self.commands += 1
        self.last_command_t = time.monotonic()
        try:
            self.last_command_device_t = float(self._robot.state.time.to_sec())
        except Exception:  # noqa: BLE001 - bookkeeping only; the next call reports errors
            pass

    def command_cartesian_velocity(self, twist: Any, max_speed: float = 0.25,
                                   max_angular_speed: float = 1.0) -> np.ndarray:
        """Command an end-effector twist (franky ``CartesianVelocityMotion``).

        ``twist`` is ``[vx, vy, vz, wx, wy, wz]`` in the robot's base frame
        (m/s, rad/s).  Same last line of defence as joint commands: a
        non-finite twist becomes zero (counted in ``rejected``), the linear
        and angular parts are clipped to ``max_speed`` / ``max_angular_speed``
        (counted in ``clamped``), and the motion lapses after
        ``command_timeout_s`` unless renewed.  A motion of another kind
        (joint velocity) preempts it, and vice versa.

        Returns
        -------
        ndarray
            The twist actually sent.
        """
        from bciarm.effectors.safety import clip_norm

        self._require_connected()
        try:
            x = np.array(twist, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            x = None
        if x is None or x.shape != (6,):
            self.stop()
            raise ValueError(f"command_cartesian_velocity needs 6 entries [vx, vy, vz, wx, wy, "
                             f"wz], got {np.shape(twist)}; arm stopped")
        if not np.all(np.isfinite(x)):
            self.rejected += 1
            log.warning("FrankaDriver: non-finite twist %s replaced by zero", x)
            x = np.zeros(6)
        lin, c1 = clip_norm(x[:3], max_speed)
        ang, c2 = clip_norm(x[3:], max_angular_speed)
        if c1 or c2:
            self.clamped += 1
        x = np.concatenate([lin, ang])
        franky = self._franky
        motion = franky.CartesianVelocityMotion(
            franky.Twist(x[:3].tolist(), x[3:].tolist()),
            duration=franky.Duration(max(1, round(self.command_timeout_s * 1e3))))
        try:
            self._robot.move(motion, asynchronous=True)
        except Exception as exc:  # noqa: BLE001
            self._recover("command", exc)
            return np.zeros(6)
        self.commands += 1
        self.last_command_t = time.monotonic()
        return x

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The robot's own end-effector pose (``O_T_EE``): position (3) and rotation matrix."""
        self._require_connected()
        m = np.array(self._robot.state.O_T_EE.matrix, dtype=float)
        return m[:3, 3].copy(), m[:3, :3].copy()

    def _close(self) -> None:
        robot, self._robot = self._robot, None
        hand, self._hand = self._hand, None
        if hand is not None:
            hand.close()  # a held grasp keeps squeezing: closing the driver never opens the hand
        try:
            if robot is not None:
                try:
                    # The last (zero) motion lapses within command_timeout_s;
                    # libfranka bounds the wait itself (network time-outs).
                    robot.join_motion()
                except Exception as exc:  # noqa: BLE001
                    log.warning("FrankaDriver: last motion ended with %s: %s",
                                type(exc).__name__, exc)
        finally:
            del robot
            owned = getattr(self, "_owned", None)
            if owned is not None:
                owned.stop()

    def stop(self) -> None:
        """Command zero velocity now: franky brakes at the robot's deceleration limits.

        A running Hand ``move`` stops too; a grasp is left to the grip guard
        (a closed hand keeps squeezing through an e-stop).
        """
        if self.connected and self._robot is not None:
            self._command_velocity(np.zeros(N_JOINTS))
        if self._hand is not None:
            try:
                self._hand.stop_moves()
            except Exception as exc:  # noqa: BLE001 - the arm's stop must not fail on the Hand
                log.warning("FrankaDriver: stopping the Hand failed (%s)", exc)

    # ------------------------------------------------------------------ Franka Hand

    def has_gripper(self) -> bool:
        """True if a Franka Hand is connected and used."""
        return self._hand is not None

    @property
    def hand(self) -> Any:
        """The :class:`~bciarm.drivers.franka_hand.FrankaHand` (None without one)."""
        return self._hand

    def _require_hand(self) -> Any:
        self._require_connected()
        if self._hand is None:
            why = ("gripper is false" if self.gripper is False
                   else "no Franka Hand answered at connect")
            raise DriverError(f"FrankaDriver at {self.host} has no gripper ({why})")
        return self._hand

    def gripper_limits(self) -> GripperLimits:
        """Aperture 0 .. the Hand's max width, 0.1 m/s, ``gripper_max_force``."""
        return self._require_hand().limits

    def read_gripper(self) -> GripperState:
        """The Hand's latest width, rate, held force and holding flag (never blocks)."""
        return self._require_hand().read()

    def command_gripper(self, velocity: float, max_force: float) -> None:
        """Aperture rate (m/s, + opens) with a force cap (N); never blocks (see franka_hand)."""
        self._require_hand().command(velocity, max_force)

    # ------------------------------------------------------------------ errors

    def _recover(self, where: str, exc: BaseException) -> None:
        """Log a control error and recover (or reconnect); DriverError when out of tries."""
        now = time.monotonic()
        what = f"{type(exc).__name__}: {exc}"
        self.errors.append((now, where, what))
        recent = [t for t in self.recoveries if now - t < self.recovery_window_s]
        if not self.auto_recover or len(recent) >= self.max_recoveries:
            why = ("automatic recovery is off" if not self.auto_recover else
                   f"already recovered {len(recent)} times in {self.recovery_window_s:.0f} s")
            raise DriverError(
                f"FrankaDriver at {self.host}: {where} failed ({what}); {why}. "
                "Check the robot (Desk: errors, brakes, FCI) before going on") from exc
        log.warning("FrankaDriver at %s: %s failed (%s); recovering", self.host, where, what)

        def recover() -> Any:
            robot = self._robot
            try:
                robot.recover_from_errors()
                robot.state  # noqa: B018 - raises if the connection is gone
                return robot
            except Exception:  # noqa: BLE001 - connection lost: reconnect
                return self._open()

        try:
            # libfranka's calls block while a link is frozen (TCP stays open):
            # bound the wait so the caller gets an answer.
            self._robot = _within(recover, self.recovery_timeout_s,
                                  f"no answer from the robot within {self.recovery_timeout_s} s")
        except Exception as exc2:  # noqa: BLE001
            raise DriverError(f"FrankaDriver at {self.host}: {where} failed ({what}) and "
                              f"recovery failed ({type(exc2).__name__}: {exc2})") from exc2
        self._pacer.reset()  # the robot clock may have restarted
        self.recoveries.append(time.monotonic())
        log.warning("FrankaDriver at %s: recovered (%d in the last %.0f s)", self.host,
                    len(recent) + 1, self.recovery_window_s)

    # ------------------------------------------------------------------ pacing

    def device_time(self) -> float:
        """The robot's clock, s (``RobotState.time``)."""
        self._require_robot()
        return float(self._robot.state.time.to_sec())

    def advance(self, dt: float) -> None:
        """Wait until the robot's clock reaches the next tick deadline (previous + ``dt``).

        See :class:`~bciarm.drivers.pacing.DeviceClockPacer`; if the robot's
        clock stops (a frozen link) the wait gives up after ``4·dt + 0.1`` s
        and counts a late tick (the driver watchdog has stopped the arm by then).
        """
        self._require_connected()
        try:
            self._pacer.wait(dt)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - reading the robot's clock failed
            self._recover("read", exc)

    @property
    def late_ticks(self) -> int:
        """:meth:`advance` calls that gave up waiting for the robot's clock."""
        return self._pacer.late_ticks

"""Universal Robots arms (e-Series / CB3) over RTDE, through ur_rtde (``pip install 'bciarm[ur]'``).

Commands
    :meth:`~bciarm.drivers.base.Driver.command_velocity` → ``speedJ(qd,
    accel)`` (joint speed, accelerating linearly at ``accel`` and holding);
    :meth:`URDriver.command_cartesian_velocity` → ``speedL(xd, accel)`` (tool
    speed, base frame); :meth:`URDriver.stop` → ``speedStop(stop_decel)``.
    Every command also kicks the RTDE watchdog.

Watchdog
    At connect the driver arms ur_rtde's RTDE watchdog
    (``setWatchdog(1 / command_timeout_s)``): if no command (kick) reaches
    the controller for ``command_timeout_s``, the control script on the
    robot stops and the robot brakes — on the controller, whatever happens
    to this process or the network.

Safety stops
    Every :meth:`~bciarm.drivers.base.Driver.read` checks the receive
    interface for a protective stop (``isProtectiveStopped``), an emergency
    stop (``isEmergencyStopped``), any other non-normal safety mode
    (``getSafetyMode``), and a control script that is no longer running.
    The driver is then *faulted* (:attr:`URDriver.faulted` says why):
    commands are dropped (counted) until a person has cleared the stop on
    the pendant and :meth:`URDriver.reset_fault` re-uploads the control
    script and re-arms the watchdog.  A protective stop is never cleared by
    software here: it usually means a collision.

Pacing
    :meth:`URDriver.advance` waits on the controller's clock (RTDE
    ``timestamp``), like the Franka driver
    (:class:`~bciarm.drivers.pacing.DeviceClockPacer`).

Gripper
    ur-rtde's Python API (1.6.5: ``rtde_control``, ``rtde_receive``,
    ``rtde_io``) has no gripper interface (its C++ library's
    ``RobotiqGripper`` is not bound).  With ``gripper="robotiq"`` the driver
    talks to a Robotiq 2F-85 / 2F-140 through the Robotiq URCap's socket
    (``gripper_host``, default ``host``; ``gripper_port`` 63352) with
    :class:`~bciarm.drivers.robotiq.RobotiqGripper` and has the gripper
    methods of :mod:`bciarm.drivers.gripper`.  A gripper fault, a dead socket
    or a stale gripper state faults the driver too (the arm gets
    ``speedStop`` and commands are dropped until :meth:`URDriver.reset_fault`).
    Without ``gripper`` (the default) an arm session with ``gripper``
    settings (the ``grasp`` axis) is refused at start.

Joint names default to the UR URDF names; limits are parameters (UR5e:
±2π, elbow ±π, 3.14 rad/s — the default speed limit here is a conservative
1.0 rad/s).  For the arm effector give ``urdf`` and ``ee_link`` (no UR URDF
ships with bciarm).  Tested against :mod:`bciarm.testing.ur_rtde_double`,
a test double of the ur_rtde interface, and its Robotiq gripper against
:mod:`bciarm.testing.robotiq_double`; validate on hardware or URSim with the
README's steps.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from bciarm.drivers.base import Driver, DriverError, JointLimits, JointState, RobotModel
from bciarm.drivers.gripper import GripperLimits, GripperState
from bciarm.drivers.pacing import DeviceClockPacer
from bciarm.drivers.robotiq import URCAP_PORT, RobotiqGripper

log = logging.getLogger("bciarm.drivers.ur")

#: Joint names of the Universal Robots URDFs (ur_description).
UR_JOINTS = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint",
             "wrist_2_joint", "wrist_3_joint")
#: Fault reason when the control script is no longer running (watchdog, program stop).
SCRIPT_STOPPED = "control script stopped (RTDE watchdog or a program stop)"
#: UR safety mode NORMAL (``getSafetyMode``); 2 is REDUCED, also fine to move in.
SAFETY_OK = (1, 2)
_SAFETY_NAMES = {0: "undefined", 1: "normal", 2: "reduced", 3: "protective stop",
                 4: "recovery", 5: "safeguard stop", 6: "system emergency stop",
                 7: "robot emergency stop", 8: "violation", 9: "fault",
                 10: "validate joint id", 11: "undefined", 12: "automatic mode safeguard stop",
                 13: "system three-position enabling stop"}


class _RTDEModules:
    """ur_rtde's two modules, imported on first use."""

    def __init__(self) -> None:
        try:
            import rtde_control
            import rtde_receive
        except ImportError as exc:
            raise DriverError(
                "the UR driver needs ur_rtde (PyPI: ur-rtde), which is not installed "
                f"({exc}); install it with pip install 'bciarm[ur]'") from exc
        self.RTDEControlInterface = rtde_control.RTDEControlInterface
        self.RTDEReceiveInterface = rtde_receive.RTDEReceiveInterface


class URDriver(Driver):
    """A Universal Robots arm over RTDE; see the module docstring.

    Parameters
    ----------
    host : str
        The robot controller's address (required to connect; no default, so
        a forgotten parameter never reaches some other machine).
    command_timeout_s : float
        RTDE watchdog period: the robot stops if no command arrives for this long.
    accel : float
        ``speedJ`` acceleration of the leading axis, rad/s².
    stop_decel : float
        ``speedStop`` deceleration, rad/s².
    joint_names : sequence of str
        Names of the six joints, base to wrist.
    max_velocity : float or sequence of float
        Joint speed limits, rad/s.
    lower, upper : sequence of float, optional
        Joint position limits, rad (default ±2π, elbow ±π).
    tcp_max_speed, tcp_max_angular_speed : float
        Caps on ``speedL`` commands (m/s, rad/s).
    urdf, ee_link : str, optional
        Robot description for :meth:`robot_model` (the arm effector's kinematics).
    gripper : str or None
        ``"robotiq"``: a Robotiq 2F gripper through its URCap socket; None /
        ``"none"`` (default): no gripper.
    gripper_host : str, optional
        Address of the URCap socket (default ``host``, the robot controller).
    gripper_port : int
        The URCap socket's port (63352).
    gripper_model : str
        ``"2F-85"`` or ``"2F-140"``.
    gripper_max_force : float, optional
        Largest grip force sent, N (default the model's largest); the arm's
        ``gripper.grip_force`` caps it further.
    gripper_pos_open, gripper_pos_closed : int
        Robotiq position counts of the fully open / closed fingers (0, 255
        nominal; measure them on the gripper).
    rtde : object, optional
        Provides ``RTDEControlInterface`` and ``RTDEReceiveInterface``; default
        ur_rtde's.  Tests pass :class:`~bciarm.testing.ur_rtde_double.URRTDEDouble`.

    Attributes
    ----------
    faulted : str
        Why the driver is faulted ("" when it is not).
    safety_events : list of (float, str)
        ``(time.monotonic(), what)`` of every safety stop seen.
    dropped : int
        Commands dropped while faulted.
    last_command_t : float
        ``time.monotonic()`` of the last command sent.
    """

    simulated = False
    #: Why an arm with ``gripper`` settings is refused on this driver without one.
    no_gripper_reason: ClassVar[str] = (
        "no gripper configured, and ur-rtde's Python API has no gripper interface; for a "
        "Robotiq 2F gripper with its URCap set the driver params gripper: robotiq (and "
        "gripper_host if the URCap is not on host); see the README, Reach and grasp -- "
        "on hardware")
    paced = True
    #: Modules the contract suite needs to build :meth:`contract_instance` (none: a test double).
    contract_requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, host: str | None = None, command_timeout_s: float = 0.1,
                 accel: float = 2.0, stop_decel: float = 4.0,
                 joint_names: Sequence[str] = UR_JOINTS,
                 max_velocity: float | Sequence[float] = 1.0,
                 lower: Sequence[float] | None = None, upper: Sequence[float] | None = None,
                 tcp_max_speed: float = 0.25, tcp_max_angular_speed: float = 1.0,
                 urdf: str | None = None, ee_link: str | None = None,
                 rtde: Any = None, gripper: str | None = None,
                 gripper_host: str | None = None, gripper_port: int = URCAP_PORT,
                 gripper_model: str = "2F-85",
                 gripper_max_force: float | None = None, gripper_pos_open: int = 0,
                 gripper_pos_closed: int = 255) -> None:
        super().__init__()
        names = tuple(joint_names)
        if len(names) != 6:
            raise ValueError(f"a UR arm has 6 joints; joint_names has {len(names)}")
        if not 0.002 <= float(command_timeout_s) <= 1.0:
            raise ValueError(f"command_timeout_s must be within [0.002, 1] s, got "
                             f"{command_timeout_s!r}")
        for name, value in (("accel", accel), ("stop_decel", stop_decel),
                            ("tcp_max_speed", tcp_max_speed),
                            ("tcp_max_angular_speed", tcp_max_angular_speed)):
            if not (math.isfinite(float(value)) and float(value) > 0):
                raise ValueError(f"{name} must be positive, got {value!r}")
        two_pi = 2 * math.pi
        default_upper = [two_pi, two_pi, math.pi, two_pi, two_pi, two_pi]
        self.host = host
        self.command_timeout_s = float(command_timeout_s)
        self.accel = float(accel)
        self.stop_decel = float(stop_decel)
        self.tcp_max_speed = float(tcp_max_speed)
        self.tcp_max_angular_speed = float(tcp_max_angular_speed)
        vmax = np.broadcast_to(np.asarray(max_velocity, dtype=float), (6,))
        up = np.asarray(upper if upper is not None else default_upper, dtype=float)
        lo = np.asarray(lower if lower is not None else -up, dtype=float)
        self._limits = JointLimits(lower=lo, upper=up, max_velocity=vmax)
        self._names = names
        self._urdf = urdf
        self._ee_link = ee_link
        self._rtde_given = rtde
        self._control: Any = None
        self._receive: Any = None
        self._pacer = DeviceClockPacer(self.device_time)
        self.faulted = ""
        self.safety_events: list[tuple[float, str]] = []
        self.dropped = 0
        self.last_command_t = -math.inf
        if gripper in (None, False, "none"):
            self._gripper_spec: RobotiqGripper | None = None
        elif gripper == "robotiq":
            self._gripper_spec = RobotiqGripper(gripper_host or host or "", gripper_port,
                                                model=gripper_model,
                                                max_force=gripper_max_force,
                                                pos_open=gripper_pos_open,
                                                pos_closed=gripper_pos_closed)
        else:
            raise ValueError(f"gripper must be 'robotiq' or none, got {gripper!r}")
        self._gripper: RobotiqGripper | None = None

    # ------------------------------------------------------------------ Driver API

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def limits(self) -> JointLimits:
        return self._limits

    def robot_model(self) -> RobotModel:
        if not (self._urdf and self._ee_link):
            raise NotImplementedError(
                "URDriver needs urdf=... and ee_link=... (e.g. ur_description's ur5e.urdf and "
                "'tool0') to describe its kinematics; none ships with bciarm")
        return RobotModel(urdf=Path(self._urdf), joint_names=self._names, ee_link=self._ee_link)

    @classmethod
    def contract_instance(cls) -> "URDriver":
        """The driver wired to a ur_rtde TEST DOUBLE (no offline UR peer exists)."""
        from bciarm.testing.ur_rtde_double import URRTDEDouble

        return cls(host="ur-rtde-test-double", rtde=URRTDEDouble())

    # ------------------------------------------------------------------ Driver hooks

    def _connect(self) -> None:
        if not self.host:
            raise DriverError("URDriver needs the robot's address: host=ROBOT_IP "
                              "(bciarm check-driver ur --param host=ROBOT_IP)")
        rtde = self._rtde_given if self._rtde_given is not None else _RTDEModules()
        try:
            self._receive = rtde.RTDEReceiveInterface(self.host)
            self._control = rtde.RTDEControlInterface(self.host)
        except Exception as exc:  # noqa: BLE001 - ur_rtde raises RuntimeError subclasses
            self._control = self._receive = None
            raise DriverError(
                f"URDriver: could not connect to the UR controller at {self.host} "
                f"({type(exc).__name__}: {exc}). Check that the robot is powered on, brakes "
                "released, in remote control mode, and that RTDE is reachable (ports "
                "30004/29999/30001-30003)") from exc
        self._check_safety()
        if self.faulted:
            raise DriverError(f"URDriver at {self.host}: the robot is in {self.faulted}; clear it "
                              "on the pendant first")
        if not self._control.setWatchdog(1.0 / self.command_timeout_s):
            raise DriverError(f"URDriver at {self.host}: could not arm the RTDE watchdog")
        if self._gripper_spec is not None:
            try:
                self._gripper_spec.open()
            except DriverError:
                self._close()
                raise
            self._gripper = self._gripper_spec
        self._pacer.reset()

    def _check_safety(self) -> None:
        """Fault the driver on a protective / emergency stop or a stopped control script."""
        rx = self._receive
        why = ""
        if rx.isProtectiveStopped():
            why = "protective stop"
        elif rx.isEmergencyStopped():
            why = "emergency stop"
        else:
            mode = int(rx.getSafetyMode())
            if mode not in SAFETY_OK:
                why = f"safety mode {mode} ({_SAFETY_NAMES.get(mode, 'unknown')})"
            elif self._control is not None and not self._control.isProgramRunning():
                why = SCRIPT_STOPPED
        if why and not self.faulted:
            self.faulted = why
            self.safety_events.append((time.monotonic(), why))
            if why == SCRIPT_STOPPED:
                log.warning("URDriver at %s: %s; the next command restarts it", self.host, why)
            else:
                log.error("URDriver at %s: %s; commands are dropped until a person clears it "
                          "on the pendant and reset_fault() is called", self.host, why)

    def _read(self) -> JointState:
        self._check_safety()
        rx = self._receive
        return JointState(position=np.array(rx.getActualQ(), dtype=float),
                          velocity=np.array(rx.getActualQd(), dtype=float),
                          t_s=float(rx.getTimestamp()))

    def _send(self, name: str, fn: Any, *args: Any) -> bool:
        if self.faulted == SCRIPT_STOPPED:
            # The watchdog (or a program stop) ended the script, not a safety
            # function: a fresh command restarts it, as a CiA 402 drive
            # re-enables after a command timeout.  Safety stops need a person.
            try:
                self.reset_fault()
            except DriverError as exc:
                log.warning("%s", exc)
        if self.faulted:
            self.dropped += 1
            return False
        ok = bool(fn(*args))
        self._control.kickWatchdog()
        if not ok:
            self._check_safety()
            if not self.faulted:
                self.faulted = f"{name} refused by the controller"
                self.safety_events.append((time.monotonic(), self.faulted))
            self.dropped += 1
            return False
        self.last_command_t = time.monotonic()
        return True

    def _command_velocity(self, qdot: np.ndarray) -> None:
        self._send("speedJ", self._control.speedJ, qdot.tolist(), self.accel, 0.0)

    def command_cartesian_velocity(self, twist: Any) -> np.ndarray:
        """Tool speed ``[vx, vy, vz, wx, wy, wz]`` (base frame) with ``speedL``.

        A non-finite twist becomes zero (counted in ``rejected``); linear and
        angular parts are clipped to ``tcp_max_speed`` / ``tcp_max_angular_speed``
        (counted in ``clamped``).  Linear acceleration is ``accel`` × 0.125
        m/s² per rad/s² (UR's default ratio, 0.25 / 2.0).

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
            log.warning("URDriver: non-finite twist %s replaced by zero", x)
            x = np.zeros(6)
        lin, c1 = clip_norm(x[:3], self.tcp_max_speed)
        ang, c2 = clip_norm(x[3:], self.tcp_max_angular_speed)
        if c1 or c2:
            self.clamped += 1
        x = np.concatenate([lin, ang])
        self._send("speedL", self._control.speedL, x.tolist(), self.accel * 0.125, 0.0)
        return x

    def stop(self) -> None:
        """``speedStop`` at ``stop_decel`` (sent even while faulted: stopping is always allowed).

        An opening Robotiq move stops too; closing is left to the grip guard
        (a closed hand keeps squeezing through an e-stop).
        """
        if self.connected and self._control is not None:
            self._control.speedStop(self.stop_decel)
            self._control.kickWatchdog()
        if self._gripper is not None:
            try:
                self._gripper.stop_moves()
            except DriverError as exc:  # the arm's stop must not fail on the gripper
                log.warning("URDriver: stopping the gripper failed (%s)", exc)

    def _close(self) -> None:
        control, receive = self._control, self._receive
        gripper, self._gripper = self._gripper, None
        if gripper is not None:
            gripper.close()  # sends nothing: a held object stays held
        try:
            if control is not None:
                try:
                    control.speedStop(self.stop_decel)
                    control.stopScript()
                finally:
                    control.disconnect()
        finally:
            if receive is not None:
                receive.disconnect()
            self._control = self._receive = None

    # ------------------------------------------------------------------ faults and pacing

    def reset_fault(self) -> None:
        """After a person cleared the stop on the pendant: restart the script, re-arm the watchdog.

        Raises
        ------
        DriverError
            The robot is still stopped, or the script could not be started.
        """
        self._require_connected()
        saved, self.faulted = self.faulted, ""
        if self._gripper is not None:
            try:
                self._gripper.read()
            except DriverError as exc:
                self.faulted = saved
                raise DriverError(f"URDriver at {self.host}: the gripper is still faulted "
                                  f"({exc})") from exc
        rx = self._receive
        mode = int(rx.getSafetyMode())
        if rx.isProtectiveStopped() or rx.isEmergencyStopped() or mode not in SAFETY_OK:
            self.faulted = saved
            raise DriverError(f"URDriver at {self.host}: still in safety mode {mode} "
                              f"({_SAFETY_NAMES.get(mode, 'unknown')}); clear it on the pendant")
        if not self._control.isProgramRunning() and not self._control.reuploadScript():
            self.faulted = saved
            raise DriverError(f"URDriver at {self.host}: could not restart the control script")
        if not self._control.setWatchdog(1.0 / self.command_timeout_s):
            self.faulted = saved
            raise DriverError(f"URDriver at {self.host}: could not re-arm the RTDE watchdog")
        log.info("URDriver at %s: fault (%s) reset", self.host, saved)

    def device_time(self) -> float:
        """The controller's clock (RTDE timestamp), s."""
        if self._receive is None:
            raise DriverError("URDriver is not connected; call connect() first")
        return float(self._receive.getTimestamp())

    def advance(self, dt: float) -> None:
        """Wait until the controller's clock has moved on by ``dt`` (see the module docstring)."""
        self._require_connected()
        self._pacer.wait(dt)

    # ------------------------------------------------------------------ Robotiq gripper

    def has_gripper(self) -> bool:
        """True if a Robotiq gripper is configured and connected."""
        return self._gripper is not None

    @property
    def gripper(self) -> RobotiqGripper | None:
        """The :class:`~bciarm.drivers.robotiq.RobotiqGripper` (None without one)."""
        return self._gripper

    def _require_gripper(self) -> RobotiqGripper:
        if self._gripper is None:
            raise DriverError(f"URDriver at {self.host} has no gripper ("
                              + ("not connected" if self._gripper_spec is not None
                                 else "set gripper: robotiq in the driver params") + ")")
        return self._gripper

    def _gripper_failed(self, exc: DriverError) -> None:
        """A gripper that fails faults the arm: stop it, drop commands until reset_fault()."""
        why = f"gripper: {exc}"
        if self.faulted != why:
            self.faulted = why
            self.safety_events.append((time.monotonic(), why))
            log.error("URDriver at %s: %s; arm stopped", self.host, why)
        if self.connected and self._control is not None:
            self._control.speedStop(self.stop_decel)
            self._control.kickWatchdog()

    def gripper_limits(self) -> GripperLimits:
        """Aperture 0 .. the model's stroke, its top speed, ``gripper_max_force``."""
        return self._require_gripper().limits

    def read_gripper(self) -> GripperState:
        """The gripper's latest width, rate, held force and OBJ flag (never blocks).

        Raises
        ------
        DriverError
            A gripper fault, a dead socket or a stale state; the arm is stopped first.
        """
        g = self._require_gripper()
        try:
            return g.read()
        except DriverError as exc:
            self._gripper_failed(exc)
            raise

    def command_gripper(self, velocity: float, max_force: float) -> None:
        """Aperture rate (m/s, + opens) with a force cap (N); never blocks (see robotiq)."""
        g = self._require_gripper()
        try:
            g.command(velocity, max_force)
        except DriverError as exc:
            self._gripper_failed(exc)
            raise

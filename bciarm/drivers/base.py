"""The driver contract: one small ABC every joint-velocity device subclasses.

Modelled on python-can's ``BusABC``: the constructor only records settings
(pyzmq style — nothing is opened until :meth:`Driver.connect`), the public
methods are concrete and enforce the contract, and subclasses fill in a few
``_underscore`` hooks.  In particular :meth:`Driver.command_velocity` is
concrete: it rejects non-finite commands and clamps every joint to
``limits.max_velocity`` *before* the subclass sees the command, so every
driver carries the same last line of defence whatever its author forgot.

Joint order is always :attr:`Driver.joint_names` order.  Units are SI:
radians, rad/s, seconds.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger("bciarm.drivers")


class DriverError(RuntimeError):
    """A driver could not do what was asked (not connected, no display, ...)."""


def _vector(name: str, values: Any, n: int | None = None) -> np.ndarray:
    a = np.array(values, dtype=float).reshape(-1)
    if n is not None and a.shape != (n,):
        raise ValueError(f"{name} must have {n} entries, got shape {a.shape}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class JointLimits:
    """Position and velocity limits of a device's joints, in joint_names order.

    Attributes
    ----------
    lower, upper : ndarray, shape (n,)
        Position limits, rad.
    max_velocity : ndarray, shape (n,)
        Speed limits, rad/s (positive).
    """

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray

    def __post_init__(self) -> None:
        lower = _vector("lower", self.lower)
        n = lower.size
        upper = _vector("upper", self.upper, n)
        vmax = _vector("max_velocity", self.max_velocity, n)
        if not (np.all(np.isfinite(vmax)) and np.all(vmax > 0)):
            raise ValueError(f"max_velocity must be finite and positive, got {vmax}")
        if np.any(upper < lower):
            raise ValueError(f"upper limits below lower limits: lower={lower}, upper={upper}")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "max_velocity", vmax)

    @property
    def n(self) -> int:
        """Number of joints."""
        return int(self.lower.size)


@dataclass(frozen=True, eq=False)
class JointState:
    """What a device reports: true joint positions and velocities.

    Attributes
    ----------
    position : ndarray, shape (n,)
        rad.
    velocity : ndarray, shape (n,)
        rad/s.
    t_s : float
        Device time of the reading (simulated time for simulated devices,
        monotonic seconds for real ones).
    """

    position: np.ndarray
    velocity: np.ndarray
    t_s: float = 0.0


@dataclass(frozen=True, eq=False)
class RobotModel:
    """Kinematic description of the device, for :class:`~bciarm.effectors.kinematics.ArmKinematics`.

    A real-device driver describes its robot the same way the simulator does,
    so controllers never depend on which driver runs underneath.

    Attributes
    ----------
    urdf : Path
        Robot description file.
    joint_names : tuple of str
        The controlled joints, in command order.
    ee_link : str
        Name of the end-effector link (URDF link frame is used).
    base_position : ndarray, shape (3,)
        World position of the robot base.
    base_orientation : ndarray, shape (4,)
        World orientation of the base, quaternion (x, y, z, w).
    fixed_joints : dict of str to float
        Positions of movable joints that are not controlled (e.g. fingers).
    home : dict of str to float
        Home posture by joint name.
    workspace_lower, workspace_upper : ndarray, shape (3,), or None
        Box (world coordinates) the end-effector must stay in.
    """

    urdf: Path
    joint_names: tuple[str, ...]
    ee_link: str
    base_position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    base_orientation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))
    fixed_joints: dict[str, float] = field(default_factory=dict)
    home: dict[str, float] = field(default_factory=dict)
    workspace_lower: np.ndarray | None = None
    workspace_upper: np.ndarray | None = None

    def home_vector(self) -> np.ndarray:
        """Home posture in joint_names order (joints not named default to 0)."""
        return np.array([float(self.home.get(n, 0.0)) for n in self.joint_names])


class Driver(ABC):
    """Base class of every joint-velocity device driver.

    Subclasses implement :meth:`_connect`, :meth:`_read`,
    :meth:`_command_velocity`, :meth:`_close` and the :attr:`limits` /
    :attr:`joint_names` properties; optionally :meth:`advance`,
    :meth:`show_target` and :meth:`robot_model`.

    Use as a context manager::

        with PyBulletArmDriver() as drv:
            drv.command_velocity(np.zeros(drv.limits.n))
            drv.advance(0.01)
            state = drv.read()

    Attributes
    ----------
    simulated : bool
        True when :meth:`advance` moves time (simulators); False for real
        devices whose time passes on the wall clock.
    paced : bool
        True when :meth:`advance` of a real device *waits* until ``dt`` of
        device time has passed (so a control loop calling it runs at the
        device's pace); False when it returns at once and the caller must wait.
    rejected : int
        Number of commands rejected (non-finite) and replaced by zero.
    clamped : int
        Number of commands in which at least one joint was clamped.
    """

    simulated: ClassVar[bool] = False
    paced: ClassVar[bool] = False

    def __init__(self) -> None:
        self._connected = False
        self._closed = False
        self.rejected = 0
        self.clamped = 0

    # ------------------------------------------------------------------ subclass hooks

    @property
    @abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Names of the controlled joints, in command order."""

    @property
    @abstractmethod
    def limits(self) -> JointLimits:
        """Joint limits in joint_names order (available after connect)."""

    @abstractmethod
    def _connect(self) -> None:
        """Open the device."""

    @abstractmethod
    def _read(self) -> JointState:
        """Read the true joint state."""

    @abstractmethod
    def _command_velocity(self, qdot: np.ndarray) -> None:
        """Send a joint velocity command, already validated and clamped."""

    @abstractmethod
    def _close(self) -> None:
        """Release the device (called at most once)."""

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True between a successful :meth:`connect` and :meth:`close`."""
        return self._connected and not self._closed

    def connect(self) -> "Driver":
        """Open the device; a no-op when already connected.

        Returns
        -------
        Driver
            ``self``, for chaining.
        """
        if self._closed:
            raise DriverError(f"{type(self).__name__} was closed; make a new driver")
        if not self._connected:
            self._connect()
            self._connected = True
        return self

    def _require_connected(self) -> None:
        if not self.connected:
            raise DriverError(f"{type(self).__name__} is not connected; call connect() first")

    def read(self) -> JointState:
        """Current joint positions and velocities (joint_names order)."""
        self._require_connected()
        return self._read()

    def command_velocity(self, qdot: Any) -> np.ndarray:
        """Command joint velocities (rad/s, joint_names order).

        The last line of defence: a command containing NaN or Inf is replaced
        by zero (and counted in :attr:`rejected`); every joint is clamped to
        ``limits.max_velocity`` (counted in :attr:`clamped`).

        Returns
        -------
        ndarray
            The command actually sent.

        Raises
        ------
        ValueError
            Wrong number of entries (a programming error).  The device is
            stopped before raising.
        """
        self._require_connected()
        vmax = self.limits.max_velocity
        try:
            q = np.array(qdot, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            q = None
        if q is None or q.shape != vmax.shape:
            self.stop()
            raise ValueError(
                f"{type(self).__name__}.command_velocity needs {vmax.size} joint velocities "
                f"({', '.join(self.joint_names)}), got {np.shape(qdot)}; device stopped"
            )
        if not np.all(np.isfinite(q)):
            self.rejected += 1
            log.warning("%s: non-finite velocity command %s replaced by zero",
                        type(self).__name__, q)
            q = np.zeros_like(vmax)
        clipped = np.clip(q, -vmax, vmax)
        if np.any(clipped != q):
            self.clamped += 1
        self._command_velocity(clipped)
        return clipped

    def stop(self) -> None:
        """Command zero velocity now (the device brakes as hard as it may)."""
        if self.connected:
            self._command_velocity(np.zeros(self.limits.n))

    def close(self) -> None:
        """Stop and release the device.  Safe to call any number of times."""
        if self._closed:
            return
        try:
            if self.connected:
                try:
                    self.stop()
                except Exception:  # a failing stop must not keep the device open
                    log.exception("%s: stop() failed while closing", type(self).__name__)
                self._close()
        finally:
            self._closed = True

    def advance(self, dt: float) -> None:
        """Let ``dt`` seconds of device time pass.

        Simulated devices step their physics; real devices do nothing (their
        time passes on the wall clock) unless they are :attr:`paced`, in which
        case this waits until the device's own clock has moved on by ``dt``.
        """

    def show_target(self, position: Any, radius: float) -> None:
        """Show a target (visual only, never collides).  Default: no-op."""

    def robot_model(self) -> RobotModel:
        """Describe the robot's kinematics for controllers.

        Raises
        ------
        NotImplementedError
            The driver cannot describe its robot (then the controller needs
            the description from elsewhere).
        """
        raise NotImplementedError(f"{type(self).__name__} does not describe its kinematics")

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> "Driver":
        return self.connect()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort for forgotten drivers
        # At interpreter exit modules are being torn down and the device
        # library may already be gone; the OS releases everything then.
        if sys.meta_path is None:
            return
        try:
            if getattr(self, "_connected", False) and not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass

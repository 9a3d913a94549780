"""A TEST DOUBLE of the ur_rtde interface (``rtde_control`` / ``rtde_receive``).

No offline peer of a Universal Robots controller exists here (URSim is a
Docker image, not a package), so :class:`~bciarm.drivers.ur.URDriver` is
tested against this stand-in.  It is **not** a robot simulator: it
reproduces only what the driver relies on, with the same method names and
signatures as ur_rtde 1.6:

* ``RTDEControlInterface(host)``: ``speedJ(qd, acceleration, time)``,
  ``speedL(xd, acceleration, time)``, ``speedStop(a)``,
  ``setWatchdog(min_frequency)``, ``kickWatchdog()``, ``isConnected()``,
  ``isProgramRunning()``, ``reuploadScript()``, ``stopScript()``,
  ``disconnect()``, ``reconnect()``;
* ``RTDEReceiveInterface(host)``: ``getActualQ()``, ``getActualQd()``,
  ``getActualTCPSpeed()``, ``getTimestamp()``, ``getSafetyMode()``,
  ``getRobotMode()``, ``isProtectiveStopped()``, ``isEmergencyStopped()``,
  ``isConnected()``, ``disconnect()``, ``reconnect()``.

Behaviour, on the wall clock (integrated lazily at every call, so it is
exact and needs no thread): each joint ramps toward its ``speedJ`` target at
the given acceleration and holds it; ``speedStop(a)`` ramps to zero at
``a``.  With ``setWatchdog(f)`` armed, no ``kickWatchdog`` for ``1/f`` s
stops the control script the way the real one does (ramp to zero at
:attr:`URRTDEDouble.watchdog_decel`; program no longer running; commands
return False until ``reuploadScript``).  :meth:`URRTDEDouble.protective_stop`
and :meth:`URRTDEDouble.emergency_stop` inject safety events (joints brought
to rest at once, safety mode 3 / 7, program stopped);
:meth:`URRTDEDouble.clear_safety_stop` is the operator clearing it.
``speedL`` is integrated in Cartesian space on a point (no kinematics).
Every call is recorded in :attr:`URRTDEDouble.calls` with ``time.monotonic()``.

The steps that validate the driver on a real robot (or URSim) are in the
README, "Real devices: Franka and UR".
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

#: ur_rtde / UR safety modes used here.
SAFETY_NORMAL = 1
SAFETY_PROTECTIVE_STOP = 3
SAFETY_ROBOT_EMERGENCY_STOP = 7
#: UR robot mode RUNNING.
ROBOT_MODE_RUNNING = 7


def _ramp(v: np.ndarray, target: np.ndarray, accel: float,
          dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Per axis: move ``v`` toward ``target`` at ``accel`` for ``dt``; (new v, displacement)."""
    dv = target - v
    t_ramp = np.abs(dv) / max(accel, 1e-9)
    t1 = np.minimum(t_ramp, dt)
    sign = np.sign(dv)
    v1 = v + sign * accel * t1
    disp = v * t1 + 0.5 * sign * accel * t1 ** 2 + target * np.maximum(dt - t_ramp, 0.0)
    v_end = np.where(dt >= t_ramp, target, v1)
    return v_end, disp


class URRTDEDouble:
    """One test-double robot; hand it to ``URDriver(rtde=...)``.

    Parameters
    ----------
    q0 : sequence of float, optional
        Starting joint positions (6), rad.
    watchdog_decel : float
        Deceleration when the RTDE watchdog stops the script, rad/s².

    Attributes
    ----------
    RTDEControlInterface, RTDEReceiveInterface : type
        Classes with ur_rtde's constructors, bound to this robot.
    calls : list of (float, str, tuple)
        Every interface call: ``(time.monotonic(), name, args)``.
    events : list of (float, str)
        Script stops and safety events with their times.
    """

    def __init__(self, q0: Any = None, watchdog_decel: float = 10.0) -> None:
        self.lock = threading.RLock()
        self.q = np.array(q0 if q0 is not None else [0.0, -1.57, 1.57, -1.57, -1.57, 0.0],
                          dtype=float)
        self.qd = np.zeros(6)
        self.target = np.zeros(6)
        self.accel = 1.0
        self.tcp = np.zeros(6)  # speedL: integrated point, not kinematics
        self.tcp_speed = np.zeros(6)
        self.tcp_target = np.zeros(6)
        self.tcp_accel = 0.25
        self.mode = "joint"
        self.t0 = time.monotonic()
        self.t_last = self.t0
        self.program_running = True
        self.safety_mode = SAFETY_NORMAL
        self.connected = False
        self.watchdog_period: float | None = None
        self.last_kick = self.t0
        self.watchdog_decel = float(watchdog_decel)
        self.calls: list[tuple[float, str, tuple]] = []
        self.events: list[tuple[float, str]] = []
        double = self

        class RTDEControlInterface:
            """Test double of ``rtde_control.RTDEControlInterface``."""

            def __init__(self, hostname: str, frequency: float = -1.0, flags: int = 1,
                         ur_cap_port: int = 50002, rt_priority: int = 0) -> None:
                double._call("control.__init__", hostname)
                double.connected = True

            def speedJ(self, qd: list[float], acceleration: float = 0.5,
                       time: float = 0.0) -> bool:
                return double._speed_j(qd, acceleration)

            def speedL(self, xd: list[float], acceleration: float = 0.25,
                       time: float = 0.0) -> bool:
                return double._speed_l(xd, acceleration)

            def speedStop(self, a: float = 10.0) -> bool:
                return double._speed_stop(a)

            def setWatchdog(self, min_frequency: float = 10.0) -> bool:
                with double.lock:
                    double._call("setWatchdog", min_frequency)
                    double.watchdog_period = 1.0 / float(min_frequency)
                    double.last_kick = time_now()
                    return True

            def kickWatchdog(self) -> bool:
                with double.lock:
                    double._advance()
                    double._call("kickWatchdog")
                    double.last_kick = time_now()
                    return double.program_running

            def isConnected(self) -> bool:
                return double.connected

            def isProgramRunning(self) -> bool:
                with double.lock:
                    double._advance()
                    return double.program_running

            def reuploadScript(self) -> bool:
                with double.lock:
                    double._advance()
                    double._call("reuploadScript")
                    if double.safety_mode != SAFETY_NORMAL:
                        return False
                    double.program_running = True
                    double.last_kick = time_now()
                    return True

            def stopScript(self) -> None:
                with double.lock:
                    double._advance()
                    double._call("stopScript")
                    double._stop_script("stopScript", double.watchdog_decel)

            def disconnect(self) -> None:
                double._call("control.disconnect")
                double.connected = False

            def reconnect(self) -> bool:
                double._call("control.reconnect")
                double.connected = True
                return True

        class RTDEReceiveInterface:
            """Test double of ``rtde_receive.RTDEReceiveInterface``."""

            def __init__(self, hostname: str, frequency: float = -1.0,
                         variables: list[str] | None = None, verbose: bool = False,
                         use_upper_range_registers: bool = False, rt_priority: int = 0) -> None:
                double._call("receive.__init__", hostname)

            def _get(self, attr: str) -> list[float]:
                with double.lock:
                    double._advance()
                    return getattr(double, attr).tolist()

            def getActualQ(self) -> list[float]:
                return self._get("q")

            def getActualQd(self) -> list[float]:
                return self._get("qd")

            def getActualTCPSpeed(self) -> list[float]:
                return self._get("tcp_speed")

            def getTimestamp(self) -> float:
                with double.lock:
                    double._advance()
                    return double.t_last - double.t0

            def getSafetyMode(self) -> int:
                return double.safety_mode

            def getRobotMode(self) -> int:
                return ROBOT_MODE_RUNNING

            def isProtectiveStopped(self) -> bool:
                return double.safety_mode == SAFETY_PROTECTIVE_STOP

            def isEmergencyStopped(self) -> bool:
                return double.safety_mode == SAFETY_ROBOT_EMERGENCY_STOP

            def isConnected(self) -> bool:
                return double.connected

            def disconnect(self) -> None:
                double._call("receive.disconnect")

            def reconnect(self) -> bool:
                return True

        def time_now() -> float:
            return time.monotonic()

        self.RTDEControlInterface = RTDEControlInterface
        self.RTDEReceiveInterface = RTDEReceiveInterface

    # ------------------------------------------------------------------ dynamics

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((time.monotonic(), name, args))

    def _integrate(self, dt: float) -> None:
        if dt <= 0:
            return
        if self.mode == "joint":
            self.qd, disp = _ramp(self.qd, self.target, self.accel, dt)
            self.q = self.q + disp
        else:
            self.tcp_speed, disp = _ramp(self.tcp_speed, self.tcp_target, self.tcp_accel, dt)
            self.tcp = self.tcp + disp

    def _advance(self, now: float | None = None) -> None:
        """Integrate up to ``now``, tripping the watchdog at its exact time if it lapsed."""
        now = time.monotonic() if now is None else now
        if (self.watchdog_period is not None and self.program_running
                and now - self.last_kick > self.watchdog_period):
            trip = self.last_kick + self.watchdog_period
            self._integrate(trip - self.t_last)
            self.t_last = max(self.t_last, trip)
            self._stop_script("watchdog", self.watchdog_decel)
        self._integrate(now - self.t_last)
        self.t_last = max(self.t_last, now)

    def _stop_script(self, why: str, decel: float) -> None:
        self.program_running = False
        self.target = np.zeros(6)
        self.tcp_target = np.zeros(6)
        self.accel = self.tcp_accel = decel
        self.events.append((self.t_last, f"script stopped: {why}"))

    def _speed_j(self, qd: Any, acceleration: float) -> bool:
        with self.lock:
            self._advance()
            self._call("speedJ", list(qd), acceleration)
            if not self.program_running or self.safety_mode != SAFETY_NORMAL:
                return False
            if self.mode != "joint":
                self.mode, self.tcp_speed = "joint", np.zeros(6)
            self.target = np.array(qd, dtype=float)
            self.accel = float(acceleration)
            return True

    def _speed_l(self, xd: Any, acceleration: float) -> bool:
        with self.lock:
            self._advance()
            self._call("speedL", list(xd), acceleration)
            if not self.program_running or self.safety_mode != SAFETY_NORMAL:
                return False
            if self.mode != "cartesian":
                self.mode, self.qd = "cartesian", np.zeros(6)
            self.tcp_target = np.array(xd, dtype=float)
            self.tcp_accel = float(acceleration)
            return True

    def _speed_stop(self, a: float) -> bool:
        with self.lock:
            self._advance()
            self._call("speedStop", a)
            self.target = np.zeros(6)
            self.tcp_target = np.zeros(6)
            self.accel = self.tcp_accel = float(a)
            return self.program_running

    # ------------------------------------------------------------------ fault injection

    def _safety_stop(self, mode: int, what: str) -> None:
        with self.lock:
            self._advance()
            self.safety_mode = mode
            self.program_running = False
            self.qd = np.zeros(6)
            self.target = np.zeros(6)
            self.tcp_speed = np.zeros(6)
            self.tcp_target = np.zeros(6)
            self.events.append((self.t_last, what))

    def protective_stop(self) -> None:
        """The controller enters a protective stop (a collision, a limit): stopped, script ends."""
        self._safety_stop(SAFETY_PROTECTIVE_STOP, "protective stop")

    def emergency_stop(self) -> None:
        """The e-stop button: stopped, script ends."""
        self._safety_stop(SAFETY_ROBOT_EMERGENCY_STOP, "emergency stop")

    def clear_safety_stop(self) -> None:
        """The operator clears the stop (pendant / dashboard); the script must be re-uploaded."""
        with self.lock:
            self._advance()
            self.safety_mode = SAFETY_NORMAL
            self.events.append((self.t_last, "safety stop cleared"))

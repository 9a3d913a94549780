"""UR driver against a TEST DOUBLE of the ur_rtde interface (no offline UR peer exists).

``bciarm.testing.ur_rtde_double.URRTDEDouble`` stands in for the robot's
RTDE control/receive interfaces; the steps that validate the driver on a
real UR (or URSim) are in the README ("Real devices: Franka and UR").
Times are read from the double's controller clock (``getTimestamp``).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from bciarm.drivers.base import DriverError
from bciarm.drivers.ur import SCRIPT_STOPPED, URDriver
from bciarm.testing.ur_rtde_double import URRTDEDouble


def calls(double, name):
    return [c for c in double.calls if c[1] == name]


@pytest.fixture
def rig():
    double = URRTDEDouble()
    drv = URDriver(host="ur-test-double", rtde=double, command_timeout_s=0.1)
    drv.connect()
    yield double, drv
    drv.close()


def run(drv, qdot, seconds):
    for _ in range(int(round(seconds / 0.01))):
        drv.command_velocity(qdot)
        drv.advance(0.01)


def test_connect_arms_the_rtde_watchdog_and_speedj_kicks_it(rig):
    double, drv = rig
    assert calls(double, "setWatchdog")[0][2] == (pytest.approx(10.0),)  # 1 / 0.1 s
    qdot = np.array([0.2, -0.1, 0.0, 0.0, 0.0, 0.3])
    run(drv, qdot, 0.5)
    sent = calls(double, "speedJ")
    assert len(sent) == 50 and np.allclose(sent[-1][2][0], qdot) and sent[-1][2][1] == drv.accel
    assert len(calls(double, "kickWatchdog")) >= 50
    state = drv.read()
    assert np.allclose(state.velocity, qdot)
    assert state.position[0] == pytest.approx(0.2 * 0.5 - 0.2 ** 2 / (2 * drv.accel), abs=0.02)


def test_command_velocity_clamps_to_the_speed_limit(rig):
    double, drv = rig
    sent = drv.command_velocity(np.full(6, 10.0))
    assert np.allclose(sent, 1.0) and np.allclose(calls(double, "speedJ")[-1][2][0], 1.0)


def test_watchdog_stops_the_robot_when_commands_cease_and_a_new_command_restarts(rig):
    double, drv = rig
    run(drv, np.full(6, 0.3), 0.4)
    t_last = drv.read().t_s
    while True:  # send nothing; watch the controller's clock
        drv.advance(0.01)
        state = drv.read()
        if np.all(np.abs(state.velocity) < 1e-6):
            break
        assert state.t_s - t_last < 1.0, "the RTDE watchdog never stopped the robot"
    took = state.t_s - t_last
    # The double's script stops at the missed kick, then brakes at watchdog_decel.
    assert took <= drv.command_timeout_s + 0.3 / double.watchdog_decel + 0.02
    assert any("watchdog" in e[1] for e in double.events)
    assert drv.faulted == SCRIPT_STOPPED
    print(f"\nUR double: at rest {took * 1e3:.0f} ms after the last command "
          f"(RTDE watchdog {drv.command_timeout_s} s)")
    # A fresh command re-uploads the script and moves again.
    run(drv, np.full(6, 0.2), 0.3)
    assert calls(double, "reuploadScript") and not drv.faulted
    assert np.allclose(drv.read().velocity, 0.2)


def test_protective_stop_is_detected_and_needs_a_person(rig):
    double, drv = rig
    run(drv, np.full(6, 0.2), 0.2)
    double.protective_stop()
    drv.read()
    assert drv.faulted == "protective stop"
    n = len(calls(double, "speedJ"))
    run(drv, np.full(6, 0.2), 0.1)
    assert len(calls(double, "speedJ")) == n and drv.dropped >= 10  # nothing reached the robot
    assert np.all(drv.read().velocity == 0)
    with pytest.raises(DriverError, match="still in safety mode 3 \\(protective stop\\)"):
        drv.reset_fault()
    double.clear_safety_stop()  # the operator, on the pendant
    drv.reset_fault()
    run(drv, np.full(6, 0.2), 0.3)
    assert np.allclose(drv.read().velocity, 0.2) and drv.safety_events[0][1] == "protective stop"


def test_emergency_stop_is_detected(rig):
    double, drv = rig
    double.emergency_stop()
    drv.read()
    assert drv.faulted == "emergency stop"


def test_connect_refuses_a_robot_in_a_safety_stop():
    double = URRTDEDouble()
    double.protective_stop()
    with pytest.raises(DriverError, match="protective stop; clear it on the pendant"):
        URDriver(host="ur-test-double", rtde=double).connect()


def test_speedl_is_guarded(rig):
    double, drv = rig
    sent = drv.command_cartesian_velocity([1.0, 0.0, 0.0, 0.0, 0.0, 5.0])
    assert np.allclose(sent, [drv.tcp_max_speed, 0, 0, 0, 0, drv.tcp_max_angular_speed])
    assert np.allclose(calls(double, "speedL")[-1][2][0], sent) and drv.clamped == 1
    assert np.all(drv.command_cartesian_velocity([np.nan] * 6) == 0) and drv.rejected == 1
    with pytest.raises(ValueError, match="6 entries"):
        drv.command_cartesian_velocity([0.1, 0.0])
    assert calls(double, "speedStop"), "a wrong-size command must stop the arm"


def test_stop_and_close_use_speedstop_then_end_the_script(rig):
    double, drv = rig
    drv.stop()
    assert calls(double, "speedStop")[-1][2] == (drv.stop_decel,)
    drv.close()
    names = [c[1] for c in double.calls]
    assert names[-4:] == ["speedStop", "stopScript", "control.disconnect", "receive.disconnect"]


def test_missing_ur_rtde_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rtde_control", None)  # import raises ImportError
    with pytest.raises(DriverError, match=r"pip install 'bciarm\[ur\]'"):
        URDriver(host="127.0.0.1").connect()


def test_real_ur_rtde_installs_and_has_the_methods_the_driver_uses():
    rtde_control = pytest.importorskip("rtde_control", reason="ur-rtde not installed")
    import rtde_receive

    for name in ("speedJ", "speedL", "speedStop", "setWatchdog", "kickWatchdog",
                 "isProgramRunning", "reuploadScript", "stopScript", "disconnect"):
        assert hasattr(rtde_control.RTDEControlInterface, name), name
    for name in ("getActualQ", "getActualQd", "getTimestamp", "getSafetyMode",
                 "isProtectiveStopped", "isEmergencyStopped", "disconnect"):
        assert hasattr(rtde_receive.RTDEReceiveInterface, name), name
    # The double mirrors the same names (so the tests above exercise the real call shapes).
    double = URRTDEDouble()
    for name in ("speedJ", "speedL", "speedStop", "setWatchdog", "kickWatchdog"):
        assert hasattr(double.RTDEControlInterface, name), name


def test_connecting_to_nobody_fails_plainly():
    pytest.importorskip("rtde_control", reason="ur-rtde not installed")
    t0 = time.monotonic()
    with pytest.raises(DriverError, match="could not connect to the UR controller at 127.0.0.1"):
        URDriver(host="127.0.0.1").connect()  # nothing serves RTDE on this machine
    assert time.monotonic() - t0 < 60


def test_an_arm_with_a_gripper_is_refused_on_ur_before_it_moves():
    """ur-rtde's Python API has no gripper: the grasp axis (which needs `gripper`) is refused
    at start, naming why -- before kinematics are even looked at (no UR URDF ships)."""
    from bciarm.drivers.gripper import has_gripper
    from bciarm.effectors.arm import ArmController

    double = URRTDEDouble()
    drv = URDriver(host="ur-test-double", rtde=double, command_timeout_s=0.1)
    assert not has_gripper(drv)
    ctl = ArmController(drv, axes=("x", "y", "z", "grasp"), gripper={})
    try:
        with pytest.raises(ValueError, match=r"URDriver has no gripper.*ur-rtde's Python API "
                                             r"has no gripper interface"):
            ctl.start(0.0)
        assert not calls(double, "speedJ") and not calls(double, "speedL")
    finally:
        drv.close()

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
    """Without `gripper: robotiq` the UR driver has no gripper (ur-rtde's Python API has none):
    the grasp axis (which needs `gripper`) is refused at start, naming why and the fix --
    before kinematics are even looked at (no UR URDF ships)."""
    from bciarm.drivers.gripper import has_gripper
    from bciarm.effectors.arm import ArmController

    double = URRTDEDouble()
    drv = URDriver(host="ur-test-double", rtde=double, command_timeout_s=0.1)
    assert not has_gripper(drv)
    ctl = ArmController(drv, axes=("x", "y", "z", "grasp"), gripper={})
    try:
        with pytest.raises(ValueError, match=r"URDriver has no gripper.*ur-rtde's Python API "
                                             r"has no gripper interface.*gripper: robotiq"):
            ctl.start(0.0)
        assert not calls(double, "speedJ") and not calls(double, "speedL")
    finally:
        drv.close()


def test_speedl_passes_angular_velocity_and_caps_it_by_its_norm(rig):
    """The wrist part of a twist reaches speedL unchanged under tcp_max_angular_speed, and over
    it is scaled down along its own direction (the linear part untouched)."""
    double, drv = rig
    twist = [0.05, 0.0, -0.02, 0.3, -0.2, 0.4]
    sent = drv.command_cartesian_velocity(twist)
    assert np.allclose(sent, twist) and drv.clamped == 0
    assert np.allclose(calls(double, "speedL")[-1][2][0], twist)
    t0 = drv.read().t_s
    for _ in range(50):  # 0.5 s; the double ramps each axis at speedL's acceleration (as speedl's
        drv.command_cartesian_velocity(twist)  # aRot defaults to a): accel * 0.125
        drv.advance(0.01)
    ramp = (drv.read().t_s - t0) * drv.accel * 0.125
    expect = np.sign(twist) * np.minimum(np.abs(twist), ramp)
    assert np.allclose(double.RTDEReceiveInterface("x").getActualTCPSpeed(), expect, atol=0.01)
    w = np.array([3.0, -4.0, 0.0])  # |w| = 5 rad/s
    sent = drv.command_cartesian_velocity([0.1, 0.0, 0.0, *w])
    assert np.allclose(sent[3:], w / 5.0 * drv.tcp_max_angular_speed) and drv.clamped == 1
    assert np.allclose(sent[:3], [0.1, 0.0, 0.0])


#: A UR5e's kinematic chain (ur_description's joint origins; masses and meshes left out).
UR5E_URDF = """<?xml version="1.0"?>
<robot name="ur5e_kinematics">
  {links}
  {joints}
</robot>
"""
_UR5E_JOINTS = [  # name, parent, child, xyz, rpy
    ("shoulder_pan_joint", "base_link", "shoulder_link", "0 0 0.1625", "0 0 0"),
    ("shoulder_lift_joint", "shoulder_link", "upper_arm_link", "0 0 0", "1.570796 0 0"),
    ("elbow_joint", "upper_arm_link", "forearm_link", "-0.425 0 0", "0 0 0"),
    ("wrist_1_joint", "forearm_link", "wrist_1_link", "-0.3922 0 0.1333", "0 0 0"),
    ("wrist_2_joint", "wrist_1_link", "wrist_2_link", "0 -0.0997 0", "1.570796 0 0"),
    ("wrist_3_joint", "wrist_2_link", "wrist_3_link", "0 0.0996 0", "1.570796 3.141593 3.141593"),
]


def ur5e_urdf(path):
    links = ["base_link"] + [j[2] for j in _UR5E_JOINTS] + ["tool0"]
    link_xml = "\n  ".join(
        f'<link name="{n}"><inertial><mass value="1"/><inertia ixx="0.01" ixy="0" ixz="0" '
        f'iyy="0.01" iyz="0" izz="0.01"/></inertial></link>' for n in links)
    joint_xml = "\n  ".join(
        f'<joint name="{n}" type="revolute"><parent link="{p}"/><child link="{c}"/>'
        f'<origin xyz="{xyz}" rpy="{rpy}"/><axis xyz="0 0 1"/>'
        f'<limit lower="-6.2832" upper="6.2832" effort="150" velocity="3.14"/></joint>'
        for n, p, c, xyz, rpy in _UR5E_JOINTS)
    joint_xml += ('\n  <joint name="wrist_3-tool0" type="fixed"><parent link="wrist_3_link"/>'
                  '<child link="tool0"/><origin xyz="0 0.0996 0" rpy="-1.570796 0 0"/></joint>')
    path.write_text(UR5E_URDF.format(links=link_xml, joints=joint_xml))
    return path


def test_a_7d_session_drives_the_ur_wrist_and_a_robotiq_gripper(tmp_path):
    """A 7-D arm (x, y, z, roll, pitch, yaw, grasp) on the UR driver: the wrist axes become
    speedJ joint rates through the arm's kinematics (a minimal UR5e URDF written here: none ships
    with bciarm) and turn the tool; the grasp axis drives the Robotiq TEST DOUBLE."""
    from scipy.spatial.transform import Rotation

    from bciarm.effectors.arm import ArmController
    from bciarm.testing.robotiq_double import RobotiqDouble

    urdf = ur5e_urdf(tmp_path / "ur5e.urdf")
    axes = ("x", "y", "z", "roll", "pitch", "yaw", "grasp")
    with RobotiqDouble(object_width=0.04) as rq:
        double = URRTDEDouble()
        drv = URDriver(host="ur-test-double", rtde=double, urdf=str(urdf), ee_link="tool0",
                       gripper="robotiq", gripper_host="127.0.0.1", gripper_port=rq.port)
        ctl = ArmController(drv, axes=axes, max_speed=0.15,
                            gripper={"grip_force": 40.0},
                            wrist={"max_tilt_deg": 45.0, "max_yaw_deg": 90.0})
        ctl.start(0.0)
        try:
            q0 = ctl.last.orientation if ctl.last is not None else None
            r0 = Rotation.from_quat(q0) if q0 is not None else None
            t, st = 0.0, None
            for _ in range(60):  # 0.6 s of yaw at 0.4 rad/s
                t += 0.01
                st = ctl.update([0, 0, 0, 0, 0, 0.4, 0.0], t)
            assert st is not None and not st.estopped
            sent = calls(double, "speedJ")
            assert sent and max(abs(c[2][0][5]) for c in sent) > 0.1, "no wrist joint rate"
            assert r0 is not None
            rotvec = (Rotation.from_quat(st.orientation) * r0.inv()).as_rotvec()
            turned = float(np.linalg.norm(rotvec))
            # About the vertical, at most 0.4 rad/s x 0.6 s (less the ramp up).
            assert 0.15 < turned <= 0.4 * 0.6 + 0.01, f"the tool turned {turned:.3f} rad"
            assert abs(rotvec[2]) > 0.95 * turned, f"turned about {rotvec}, not the vertical"
            deadline = time.monotonic() + 3.0
            while not (st.gripper is not None and st.gripper.holding):
                assert time.monotonic() < deadline, f"no grasp: {st.gripper}"
                t += 0.01
                st = ctl.update([0, 0, 0, 0, 0, 0, -0.08], t)
            assert st.gripper.aperture == pytest.approx(0.04, abs=0.001)
            print(f"\nUR 7-D on the doubles: tool turned {np.degrees(turned):.0f} deg in 0.6 s "
                  f"at 0.4 rad/s yaw; grasped a 4 cm object at {st.gripper.force:.1f} N")
        finally:
            ctl.close()

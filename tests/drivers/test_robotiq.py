"""Robotiq 2F gripper on the UR driver, against TEST DOUBLES (no offline peer exists).

The Robotiq URCap's socket runs inside the UR controller, so
``bciarm.testing.robotiq_double.RobotiqDouble`` (a TCP server on 127.0.0.1
speaking the URCap's ASCII protocol, fingers simulated at the commanded
speed) stands in for the gripper, and ``URRTDEDouble`` for the arm.  What
needs hardware to validate (calibration, real forces, URCap timing) is in
the README, "Reach and grasp -- on hardware".  Every wait is on a condition
with a deadline.
"""

from __future__ import annotations

import math
import time

import pytest

from bciarm.bus.messages import GRASP_CLOSE, GRASP_NONE
from bciarm.drivers.base import DriverError
from bciarm.drivers.robotiq import MODELS, RobotiqGripper
from bciarm.drivers.ur import URDriver
from bciarm.effectors.grasp import GripperGuard, GripperParams
from bciarm.testing import check_driver
from bciarm.testing.robotiq_double import RobotiqDouble
from bciarm.testing.ur_rtde_double import URRTDEDouble

TICK = 0.01


def make(rq: RobotiqDouble, **kw) -> tuple[URRTDEDouble, URDriver]:
    arm = URRTDEDouble()
    drv = URDriver(host="ur-test-double", rtde=arm, gripper="robotiq",
                   gripper_host="127.0.0.1", gripper_port=rq.port, **kw)
    drv.connect()
    return arm, drv


@pytest.fixture
def rq():
    with RobotiqDouble(object_width=0.03) as double:
        yield double


@pytest.fixture
def rig(rq):
    arm, drv = make(rq)
    yield rq, arm, drv
    drv.close()


def until(cond, drv, v, force, within_s, what):
    """Command the gripper every tick until ``cond()``; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} not within {within_s} s: " \
                                            f"{drv.read_gripper()}"
        if v is not None:
            drv.command_gripper(v, force)
        drv.advance(TICK)
    return drv.read_gripper()


def test_connect_activates_the_gripper_and_enables_motion(rig):
    rq, _, drv = rig
    lines = [s for _, s in rq.sets]
    assert lines[:2] == ["SET ACT 1", "SET GTO 1"] and rq.vars["STA"] == 3
    assert drv.has_gripper() and drv.gripper_limits().max_aperture == MODELS["2F-85"].stroke
    st = drv.read_gripper()
    assert st.aperture == pytest.approx(0.085) and not st.holding
    # An already active gripper is not activated again (its fingers would move).
    _, drv2 = make(rq)
    try:
        assert [s for _, s in rq.sets][2:] == ["SET GTO 1"]
    finally:
        drv2.close()


def test_close_on_an_object_holds_it_then_opens(rig):
    rq, _, drv = rig
    st = until(lambda: drv.read_gripper().holding, drv, -0.1, 40.0, 3.0, "grasp")
    assert st.aperture == pytest.approx(0.03, abs=0.001) and rq.vars["OBJ"] == 2
    # FOR: the largest count whose force does not exceed 40 N (independent of the client).
    lo, hi = MODELS["2F-85"].force
    n = max(k for k in range(256) if lo + (hi - lo) * k / 255 <= 40.0)
    assert rq.vars["FOR"] == n and st.force == pytest.approx(lo + (hi - lo) * n / 255)
    # Holding: more closing asks send nothing new (the squeeze goes on).
    sent = len(rq.sets)
    for _ in range(20):
        drv.command_gripper(-0.1, 40.0)
        drv.advance(TICK)
    assert len(rq.sets) == sent and drv.read_gripper().holding
    st = until(lambda: drv.read_gripper().aperture > 0.06, drv, 0.1, 40.0, 3.0, "opening")
    assert not st.holding
    # Speed: SPE maps 0.1 m/s into the 2F-85's 20..150 mm/s.
    assert rq.vars["SPE"] == round((0.1 - 0.02) / 0.13 * 255)


def test_nothing_between_the_fingers_closes_fully_and_is_not_held(rq):
    rq.object_width = None
    _, drv = make(rq)
    try:
        st = until(lambda: drv.read_gripper().aperture < 0.002, drv, -0.15, 50.0, 3.0, "close")
        assert not st.holding and st.force == 0.0
    finally:
        drv.close()


def test_speed_and_force_are_clamped(rq):
    _, drv = make(rq, gripper_max_force=100.0)
    try:
        drv.command_gripper(-10.0, 1e6)  # 10 m/s and a meganewton asked
        deadline = time.monotonic() + 2.0
        while not rq.sets[-1][1].startswith("SET POS"):
            assert time.monotonic() < deadline
            drv.advance(TICK)
        lo, hi = MODELS["2F-85"].force
        assert rq.vars["SPE"] == 255  # the top speed, 150 mm/s
        assert lo + (hi - lo) * rq.vars["FOR"] / 255 <= 100.0 < lo + (hi - lo) * (
            rq.vars["FOR"] + 1) / 255
        # The target is a lookahead of the top speed ahead, not the full stroke.
        assert rq.vars["POS"] <= round(0.15 * drv.gripper.lookahead_s / 0.085 * 255) + 1
    finally:
        drv.close()
    with pytest.raises(ValueError, match=r"gripper_max_force must be within the 2F-85's grip "
                                         r"force range \[20, 235\] N"):
        URDriver(host="x", gripper="robotiq", gripper_max_force=300)
    with pytest.raises(ValueError, match="gripper_model must be one of"):
        URDriver(host="x", gripper="robotiq", gripper_model="3F")
    with pytest.raises(ValueError, match="gripper must be 'robotiq' or none"):
        URDriver(host="x", gripper="hand-e")


def guard_tick(guard, drv, estopped, click=GRASP_NONE, aperture_v=None):
    """What the arm effector does each tick (bciarm.effectors.arm.ArmController.update)."""
    cmd = guard.command(aperture_v, click, True, estopped, drv.read_gripper())
    drv.command_gripper(cmd.velocity, cmd.force)
    if estopped:
        drv.stop()
    drv.advance(TICK)


def test_estop_keeps_a_held_grasp(rig):
    rq, arm, drv = rig
    guard = GripperGuard(GripperParams(grip_force=30.0), drv.gripper_limits(), TICK)
    guard_tick(guard, drv, False, click=GRASP_CLOSE)
    deadline = time.monotonic() + 3.0
    while not drv.read_gripper().holding:
        assert time.monotonic() < deadline, "the click did not grasp"
        guard_tick(guard, drv, False)
    sent = len(rq.sets)
    for _ in range(30):  # 0.3 s of e-stop
        guard_tick(guard, drv, True)
    st = drv.read_gripper()
    assert st.holding and st.aperture == pytest.approx(0.03, abs=0.001)
    assert len(rq.sets) == sent, f"e-stop sent the gripper {[s for _, s in rq.sets[sent:]]}"
    assert [c for c in arm.calls if c[1] == "speedStop"], "the arm got no speedStop"
    # A held grasp made with the continuous aperture (no click) is kept too.
    guard2 = GripperGuard(GripperParams(grip_force=30.0), drv.gripper_limits(), TICK)
    for _ in range(10):
        guard_tick(guard2, drv, True, aperture_v=0.1)
    assert drv.read_gripper().holding and len(rq.sets) == sent


@pytest.mark.parametrize("opening", [True, False])
def test_a_moving_gripper_stops_on_estop(rq, opening):
    rq.object_width = None
    if opening:
        rq.position = 255.0
    _, drv = make(rq)
    try:
        guard = GripperGuard(GripperParams(grip_force=30.0), drv.gripper_limits(), TICK)
        v = 0.1 if opening else -0.1
        w0 = drv.read_gripper().aperture
        deadline = time.monotonic() + 2.0
        while abs(drv.read_gripper().aperture - w0) < 0.02:
            assert time.monotonic() < deadline
            guard_tick(guard, drv, False, aperture_v=v)
        t_stop, w_stop = time.monotonic(), rq.width
        guard_tick(guard, drv, True, aperture_v=v)
        deadline = t_stop + 1.0
        while rq.moving:
            assert time.monotonic() < deadline, "the fingers still move 1 s after the e-stop"
            guard_tick(guard, drv, True, aperture_v=v)
        took, travel = time.monotonic() - t_stop, abs(rq.width - w_stop)
        assert rq.sets[-1][1].startswith(f"SET POS {round(rq.position)} ")  # re-targeted
        # Bounded: at most the lookahead at the asked speed (plus a poll period of travel).
        assert travel <= 0.1 * (drv.gripper.lookahead_s + 0.05)
        print(f"\nRobotiq double: {'opening' if opening else 'closing'} fingers at rest "
              f"{took * 1e3:.0f} ms / {travel * 1e3:.1f} mm after the e-stop")
    finally:
        drv.close()


def test_a_dead_socket_faults_the_driver_and_stops_the_arm(rig):
    rq, arm, drv = rig
    for _ in range(10):
        drv.command_velocity([0.2] * 6)
        drv.advance(TICK)
    rq.kill()
    t0 = time.monotonic()
    with pytest.raises(DriverError, match=r"RobotiqGripper at 127\.0\.0\.1:\d+: (socket failed|"
                                          r"no state)"):
        while True:
            assert time.monotonic() - t0 < 2.0, "a dead gripper socket went unnoticed"
            drv.read_gripper()
            drv.advance(TICK)
    print(f"\nRobotiq double: dead socket reported after {(time.monotonic() - t0) * 1e3:.0f} ms")
    assert drv.faulted.startswith("gripper: ")
    assert any(c[1] == "speedStop" for c in arm.calls if c[0] >= t0)
    n = len([c for c in arm.calls if c[1] == "speedJ"])
    drv.command_velocity([0.2] * 6)
    assert len([c for c in arm.calls if c[1] == "speedJ"]) == n and drv.dropped >= 1
    with pytest.raises(DriverError, match="the gripper is still faulted"):
        drv.reset_fault()


def test_a_gripper_fault_names_its_reason(rig):
    rq, arm, drv = rig
    rq.fault(14)
    deadline = time.monotonic() + 2.0
    with pytest.raises(DriverError, match=r"fault 14 \(overcurrent triggered\)"):
        while True:
            assert time.monotonic() < deadline
            drv.read_gripper()
            drv.advance(TICK)
    assert any(c[1] == "speedStop" for c in arm.calls)


def test_bad_replies_are_rejected_clearly(rig):
    rq, _, drv = rig
    rq.garbage = True
    deadline = time.monotonic() + 2.0
    with pytest.raises(DriverError, match=r"answered '\?!garbage', expected"):
        while True:
            assert time.monotonic() < deadline
            drv.read_gripper()
            drv.advance(TICK)


def test_question_marks_during_a_robot_estop_go_stale(rig):
    rq, _, drv = rig
    rq.estopped = True
    deadline = time.monotonic() + 3.0
    with pytest.raises(DriverError, match=r"no state for .* s \(last: the gripper answers '\?'"):
        while True:
            assert time.monotonic() < deadline
            drv.read_gripper()
            drv.advance(TICK)


def test_no_gripper_at_the_address_fails_plainly_and_leaves_the_arm_closed(rq):
    port = rq.port
    rq.kill()
    arm = URRTDEDouble()
    drv = URDriver(host="ur-test-double", rtde=arm, gripper="robotiq",
                   gripper_host="127.0.0.1", gripper_port=port)
    with pytest.raises(DriverError, match="no Robotiq gripper answers at 127.0.0.1"):
        drv.connect()
    assert [c[1] for c in arm.calls][-2:] == ["control.disconnect", "receive.disconnect"]


def test_the_urcap_reply_without_a_newline_is_read():
    """The URCap answers ``ack`` / ``POS 12`` without a line end; the client accepts both."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    values = {"STA": 3, "POS": 12, "OBJ": 3, "FLT": 0}

    def serve():  # one request per recv (the client waits for each reply)
        conn, _ = srv.accept()
        with conn:
            while request := conn.recv(64).decode().split():
                reply = "ack" if request[0] == "SET" else f"{request[1]} {values[request[1]]}"
                conn.sendall(reply.encode())  # no line end, as the URCap

    threading.Thread(target=serve, daemon=True).start()
    g = RobotiqGripper("127.0.0.1", srv.getsockname()[1])
    g.open()
    try:
        assert g.read().aperture == pytest.approx(0.085 * (1 - 12 / 255))
    finally:
        g.close()
        srv.close()


def test_the_driver_contract_passes_on_ur_with_the_robotiq_double(rq):
    rq.object_width = None

    def factory():
        return URDriver(host="ur-test-double", rtde=URRTDEDouble(), gripper="robotiq",
                        gripper_host="127.0.0.1", gripper_port=rq.port)

    from bciarm.testing.driver_checks import run_driver_checks

    report = run_driver_checks(factory, 0.01, 1.0, speed_limit=True)
    steps = {s.name: s for s in report.steps}
    assert not report.failures, [f.detail for f in report.failures]
    assert steps["gripper"].detail.startswith("closed "), steps["gripper"].detail
    print("\n" + steps["gripper"].detail)
    check_driver(factory)
    assert math.isfinite(rq.width)


def test_calibrated_positions_map_to_the_stroke():
    g = RobotiqGripper("127.0.0.1", model="2F-140", pos_open=3, pos_closed=230)
    assert g.width_of(3) == pytest.approx(0.140) and g.width_of(230) == 0.0
    assert g.width_of(116.5) == pytest.approx(0.070) and g.width_of(250) == 0.0
    assert g.pos_of(0.140) == 3 and g.pos_of(0.0) == 230 and g.pos_of(1.0) == 3
    with pytest.raises(ValueError, match="gripper_pos_open / gripper_pos_closed"):
        URDriver(host="x", gripper="robotiq", gripper_pos_open=200, gripper_pos_closed=100)

"""Exoskeleton controller and node on the simulated exoskeleton (pybullet, simulated clock).

Positions are read from the physics (``driver.read()``), and the range of
motion from the profile file itself, not from what the controller believes.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import EffectorState, Event, Intent, TaskState
from bciarm.drivers.pybullet_exo import PyBulletExoDriver
from bciarm.effectors.exoskeleton import ExoController, ExoEffector, load_profile, reading_of
from bciarm.effectors.exoskeleton.dynamics import GravityModel

JOINTS = ("shoulder_flexion", "shoulder_abduction", "elbow_flexion", "forearm_pronation",
          "wrist_flexion")
PROFILE = load_profile("example")
ROM_LO, ROM_HI = PROFILE.rom(JOINTS)
ACTIVE = [JOINTS.index(j) for j in PROFILE.active]
TICK = 0.01


def inside_rom(q: np.ndarray) -> bool:
    return bool(np.all(q >= ROM_LO) and np.all(q <= ROM_HI))


@pytest.fixture
def ctl():
    c = ExoController(PyBulletExoDriver())
    c.start()
    yield c
    c.close()


def run(c: ExoController, intent, seconds: float):
    """Feed ``intent`` every tick for ``seconds``; yield the measured joint angles."""
    for _ in range(int(round(seconds / TICK))):
        c.update(intent)
        yield np.asarray(c.driver.read().position)


# --------------------------------------------------------------------------- gravity


def test_gravity_model_matches_statics_of_the_urdf():
    """ID(q, 0, 0) against an independent statics sum: τ = Σ (r_com − r_axis) × m g · axis."""
    drv = PyBulletExoDriver()
    drv.connect()
    try:
        grav = GravityModel(drv.robot_model())
        cid, body = drv.client_id, drv.handles.robot
        rng = np.random.default_rng(1)
        for _ in range(5):
            q = rng.uniform(ROM_LO, ROM_HI)
            drv.reset_posture(q)
            n_links = p.getNumJoints(body, physicsClientId=cid)
            coms = [np.array(p.getLinkState(body, i, computeForwardKinematics=1,
                                            physicsClientId=cid)[0]) for i in range(n_links)]
            masses = [p.getDynamicsInfo(body, i, physicsClientId=cid)[0] for i in range(n_links)]
            expected = []
            for j in drv.handles.joint_indices:
                info = p.getJointInfo(body, j, physicsClientId=cid)
                ls = p.getLinkState(body, j, computeForwardKinematics=1, physicsClientId=cid)
                axis = np.array(p.getMatrixFromQuaternion(ls[5])).reshape(3, 3) @ np.array(info[13])
                origin = np.array(ls[4])  # joint axis passes through the child link frame
                # Every link downstream of joint j (descendants in the chain).
                down = [i for i in range(n_links) if _descends(cid, body, i, j)]
                tau = sum(np.cross(coms[i] - origin, masses[i] * np.array([0, 0, -9.81])) @ axis
                          for i in down)
                # The motor holds the arm: it supplies minus the gravity moment.
                expected.append(-tau)
            np.testing.assert_allclose(grav.gravity_torque(q), expected, atol=1e-6)
        grav.close()
    finally:
        drv.close()


def _descends(cid: int, body: int, link: int, joint: int) -> bool:
    while link != -1:
        if link == joint:
            return True
        link = p.getJointInfo(body, link, physicsClientId=cid)[16]
    return False


def test_motors_at_rest_supply_exactly_the_gravity_torque(ctl):
    for _ in run(ctl, np.zeros(3), 0.5):
        pass
    st_ = ctl.last
    np.testing.assert_allclose(ctl.driver.joint_torques(), st_.gravity_torque, atol=0.05)
    assert np.max(np.abs(st_.interaction_torque)) < 0.05
    assert st_.gravity_torque[0] > 3.0  # the arm is out in front: real load at the shoulder


# --------------------------------------------------------------------------- range of motion


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
       intents=st.lists(st.tuples(
           st.one_of(
               st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
               st.lists(st.sampled_from([1e308, -1e308, 1e9, -1e9, math.nan, math.inf, -math.inf,
                                         0.0]), min_size=3, max_size=3),
               st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6)),
           st.integers(1, 40)), min_size=1, max_size=8))
def test_property_random_nan_and_huge_intents_never_leave_the_range_of_motion(start, intents):
    """Through the real pybullet driver, stepping physics: every joint, every tick, inside the
    profile's range of motion (read from the file, no tolerance)."""
    c = _shared_controller()
    # Anywhere the exoskeleton can be left by its own guard (which stops joints
    # rom_guard_rad inside the range), ends included.
    guard = c.config.rom_guard_rad
    q0 = ROM_LO + guard + np.asarray(start) * (ROM_HI - ROM_LO - 2 * guard)
    c.driver.reset_posture(q0)
    c.resume()
    violations = c.rom_violations
    for vec, ticks in intents:
        for _ in range(ticks):
            c.update(vec)
            q = np.asarray(c.driver.read().position)
            assert inside_rom(q), (
                f"joint(s) {[JOINTS[i] for i in np.nonzero((q < ROM_LO) | (q > ROM_HI))[0]]} "
                f"outside the range of motion: q={np.degrees(q).round(3)} deg")
    assert c.rom_violations == violations


_SHARED: list[ExoController] = []


def _shared_controller() -> ExoController:
    # One simulated exoskeleton for all hypothesis examples (each starts from a
    # fresh posture); a torque stop from a violent example is cleared by resume().
    if not _SHARED:
        c = ExoController(PyBulletExoDriver(), assist={"level": 0.0})
        c.start()
        _SHARED.append(c)
    return _SHARED[0]


def teardown_module(module):
    for c in _SHARED:
        c.close()
    _SHARED.clear()  # collected now, not during interpreter shutdown


def test_soft_limit_slows_smoothly_toward_the_end_of_the_range(ctl):
    """Full speed toward the elbow's upper end: speed falls with distance inside the zone,
    the joint stops inside the range, without a jerk."""
    e = JOINTS.index("elbow_flexion")
    intent = np.zeros(3)
    intent[PROFILE.active.index("elbow_flexion")] = 10.0  # clamped to max speed
    qs = np.array(list(run(ctl, intent, 4.0)))
    v = np.diff(qs[:, e]) / TICK
    room = ROM_HI[e] - qs[1:, e]
    zone = room < ctl.config.soft_limit_rad * 0.8
    assert zone.any() and v.max() > 0.5
    # Inside the zone the speed toward the end is at most proportional to the distance.
    assert np.all(v[zone] <= ctl.joints.max_velocity[e] * room[zone] / ctl.config.soft_limit_rad
                  + 0.02)
    assert np.all(qs[:, e] <= ROM_HI[e]) and ROM_HI[e] - qs[-1, e] < 0.02
    assert np.max(np.abs(np.diff(v))) / TICK < 3 * ctl.config.max_joint_accel + 5.0


def test_inactive_joints_are_held(ctl):
    inactive = [i for i in range(5) if i not in ACTIVE]
    q0 = np.asarray(ctl.driver.read().position)
    qs = np.array(list(run(ctl, np.array([0.5, -0.3, 0.6]), 1.5)))
    assert np.max(np.abs(qs[:, inactive] - q0[inactive])) < 0.01
    assert np.max(np.abs(qs[-1, ACTIVE] - q0[ACTIVE])) > 0.3


# --------------------------------------------------------------------------- stop paths


def test_stop_contract_derives_the_watchdog_and_holds_with_late_ticks():
    """The exo is on the arm's stop contract: the user's intent velocity is zero within
    ``stop_within_s`` of the last valid intent, watchdog derived, a device that cannot
    brake in time rejected naming the keys — and a late tick commands the ramp's value."""
    from pydantic import ValidationError

    from bciarm.effectors.exoskeleton.controller import ExoConfig

    cfg = ExoConfig()
    vmax = math.radians(40)                     # the example profile's slowest active joint
    assert cfg.intent_max_speed == pytest.approx(vmax)
    assert cfg.braking_s == pytest.approx(math.ceil(vmax / (2.0 * TICK)) * TICK)   # 0.35 s
    assert cfg.watchdog_timeout_s == pytest.approx(0.5 - TICK - cfg.braking_s)
    with pytest.raises(ValidationError, match="max_decel.*stop_within_s 0.1.*raise max_decel"):
        ExoConfig(stop_within_s=0.1)
    with pytest.raises(ValidationError, match="watchdog_s 0.3 s.*exceeds stop_within_s"):
        ExoConfig(watchdog_s=0.3)
    assert ExoConfig(stop_within_s=0.1, max_decel=12.0).watchdog_timeout_s > 2 * TICK

    c = ExoController(PyBulletExoDriver(), {"stop_within_s": 0.2, "max_decel": 6.0})
    c.start(0.0)
    try:
        t = 0.0
        for _ in range(50):
            t += TICK
            c.update(np.array([1.0, 0.0, 0.0]), t)   # clamped to the top speed
        t_last = t
        while t + TICK < t_last + c.config.watchdog_timeout_s:
            t += TICK
            assert np.linalg.norm(c.update(None, t).intent) == pytest.approx(vmax)
        st = c.update(None, t_last + 0.2)           # a late tick, at the contract's end
        assert np.all(st.intent == 0.0) and "watchdog" in st.guards
    finally:
        c.close()


def test_watchdog_and_estop_bring_the_exoskeleton_to_rest(ctl):
    for _ in run(ctl, np.array([0.6, 0.0, 0.0]), 0.5):
        pass
    assert np.abs(ctl.driver.read().velocity).max() > 0.3
    # Watchdog: no more intents.  Bound: watchdog + speed/accel + settling.
    bound = ctl.config.watchdog_timeout_s + ctl.max_speed / ctl.config.max_accel + 0.25
    t = 0.0
    while np.abs(ctl.driver.read().velocity).max() > 0.005:
        ctl.update(None)
        t += TICK
        assert t <= bound, f"still moving {t:.2f} s after the last intent"
    # E-stop: from motion to rest within a few ticks, latched through intents.
    for _ in run(ctl, np.array([-0.6, 0.0, 0.0]), 0.5):
        pass
    ctl.estop("test")
    for k, _ in enumerate(run(ctl, np.array([0.8, 0.8, 0.8]), 0.5)):
        if k >= 3:
            assert np.abs(ctl.driver.read().velocity).max() < 0.005
    assert ctl.last.estopped
    assert ctl.resume()
    for _ in run(ctl, np.array([0.6, 0.0, 0.0]), 0.4):
        pass
    assert ctl.driver.read().velocity[0] > 0.3


def test_torque_limit_stops_and_reports():
    """Hold the palm fixed in space (a rigid constraint: a spasm, or the arm caught), then
    command motion: the interaction torque rises past the profile's limit → stop + event."""
    node = ExoEffector("exo")
    h = NodeHarness(node, tick_s=TICK)
    try:
        h.tick(2)
        drv = node.controller.driver
        cid, body = drv.client_id, drv.handles.robot
        palm = drv.handles.ee_link
        pos = p.getLinkState(body, palm, physicsClientId=cid)[4]
        p.createConstraint(body, palm, -1, -1, p.JOINT_POINT2POINT, [0, 0, 0], [0, 0, 0], pos,
                           physicsClientId=cid)
        for _ in range(100):
            h.send("intent", h.make("intent", Intent, velocity=np.array([0.6, 0.0, 0.6]),
                                    space="joint"))
            h.tick()
        events = [m for m in h.sent("event") if m.kind == "torque_limit"]
        assert len(events) == 1, "one stop, reported once"
        ev = events[0].data
        assert ev["joint"] in JOINTS and abs(ev["torque_nm"]) > ev["limit_nm"]
        states = [m for m in h.sent("state.exo") if isinstance(m, EffectorState)]
        assert "torque_limit" in states[-1].guards and reading_of(states[-1]).torque_stopped
        assert np.abs(states[-1].joint_velocity).max() < 0.01
        # Latched until resume.
        h.send("event", h.make("event", Event, kind="resume"))
        h.tick()
        assert not reading_of(h.sent("state.exo")[-1]).torque_stopped
    finally:
        h.close()


# --------------------------------------------------------------------------- assistance, modes


def test_assistance_is_reported_every_tick_and_only_toward_a_shown_goal():
    node = ExoEffector("exo")
    h = NodeHarness(node, tick_s=TICK)
    try:
        h.tick(2)
        q = reading_of(h.sent("state.exo")[-1]).active_position
        goal = q + np.array([0.4, 0.0, 0.0])
        h.send("event", h.make("event", Event, kind="joint_target",
                               data={j: float(v) for j, v in zip(PROFILE.active, goal)}))
        h.send("task", h.make("task", TaskState, block="b", trial=0, phase="reach",
                              mode="closed_loop", target=np.zeros(3)))
        h.clear()
        for _ in range(30):  # weak but well-aimed intent
            h.send("intent", h.make("intent", Intent, velocity=np.array([0.05, 0.0, 0.0]),
                                    space="joint"))
            h.tick()
        states = h.sent("state.exo")
        assert len(states) == 30
        levels = [reading_of(s).assist_level for s in states]
        assert max(levels[5:]) > 0.5 and all(0.0 <= lv <= 1.0 for lv in levels)
        r = reading_of(states[-1])
        assert r.assist_speed <= node.params.assist.max_speed + 1e-9
        np.testing.assert_allclose(r.goal, goal)
        # The assistance follows the goal: the joint moves faster than the intent asks.
        assert r.active_velocity[0] > 0.15
        # Off-goal intent (sideways): no assistance.
        h.clear()
        for _ in range(10):
            h.send("intent", h.make("intent", Intent, velocity=np.array([0.0, 0.1, 0.0]),
                                    space="joint"))
            h.tick()
        assert reading_of(h.sent("state.exo")[-1]).assist_speed == 0.0
    finally:
        h.close()


def test_end_point_mode_moves_the_palm_along_the_intent():
    c = ExoController(PyBulletExoDriver(), axes=["x", "z"], max_speed=0.15)
    c.start()
    try:
        x0 = c.last.position.copy()
        for _ in run(c, np.array([0.0, 0.1]), 1.0):  # up
            pass
        dx = c.last.position - x0
        assert dx[2] > 0.05 and abs(dx[0]) < 0.3 * dx[2] and abs(dx[1]) < 0.3 * dx[2]
        assert inside_rom(np.asarray(c.driver.read().position))
    finally:
        c.close()


def test_end_point_mode_assists_toward_the_task_target():
    """End-point space: the goal is TaskState.target (world); a weak intent toward it is
    topped up, an assist event turns the help off."""
    node = ExoEffector("exo", axes=["x", "z"], max_speed=0.15,
                       assist={"level": 1.0, "max_speed": 0.05, "preferred_speed": 0.1,
                               "min_intent": 0.005})
    h = NodeHarness(node, tick_s=TICK)
    try:
        h.tick(2)
        x0 = h.sent("state.exo")[-1].position.copy()
        h.send("task", h.make("task", TaskState, block="b", trial=0, phase="reach",
                              mode="closed_loop", target=x0 + np.array([0.0, 0.0, 0.15])))

        def push(n):
            h.clear()
            for _ in range(n):
                h.send("intent", h.make("intent", Intent, velocity=np.array([0.0, 0.01]),
                                        space="cartesian"))
                h.tick()
            return [reading_of(s) for s in h.sent("state.exo")]

        helped = push(30)
        assert helped[-1].assist_speed > 0.01 and helped[-1].assist_level > 0.5
        h.send("event", h.make("event", Event, kind="assist", data={"level": 0.0}))
        alone = push(10)
        assert alone[-1].assist_speed == 0.0
    finally:
        h.close()

"""Reach-and-grasp safety chain: grip force, drops, e-stop hold, wrist limits, speed zones.

Physics (pybullet, scene ``arm_box_blocks``) is measured independently of the
controller: contact forces from ``getContactPoints``, the end-effector speed
from ``PyBulletArmDriver.ee_state``, object poses from the physics.
"""

import math

import numpy as np
import pybullet as p
import pytest
from scipy.spatial.transform import Rotation

from bciarm.bus.messages import GRASP_CLOSE, GRASP_RELEASE
from bciarm.drivers.pybullet_arm import PyBulletArmDriver
from bciarm.effectors.arm import ARM_EXTRA, ArmController, ArmEffector
from bciarm.effectors.grasp import (
    CLOSED,
    DROP,
    FREE,
    GRIP_FORCE,
    ORIENTATION,
    SPEED_ZONE,
    OrientationLimits,
    SpeedZone,
    SpeedZoneParams,
    WristParams,
    quat_from_rotvec,
    relative_rotation,
    rotvec_from_quat,
    tilt_and_yaw,
)
from bciarm.sources.user import aim_velocity

AXES7 = ("x", "y", "z", "roll", "pitch", "yaw", "grasp")


class Rig:
    """An ArmController on the box-and-blocks scene with a scripted user."""

    def __init__(self, **cfg):
        self.drv = PyBulletArmDriver("arm_box_blocks")
        cfg.setdefault("gripper", {"grip_force": 10.0})
        self.ctl = ArmController(self.drv, axes=AXES7, max_speed=0.25, **cfg)
        self.st = self.ctl.start()
        self.t = 0.0

    def tick(self, v7, click=-1):
        self.t += 0.01
        self.st = self.ctl.update(np.asarray(v7, float), self.t, grasp=click)
        return self.st

    def go(self, target, aperture_rate=0.0, seconds=4.0, tol=0.004):
        for _ in range(int(seconds / 0.01)):
            v = aim_velocity(self.st.position, np.asarray(target, float), 0.2, 3.0)
            self.tick(np.r_[v, 0, 0, 0, aperture_rate])
            if np.linalg.norm(self.st.position - target) < tol:
                break
        return self.st

    def block(self, name="block1"):
        return self.drv.object_poses([name])[name][0]

    def grasp(self, name="block1"):
        b = self.block(name)
        self.go(b + [0, 0, 0.07])
        self.go(b)
        self.tick(np.zeros(7), GRASP_CLOSE)
        for _ in range(100):
            self.tick(np.zeros(7))
            if self.st.gripper.holding and abs(self.st.gripper.velocity) < 1e-3:
                break
        return b

    def finger_contact_force(self, name="block1"):
        h = self.drv.handles
        body = h.objects[name]
        return [sum(c[9] for c in p.getContactPoints(bodyA=h.robot, bodyB=body, linkIndexA=j,
                                                     physicsClientId=self.drv.client_id))
                for j in self.drv._fingers]

    def close(self):
        self.ctl.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def test_grasp_by_friction_lift_carry_release(rig):
    b0 = rig.grasp()
    assert rig.st.hand_mode == CLOSED and rig.st.gripper.held == "block1"
    rig.go(b0 + [0, 0, 0.12])
    lifted = rig.block()
    assert lifted[2] > b0[2] + 0.09, "the block came up with the hand (held by friction)"
    rig.tick(np.zeros(7), GRASP_RELEASE)
    for _ in range(150):
        rig.tick(np.zeros(7))
    assert rig.st.hand_mode == FREE and not rig.st.gripper.holding
    assert rig.block()[2] < b0[2] + 0.01, "released: the block fell back to the table"
    assert rig.st.drops == 0, "a commanded release is not a drop"


@pytest.mark.parametrize("limit", [4.0, 12.0])
def test_grip_force_never_exceeds_the_limit(limit):
    r = Rig(gripper={"grip_force": limit})
    try:
        r.grasp()
        forces = []
        for _ in range(60):
            r.tick(np.zeros(7))
            forces.append(max(r.finger_contact_force()))
        # The measured normal force at each finger pad (physics) settles at the cap.
        assert max(forces[20:]) <= limit * 1.05
        assert np.mean(forces[20:]) >= limit * 0.8, "the hand squeezes with the set force"
        assert GRIP_FORCE not in r.st.guards
        assert r.st.gripper.force == pytest.approx(limit, rel=0.02)
    finally:
        r.close()


def test_drop_is_detected_and_estop_keeps_the_grip(rig):
    b0 = rig.grasp()
    rig.go(b0 + [0, 0, 0.1])
    # E-stop: the arm stops, the hand keeps squeezing -- the block stays up.
    rig.ctl.estop("test")
    for _ in range(100):
        rig.tick(np.zeros(7))
    assert rig.st.estopped and rig.st.gripper.holding and rig.block()[2] > b0[2] + 0.07
    rig.ctl.resume()
    # Snatch the block out of the hand: a drop, reported once.
    cid, h = rig.drv.client_id, rig.drv.handles
    p.resetBasePositionAndOrientation(h.objects["block1"], [0.0, 0.25, 0.65], [0, 0, 0, 1],
                                      physicsClientId=cid)
    guards = []
    for _ in range(30):
        guards.append(rig.tick(np.zeros(7)).guards)
    assert sum(DROP in g for g in guards) == 1 and rig.st.drops == 1
    assert rig.ctl.gripper.dropped == ["block1"]


def test_wrist_limits_hold_under_a_constant_command(rig):
    limit = rig.ctl.config.wrist.max_tilt_deg
    tilts = []
    for _ in range(300):  # 3 s of roll at 0.8 rad/s would be 137 deg
        rig.tick([0, 0, 0, 0.8, 0, 0, 0])
        tilts.append(math.degrees(tilt_and_yaw(rig.st.orientation, rig.ctl.quat_home)[0]))
    assert max(tilts) <= limit + 1.0 and max(tilts) > limit - 6.0
    assert ORIENTATION in rig.st.guards
    # Twist about the vertical is bounded too.
    r2 = Rig(wrist={"max_yaw_deg": 30.0})
    try:
        yaws = []
        for _ in range(300):
            r2.tick([0, 0, 0, 0, 0, -0.8, 0])
            yaws.append(math.degrees(tilt_and_yaw(r2.st.orientation, r2.ctl.quat_home)[1]))
        assert min(yaws) >= -31.0 and min(yaws) < -24.0
    finally:
        r2.close()


def test_speed_zone_caps_the_measured_speed():
    centre = np.array([-0.10, 0.20, 0.80])
    r = Rig(speed_zones=[{"centre": centre.tolist(), "radius": 0.12, "max_speed": 0.08}],
            max_accel=2.0)
    try:
        inside = []
        for _ in range(250):  # ask for 0.25 m/s straight at the centre
            d = centre - r.st.position
            r.tick(np.r_[0.25 * d / max(np.linalg.norm(d), 1e-9), 0, 0, 0, 0])
            pos, vel = r.drv.ee_state()  # physics, not the controller's estimate
            if np.linalg.norm(centre - pos) <= 0.12:
                inside.append(np.linalg.norm(vel))
        assert inside, "the hand reached the zone"
        assert max(inside) <= 0.08
        assert SPEED_ZONE in r.st.guards or max(inside) < 0.08
    finally:
        r.close()


def test_stale_or_garbage_intent_stops_wrist_and_fingers(rig):
    for _ in range(30):
        rig.tick([0, 0, 0, 0, 0, 0.5, 0.05])
    assert abs(rig.st.angular_velocity[2]) > 0.2
    for _ in range(60):  # no intent: the watchdog ramps everything to rest
        rig.t += 0.01
        rig.st = rig.ctl.update(None, rig.t)
    assert np.linalg.norm(rig.st.angular_velocity) < 0.02 and abs(rig.st.gripper.velocity) < 1e-3
    assert rig.ctl.offer_intent([0, 0, np.nan, 0, 0, 0, 0], rig.t) is False
    assert rig.ctl.cartesian.rejected == 1


def test_rotation_helpers_match_scipy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rv = rng.normal(size=3)
        rv *= min(1.0, 3.0 / np.linalg.norm(rv))
        q = quat_from_rotvec(rv)
        np.testing.assert_allclose(q, Rotation.from_rotvec(rv).as_quat() *
                                   np.sign(Rotation.from_rotvec(rv).as_quat()[3]), atol=1e-12)
        np.testing.assert_allclose(rotvec_from_quat(q), Rotation.from_quat(q).as_rotvec(),
                                   atol=1e-9)
    home = Rotation.from_euler("x", 180, degrees=True).as_quat()  # tool pointing down
    tilted = (Rotation.from_euler("y", 25, degrees=True) * Rotation.from_quat(home)).as_quat()
    tilt, yaw, _ = tilt_and_yaw(tilted, home)
    assert math.degrees(tilt) == pytest.approx(25.0, abs=1e-6) and abs(yaw) < 1e-6
    twisted = (Rotation.from_euler("z", -40, degrees=True) * Rotation.from_quat(home)).as_quat()
    tilt, yaw, _ = tilt_and_yaw(twisted, home)
    assert tilt < 1e-6 and math.degrees(yaw) == pytest.approx(-40.0, abs=1e-6)
    np.testing.assert_allclose(relative_rotation(twisted, home), [0, 0, math.radians(-40)],
                               atol=1e-9)


def test_orientation_and_zone_guards_in_isolation():
    home = np.array([1.0, 0, 0, 0])
    lim = OrientationLimits(WristParams(max_tilt_deg=20, margin_deg=5), home)
    at_limit = (Rotation.from_euler("x", 20, degrees=True) * Rotation.from_quat(home)).as_quat()
    w, acted = lim.limit(np.array([0.5, 0.0, 0.0]), at_limit)
    assert acted and abs(w[0]) < 1e-9          # no further tilt
    w, acted = lim.limit(np.array([-0.5, 0.0, 0.0]), at_limit)
    assert not acted and w[0] == -0.5          # coming back is always allowed
    zone = SpeedZone(SpeedZoneParams(centre=(0, 0, 0), radius=0.1, max_speed=0.1, decel=0.5),
                     0.01)
    v, acted = zone.limit(np.array([-0.3, 0.0, 0.0]), np.array([0.15, 0.0, 0.0]))
    assert acted and 0.1 < -v[0] < 0.3          # braking envelope outside the zone
    v, acted = zone.limit(np.array([0.0, 0.3, 0.0]), np.array([0.05, 0.0, 0.0]))
    assert acted and np.linalg.norm(v) == pytest.approx(0.097)
    far = zone.allowed_speed(np.array([1.0, 0.0, 0.0]))
    v, acted = zone.limit(np.array([0.3, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]))
    assert far > 0.8 and not acted              # far away: no limit at this speed


def test_effector_publishes_the_hand_and_tracked_objects():
    from bciarm.bus.harness import NodeHarness

    node = ArmEffector("arm", axes=list(AXES7), gripper={}, driver_params={
        "scene": "arm_box_blocks"}, track_objects=["block0", "block5"])
    assert "event" in node.outputs
    h = NodeHarness(node)
    h.advance(0.05)
    states = [m for t, m in h.capture.messages if t == "state.arm"]
    extra = states[-1].extra
    assert extra.size == len(ARM_EXTRA) + 8
    np.testing.assert_allclose(extra[len(ARM_EXTRA):len(ARM_EXTRA) + 3], [-0.16, -0.12, 0.65],
                               atol=2e-3)
    h.close()
    node.on_stop()

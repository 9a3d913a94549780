"""The wheelchair in the pybullet apartment: stopping after intent loss, obstacles, collisions, node."""

import math

import numpy as np
import pytest

from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import EffectorState, Event, Intent
from bciarm.drivers.pybullet_wheelchair import PyBulletWheelchairDriver
from bciarm.effectors.wheelchair import EXTRA_LAYOUT, WheelchairController, WheelchairEffector
from bciarm.effectors.wheelchair.node import extra_value, ranges_of

DT = 0.01


def make(start, **cfg):
    ctl = WheelchairController(PyBulletWheelchairDriver(start=start), **cfg)
    ctl.start()
    return ctl


@pytest.mark.parametrize("profile,start", [
    ("indoor", (1.0, 4.2, 0.0)),     # corridor, heading east: 8.5 m of straight floor
    ("outdoor", (1.0, 4.2, 0.0)),
])
def test_intent_loss_at_top_speed_stops_within_the_documented_distance(profile, start):
    ctl = make(start, profile=profile, assist={"level": 0.0})
    try:
        p = ctl.profile
        documented, _ = ctl.documented_stop()
        cmd = []
        for _ in range(800):
            st = ctl.update(np.array([1.0, 0.0]))
            cmd.append(st.command[0])
            if st.command[0] >= p.max_forward - 1e-9 and st.forward >= 0.98 * p.max_forward:
                break
        assert st.command[0] == pytest.approx(p.max_forward), "did not reach top speed"
        x0 = st.pose[:2].copy()
        t_last = ctl.now_s  # the last intent arrived on this tick
        stopped_at = None
        for k in range(600):
            st = ctl.update(None)
            cmd.append(st.command[0])
            if st.command[0] == 0.0 and abs(st.forward) < 0.01:
                stopped_at = st
                break
        assert stopped_at is not None, "never came to rest"
        travelled = float(np.linalg.norm(stopped_at.pose[:2] - x0))
        assert "watchdog" in stopped_at.guards and not ctl.collisions
        print(f"{profile}: stopped {travelled:.3f} m after intent loss at "
              f"{p.max_forward} m/s in {stopped_at.t_s - t_last:.2f} s "
              f"(documented {documented:.3f} m)")
        # Physics lags the command by a few millimetres; the documented figure
        # is the commanded profile's, so allow 2 % of it.
        assert travelled <= documented * 1.02
        v = np.array(cmd)
        a = np.diff(v) / DT
        j = np.diff(a) / DT
        assert np.abs(j).max() <= p.jerk + 1e-6
        assert -a.min() <= p.decel + 1e-6
        # Not an instant lock: the deceleration takes more than a second.
        assert stopped_at.t_s - t_last > 1.0
    finally:
        ctl.close()


@pytest.mark.parametrize("level", [0.0, 1.0])
@pytest.mark.parametrize("start", [
    (8.5, 4.2, 0.0),                  # corridor, 1.5 m from the east wall
    (4.5, 1.55, 0.0),                 # living room toward the kitchen doorway jamb (off-centre)
    (3.4, 2.4, math.radians(100)),    # toward the living-room doorway, at an angle
])
def test_never_drives_into_an_obstacle_whatever_the_user_commands(level, start):
    ctl = make(start, assist={"level": level})
    try:
        for _ in range(600):  # full speed ahead for 6 s
            st = ctl.update(np.array([1.0, 0.0]))
            assert not st.collision
        assert ctl.collisions == 0 and st.clearance > 0.0
        assert abs(st.forward) < 0.05 or st.clearance > 0.3
    finally:
        ctl.close()


@pytest.mark.slow
def _doorway_escape(seconds: float = 30.0):
    """Assistance off, the chair's rear still in the kitchen doorway and turned 10° toward the
    kitchen place, as where a session once wedged.  The simulated user (no noise, no delay)
    steers at the route ahead.  Returns (collision ticks, reached the kitchen, pose, pushes)."""
    from bciarm.sim.scene import load_scene
    from bciarm.sources.drive_user import Unsticker, drive_intent
    from bciarm.tasks.planner import FloorPlan, lookahead_point

    spec = load_scene("apartment")
    plan = FloorPlan(spec)
    goal = spec.places["kitchen"]
    ctl = make((6.33, 1.49, 0.17), assist={"level": 0.0})
    unstick = Unsticker()
    try:
        st = ctl.last
        route, k = plan.route(st.pose[:2], goal), 0
        contacts = 0
        for _ in range(int(seconds / 0.01)):
            target, k = lookahead_point(route, st.pose[:2], k, 0.4)
            u = unstick.adjust(ctl.now_s, st.pose, drive_intent(st.pose, target))
            st = ctl.update(u)
            contacts += bool(st.collision)
            if np.linalg.norm(st.pose[:2] - goal) < 0.35:
                break
        reached = bool(np.linalg.norm(st.pose[:2] - goal) < 0.35)
        return contacts + ctl.collisions, reached, st.pose, unstick.episodes
    finally:
        ctl.close()


def test_backing_out_of_a_doorway_never_touches_a_jamb():
    """Whatever the unassisted user does while wedged in a doorway, the guard keeps the chair
    off the jambs (with 32 beams the jamb corner behind the chair fell between two beams)."""
    contacts, _, pose, _ = _doorway_escape()
    assert contacts == 0, f"contact with the doorway at {pose}"


@pytest.mark.xfail(strict=True, reason=(
    "known gap: since the guard also brakes the turn rate, the unassisted chair stays wedged "
    "here at 10° (safely: no contact, test above); the simulated user does not find the way "
    "out within 30 s."))
def test_unassisted_user_is_not_trapped_in_a_doorway():
    contacts, reached, pose, pushes = _doorway_escape()
    assert contacts == 0
    assert reached, f"stuck at {pose}"
    assert pushes == 0  # the guard passed the user's own command, cut back


def test_random_commands_never_collide():
    ctl = make((4.2, 1.6, 0.0), assist={"level": 0.0})
    rng = np.random.default_rng(3)
    u = np.zeros(2)
    min_clear = math.inf
    try:
        for k in range(2000):  # 20 s of a wildly wandering user
            u = 0.97 * u + 0.25 * rng.normal(size=2)
            st = ctl.update(np.clip(u, -1.5, 1.5))
            min_clear = min(min_clear, st.clearance)
        assert ctl.collisions == 0 and min_clear > 0.0
    finally:
        ctl.close()


def test_resting_user_noise_does_not_creep_the_chair():
    ctl = make((4.2, 1.6, 0.0))
    rng = np.random.default_rng(0)
    try:
        p0 = ctl.last.pose[:2].copy()
        for k in range(3000):  # 30 s of decoder noise at rest
            st = ctl.update(rng.normal(0, 0.08, 2) if k % 5 == 0 else None)
        assert np.linalg.norm(st.pose[:2] - p0) < 0.01
        assert st.idle
    finally:
        ctl.close()


def test_node_publishes_ranges_heading_and_collision_events():
    node = WheelchairEffector("chair", driver_params={"start": [4.2, 1.6, 0.0]})
    h = NodeHarness(node, tick_s=0.01)
    try:
        h.tick(2)
        st = h.sent("state.chair")[-1]
        assert isinstance(st, EffectorState)
        beams = node.controller.driver.sensor.beams
        assert st.extra.shape == (len(EXTRA_LAYOUT) + beams,)
        r = ranges_of(st)
        assert np.all((r >= 0.05) & (r <= 4.0)) and np.any(r < 4.0)
        # Beam 0 looks ahead (+x) through the kitchen doorway: nothing within 4 m.
        # Beam 8 (90 degrees, +y): the corridor wall face at y = 3.35 m, 1.75 m away.
        assert r[0] == 4.0
        assert r[beams // 4] == pytest.approx(1.75, abs=0.02)
        assert extra_value(st, "heading") == pytest.approx(0.0, abs=1e-3)
        assert node.intent_velocity(st).shape == (2,)
        # Push the chair into the sofa: a collision event, once per contact.
        node.controller.driver.teleport(2.0, 1.25, 0.0)
        h.tick(5)
        events = [m for m in h.sent("event") if m.kind == "collision"]
        assert len(events) == 1 and "collision" in h.sent("state.chair")[-1].guards
        # A cartesian intent is not a drive intent: rejected, counted.
        h.send("intent", h.make("intent", Intent, velocity=np.array([0.5, 0.0])))
        assert node.counters.rejected_by_reason["intent_space"] == 1
        # The assistance level can be changed on the bus.
        h.send("event", h.make("event", Event, kind="assist", data={"level": 0.25}))
        h.tick()
        assert extra_value(h.sent("state.chair")[-1], "assist_level") == 0.25
    finally:
        h.close()
        node.on_stop()


def test_open_loop_assist_applies_only_in_open_loop_blocks():
    node = WheelchairEffector("chair", assist={"level": 0.0}, open_loop_assist=1.0)
    h = NodeHarness(node, tick_s=0.01)
    try:
        h.tick()
        levels = []
        for mode in ("open_loop", "closed_loop"):
            h.send("event", h.make("event", Event, kind="block_start",
                                   data={"block": mode, "mode": mode}))
            h.tick()
            levels.append(extra_value(h.sent("state.chair")[-1], "assist_level"))
        assert levels == [1.0, 0.0]
    finally:
        h.close()
        node.on_stop()

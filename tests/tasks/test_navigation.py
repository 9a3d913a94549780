"""Navigation task: planner, metrics, and goal-to-goal driving in open loop."""

import numpy as np
import pytest

from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import Event, Intent, TaskState
from bciarm.effectors.wheelchair import WheelchairEffector
from bciarm.sim.scene import load_scene
from bciarm.sources.drive_user import DriveUser, Unsticker, drive_intent
from bciarm.tasks.nav_metrics import GoalRecord, compute_nav_metrics
from bciarm.tasks.navigation import NavigationTask
from bciarm.tasks.planner import FloorPlan, lookahead_point, path_length


@pytest.fixture(scope="module")
def plan():
    return FloorPlan(load_scene("apartment"))


def test_shortest_path_is_straight_when_nothing_is_in_the_way(plan):
    a, b = np.array([3.5, 1.2]), np.array([5.0, 1.3])
    pts = plan.shortest(a, b)
    assert path_length(pts) == pytest.approx(np.linalg.norm(b - a), rel=1e-6)


def test_paths_between_rooms_go_through_doorways(plan):
    spec = load_scene("apartment")
    a, b = spec.places["living_room"], spec.places["bedroom"]
    short, route = plan.shortest(a, b), plan.route(a, b)
    assert path_length(short) > np.linalg.norm(b - a)           # walls in between
    assert path_length(route) >= path_length(short) - 1e-9        # the comfortable route is longer
    # Every point of both paths keeps the chair's half width from walls and furniture.
    for pts in (short, route):
        for p in pts:
            i, j = plan.cell(p)
            assert plan.distance[i, j] >= 0.3
    # The route crosses the corridor wall (y = 3.4) inside the living-room doorway (x 2.55..3.45).
    cross = [p for p, q in zip(route[:-1], route[1:]) if (p[1] - 3.4) * (q[1] - 3.4) <= 0]
    assert cross and all(2.55 + 0.3 <= p[0] <= 3.45 - 0.3 for p in cross)


def test_lookahead_point_moves_along_the_path():
    path = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    pt, k = lookahead_point(path, np.array([0.1, 0.05]), 0, 1.2)
    assert k == 0 and np.allclose(pt, [1.0, 0.2])
    pt, _ = lookahead_point(path, np.array([1.0, 0.9]), 1, 5.0)
    assert np.allclose(pt, [1.0, 1.0])


def rec(outcome, path, shortest, **kw):
    base = dict(block="b", mode="closed_loop", index=0, goal="g", target=np.zeros(2),
                start_t_s=0.0, end_t_s=10.0, start_position=np.zeros(2), outcome=outcome,
                path_length_m=path, shortest_m=shortest, collisions=0, near_misses=0, stops=0,
                jerk_sum=0.0, jerk_n=0, min_clearance_m=0.3)
    base.update(kw)
    return GoalRecord(**base)


def test_nav_metrics():
    m = compute_nav_metrics([rec("success", 6.0, 5.0, collisions=1, near_misses=2, jerk_sum=3.0,
                                 jerk_n=10),
                             rec("success", 4.0, 4.0, stops=1, jerk_sum=1.0, jerk_n=10),
                             rec("timeout", 9.0, 3.0, near_misses=1, end_t_s=90.0)])
    assert m["goals"] == 3 and m["goal_success_rate"] == pytest.approx(2 / 3)
    assert m["path_length_ratio"] == pytest.approx((1.2 + 1.0) / 2)
    assert m["collisions"] == 1 and m["near_misses"] == 3 and m["stops"] == 1
    assert m["mean_abs_jerk"] == pytest.approx(0.2) and m["mean_time_s"] == 10.0
    empty = compute_nav_metrics([])
    assert empty["goals"] == 0 and empty["path_length_ratio"] is None


def test_drive_intent_turns_toward_the_target_and_rolls_when_facing_it():
    ahead = drive_intent(np.array([0, 0, 0.0]), np.array([3.0, 0.0]))
    assert ahead[0] > 0.7 and ahead[1] == 0
    left = drive_intent(np.array([0, 0, 0.0]), np.array([0.0, 3.0]))
    assert left[0] == 0 and left[1] == 1.0
    right = drive_intent(np.array([0, 0, 0.0]), np.array([2.0, -1.0]))
    assert 0 < right[0] < ahead[0] and right[1] < 0


def _wedge(unstick, u, pose=(1.0, 1.0, 0.0), t0=0.0, seconds=1.2):
    """Feed ``u`` for ``seconds`` at a pose that does not change; the last adjusted intent."""
    out = None
    for k in range(int(seconds / 0.05)):
        out = unstick.adjust(t0 + 0.05 * k, np.array(pose), np.array(u))
    return out, t0 + seconds


def test_unsticker_backs_off_when_forward_is_refused_and_rolls_on_when_a_turn_is():
    un = Unsticker(stuck_s=1.0, unstick_s=1.5, push=0.6, push_turn=0.5)
    out, t = _wedge(un, [0.7, 0.2])          # wants to roll on, the chair will not
    assert out[0] == -0.6 and out[1] == pytest.approx(0.1)  # backs off, leaning to the target
    un = Unsticker(stuck_s=1.0, unstick_s=1.5, push=0.6, push_turn=0.5)
    out, t = _wedge(un, [0.0, 0.9])          # wants to turn on the spot, the chair will not
    assert out[0] == 0.6 and out[1] == pytest.approx(0.45)  # rolls on (out of the doorway)
    # That push did not move the chair at all: next time the other way.
    out, t = _wedge(un, [0.0, 0.9], t0=t, seconds=3.0)
    assert out[0] == -0.6
    # A user who is not asking for motion is never pushed.
    calm = Unsticker()
    out, _ = _wedge(calm, [0.1, 0.05], seconds=5.0)
    assert np.allclose(out, [0.1, 0.05]) and calm.episodes == 0


def test_drive_user_sees_through_the_feedback_delay():
    user = DriveUser(feedback_delay_s=0.15, noise_rel=0.0, noise_abs=0.0, rng=0)
    user.observe(0.0, np.array([0.0, 0.0, 0.0]), np.array([3.0, 0.0, 0.0]))
    assert np.all(user.intend(0.1) == 0)
    assert user.intend(0.15)[0] > 0.7


def test_task_publishes_a_route_target_and_autopilot_intents():
    chair = WheelchairEffector("chair")
    task = NavigationTask("task")
    h = NodeHarness(chair, task, tick_s=0.01)
    try:
        h.tick(2)
        h.send("event", h.make("event", Event, kind="block_start",
                               data={"block": "cal", "mode": "open_loop"}))
        h.advance(0.5)
        states = [m for m in h.sent("task") if isinstance(m, TaskState) and m.phase == "reach"]
        intents = [m for m in h.sent("intent") if isinstance(m, Intent)]
        assert states and intents and all(i.space == "drive" for i in intents)
        goal = task.places[task.goal]
        pos = chair.controller.last.pose[:2]
        # The target is the route's point 0.8 m ahead (or the goal if nearer).
        d = np.linalg.norm(states[-1].target[:2] - pos)
        assert d <= 0.8 + 0.1 or np.allclose(states[-1].target[:2], goal)
    finally:
        h.close()
        chair.on_stop()

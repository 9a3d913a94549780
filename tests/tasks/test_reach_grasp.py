"""Reach-and-grasp tasks: metrics, planning and judging (no physics; see tests/test_grasp_session.py)."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import GOAL_LAYOUT, EffectorState, Event
from bciarm.effectors.arm import ARM_EXTRA, EXTRA_INDEX
from bciarm.effectors.grasp import CLOSED, FREE
from bciarm.tasks.drink import DrinkTask
from bciarm.tasks.gestures import GesturesTask
from bciarm.tasks.pick_place import PickPlaceTask
from bciarm.tasks.reach_grasp import GraspTrial, Step, compute_grasp_metrics


def _trial(outcome, t0, t1, attempted=True, ok=True, drops=0, block="b"):
    return GraspTrial(block, "closed_loop", 0, "block0", t0, t1, outcome, attempted, ok, drops, 7)


def test_metrics_by_hand():
    trials = [_trial("success", 0, 6), _trial("drop", 6, 10, ok=False, drops=1),
              _trial("timeout", 10, 40, attempted=False, ok=False), _trial("success", 40, 50)]
    m = compute_grasp_metrics(trials)
    assert m["trials"] == 4 and m["success_rate"] == 0.5
    assert m["blocks_per_min"] == pytest.approx(2 / (50 / 60))
    assert m["grasp_success_rate"] == pytest.approx(2 / 3)   # the timeout never grasped
    assert m["drops"] == 1 and m["mean_trial_s"] == pytest.approx(8.0)
    assert math.isnan(compute_grasp_metrics([])["success_rate"])


def test_step_goal_layout():
    g = Step("s", np.array([1.0, 2, 3]), rotation=np.array([0.1, 0, 0]), aperture=0.05,
             hold=True, orientation_tol=0.2).goal()
    assert len(g) == len(GOAL_LAYOUT)
    assert g[GOAL_LAYOUT.index("hold")] == 1.0 and g[GOAL_LAYOUT.index("aperture")] == 0.05


def _state(h, pos, objects, hand_mode=FREE, holding=False, drops=0, vel=(0, 0, 0)):
    extra = np.zeros(len(ARM_EXTRA))
    extra[EXTRA_INDEX["qw"]] = 1.0
    extra[EXTRA_INDEX["aperture"]] = 0.07
    extra[EXTRA_INDEX["hand_mode"]] = hand_mode
    extra[EXTRA_INDEX["holding"]] = float(holding)
    extra[EXTRA_INDEX["drops"]] = drops
    objs = [np.r_[o, t] for o, t in objects]
    return h.make("state.arm", EffectorState, position=np.asarray(pos, float),
                  velocity=np.asarray(vel, float), joint_position=np.zeros(7),
                  joint_velocity=np.zeros(7), extra=np.concatenate([extra, *objs]))


def _blocks(positions):
    return [(np.asarray(p, float), 0.0) for p in positions]


def test_pick_place_plans_nearest_block_and_mirrors_the_drop():
    task = PickPlaceTask("task", objects=["a", "b", "c"])
    h = NodeHarness(task)
    blocks = _blocks([[-0.16, -0.21, 0.65], [-0.10, -0.12, 0.65], [-0.04, 0.12, 0.65]])
    h.send("state.arm", _state(h, [-0.1, 0, 0.875], blocks))
    h.send("event", h.make("event", Event, kind="block_start",
                           data={"block": "b1", "mode": "closed_loop"}))
    assert task.item == "b"                       # nearest the partition on the -y side
    assert task.steps[0].name == "approach"       # the hand is over the partition already
    carry = next(s for s in task.steps if s.name == "carry")
    np.testing.assert_allclose(carry.position[:2], [-0.10, 0.155])
    tasks = [m for t, m in h.capture.messages if t == "task"]
    assert tasks and tasks[-1].goal.size == len(GOAL_LAYOUT)
    # Judging: landed beyond the partition -> success; on the near side -> missed.
    task.world.objects["b"] = (np.array([-0.10, 0.13, 0.65]), 0.0)
    assert task.judge() == "success"
    task.world.objects["b"] = (np.array([-0.10, -0.05, 0.65]), 0.0)
    assert task.judge() == "missed"
    # An empty source side reverses the direction.
    task.world.objects.update(a=(np.array([-0.16, 0.2, 0.65]), 0.0),
                              b=(np.array([-0.10, 0.12, 0.65]), 0.0))
    item, _ = task.plan()
    assert task.source_side == 1.0 and item in ("b", "c")
    h.close()


def test_drink_spill_and_zone_speed():
    task = DrinkTask("task", mouth=(0.0, 0.1, 0.95), zone_radius=0.1, tilt_limit_deg=20.0)
    h = NodeHarness(task)
    cup = [(np.array([-0.1, -0.12, 0.675]), 0.0)]
    h.send("state.arm", _state(h, [-0.1, 0, 0.875], cup))
    h.send("event", h.make("event", Event, kind="block_start",
                           data={"block": "b1", "mode": "closed_loop"}))
    assert task.item == "cup" and [s.name for s in task.steps][4] == "mouth"
    # Near the mouth at 0.07 m/s, cup held and upright: recorded, no failure.
    h.send("state.arm", _state(h, [0.0, 0.1, 0.9], cup, CLOSED, True, vel=(0.07, 0, 0)))
    assert task.watch() is None and task._max_zone == pytest.approx(0.07)
    # Held cup tilting past the limit: the trial fails as a spill.
    tilted = [(np.array([0.0, 0.1, 0.85]), math.radians(25))]
    h.send("state.arm", _state(h, [0.0, 0.1, 0.9], tilted, CLOSED, True))
    assert task.trials and task.trials[-1].outcome == "spill"
    assert task.trials[-1].max_tilt_deg == pytest.approx(25.0)
    # A cup lying on its side is not offered again.
    assert task.plan() is None
    h.close()


def test_gestures_validate_the_sequence():
    with pytest.raises(ValidationError, match="unknown gesture"):
        GesturesTask("g", sequence=["open", "wave"])
    task = GesturesTask("g")
    h = NodeHarness(task)
    h.send("state.arm", _state(h, [-0.1, 0, 0.875], []))
    h.send("event", h.make("event", Event, kind="block_start",
                           data={"block": "b1", "mode": "open_loop"}))
    assert task.item == "open" and task.steps[0].aperture_tol is not None
    h.advance(0.2)
    assert any(t == "intent" for t, _ in h.capture.messages), "open loop: the autopilot drives"
    h.close()


def test_pick_place_path_over_the_partition():
    """Lift toward the partition (clearing the other row), back over it at return_z, skip
    blocks too near it; each step's time lands in the trial record."""
    task = PickPlaceTask("task", objects=["near", "far", "stuck"])
    p = task.params
    h = NodeHarness(task)
    blocks = _blocks([[-0.10, -0.12, 0.65], [-0.10, -0.21, 0.65], [-0.04, -0.07, 0.65]])
    # The hand is on the far (+y) side: it goes back over the partition first.
    h.send("state.arm", _state(h, [-0.1, 0.2, 0.76], blocks))
    h.send("event", h.make("event", Event, kind="block_start",
                           data={"block": "b1", "mode": "closed_loop"}))
    assert task.item == "near"          # "stuck" (7 cm from the partition) is out of reach
    names = [s.name for s in task.steps]
    assert names == ["return", "approach", "descend", "grasp", "lift", "carry", "release",
                     "land"]
    ret, lift, carry = task.steps[0], task.steps[4], task.steps[5]
    np.testing.assert_allclose(ret.position, [-0.10, 0.0, p.return_z])
    # Lift: up to carry_z and toward the partition, by at most (rise / lift_slope), and
    # the held block (5 cm) stays short of the partition.
    b = blocks[0][0]
    assert lift.position[2] == p.carry_z
    dy = lift.position[1] - b[1]
    assert 0 < dy <= (p.carry_z - b[2]) / p.lift_slope + 1e-12
    assert lift.position[1] + p.block_size / 2 < p.partition_y - p.partition_half
    assert carry.position[2] == p.drop_z and carry.position[1] == pytest.approx(0.155)
    # The far-row block rises more steeply than the row in front of it is wide.
    task.world.objects.pop("near")
    task.params.objects.remove("near")
    _, steps = task.plan()
    lift = next(s for s in steps if s.name == "lift")
    assert lift.position[1] - (-0.21) <= (p.carry_z - 0.65) / p.lift_slope + 1e-12
    # Timing: a timeout records the time of the step it ended in.
    h.advance(p.timeout_s + 0.1)
    h.send("state.arm", _state(h, [-0.1, 0.2, 0.76], blocks))
    assert task.trials and task.trials[0].outcome == "timeout"
    assert task.trials[0].step_s.startswith("return=")
    h.close()


def test_pick_place_gives_up_a_stuck_block():
    task = PickPlaceTask("task", objects=["a", "b"], give_up_after=2)
    h = NodeHarness(task)
    blocks = _blocks([[-0.10, -0.12, 0.65], [-0.10, -0.21, 0.65]])
    h.send("state.arm", _state(h, [-0.1, 0, 0.875], blocks))
    assert task.plan()[0] == "a"
    task.trials += [GraspTrial("b1", "closed_loop", i, "a", i, i + 1, "timeout", False, False,
                               0, 2) for i in range(2)]
    assert task.plan()[0] == "b" and task.out_of_play == {"a"}
    h.close()


def test_pick_place_grasp_goal_follows_a_nudged_block():
    """Up to the grasp the goal is where the block is now, not where it was planned."""
    task = PickPlaceTask("task", objects=["a", "b"])
    h = NodeHarness(task)
    blocks = _blocks([[-0.10, -0.12, 0.65], [-0.10, -0.21, 0.65]])
    h.send("state.arm", _state(h, [-0.1, -0.12, 0.70], blocks))
    h.send("event", h.make("event", Event, kind="block_start",
                           data={"block": "b1", "mode": "closed_loop"}))
    assert task.item == "a" and [s.follow for s in task.steps[:3]] == ["a", "a", "a"]
    assert not any(s.follow for s in task.steps[3:])
    task.step_i = 1                                     # descending: a finger nudges the block
    nudged = _blocks([[-0.07, -0.13, 0.65], [-0.10, -0.21, 0.65]])
    h.send("state.arm", _state(h, [-0.1, -0.12, 0.70], nudged))
    np.testing.assert_allclose(task.step.position, [-0.07, -0.13, 0.65 + task.params.grasp_dz])
    h.advance(0.05)                                     # published on the next tick
    tasks = [m for t, m in h.capture.messages if t == "task"]
    np.testing.assert_allclose(tasks[-1].goal[:3], task.step.position)
    h.close()


def test_pick_place_slip_ends_the_trial_and_stacked_blocks_count():
    task = PickPlaceTask("task", objects=["a", "b"], slip_s=0.15)
    h = NodeHarness(task)
    blocks = _blocks([[-0.10, -0.12, 0.65], [-0.10, 0.155, 0.65]])
    h.send("state.arm", _state(h, [-0.1, -0.12, 0.70], blocks))
    h.send("event", h.make("event", Event, kind="block_start",
                           data={"block": "b1", "mode": "closed_loop"}))
    # Its own slot (x -0.10, near row) is taken by "b": the nearest free slot instead.
    carry = next(s for s in task.steps if s.name == "carry")
    assert abs(carry.position[1] - 0.155) < 1e-9 and abs(carry.position[0] + 0.10) > 0.05
    # Lifting, holding: fine; the hand empty for less than slip_s: still fine; then a slip.
    task.step_i = [s.name for s in task.steps].index("lift")
    h.send("state.arm", _state(h, [-0.1, -0.1, 0.75], blocks, CLOSED, True))
    h.advance(0.05)
    h.send("state.arm", _state(h, [-0.1, -0.1, 0.75], blocks, CLOSED, False))
    h.advance(0.1)
    h.send("state.arm", _state(h, [-0.1, -0.1, 0.76], blocks, CLOSED, False))
    assert not task.trials
    h.advance(0.1)
    h.send("state.arm", _state(h, [-0.1, -0.1, 0.77], blocks, CLOSED, False))
    assert task.trials[-1].outcome == "slip" and not task.trials[-1].grasp_ok
    # A block that landed on another one beyond the partition is over: it counts.
    task._target, task._far_side = "a", 1.0
    task.world.objects["a"] = (np.array([-0.10, 0.16, 0.70]), math.radians(10))
    assert task.judge() == "success"
    # ... and the one beneath it is not picked up from under it.
    task.world.objects["b"] = (np.array([-0.10, -0.15, 0.65]), 0.0)
    task.world.objects["a"] = (np.array([-0.10, -0.15, 0.70]), 0.0)
    task.source_side = -1.0
    assert task.plan()[0] == "a"
    h.close()

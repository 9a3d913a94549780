"""CenterOutTask driven by synthetic effector states on a simulated clock."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from bciarm import registry
from bciarm.bus.harness import NodeHarness
from bciarm.bus.inline import InlineRuntime
from bciarm.bus.messages import EffectorState, Event, Header, Intent, TaskState
from bciarm.bus.node import Node, NodeParams
from bciarm.sources.simulated import SimulatedSource
from bciarm.sources.user import aim_velocity
from bciarm.tasks.center_out import CenterOutTask, outer_targets
from bciarm.tasks.metrics import compute_metrics

NS = 1_000_000_000
DT = 0.01
START = (0.4, 0.0, 0.3)


class Rig:
    """The task under a harness, with a fake effector we move by hand.

    Every :meth:`step` advances the clock by 10 ms (ticking the task when
    due), moves the effector, then publishes its state, like the real
    effector's control tick.
    """

    def __init__(self, seed: int = 0, start=START, **task_kw):
        self.task = CenterOutTask("task", **task_kw)
        self.h = NodeHarness(self.task, tick_s=DT, seed=seed)
        self.pos = np.array(start, dtype=float)

    @property
    def t(self) -> float:
        return self.h.now_ns / NS

    def send_state(self) -> None:
        self.h.send("state.arm", self.h.make(
            "state.arm", EffectorState, position=self.pos.copy(), velocity=np.zeros(3),
            joint_position=np.zeros(7), joint_velocity=np.zeros(7)))

    def event(self, kind: str, **data) -> None:
        self.h.send("event", self.h.make("event", Event, kind=kind, data=data))

    def step(self, n: int = 1, speed: float = 0.0) -> None:
        """``n`` control ticks moving straight to the current target at ``speed`` m/s."""
        for _ in range(n):
            self.h.tick()
            if speed and self.task.target is not None:
                delta = self.task.target - self.pos
                d = np.linalg.norm(delta)
                if d > 0:
                    self.pos = self.pos + delta * min(1.0, speed * DT / d)
            self.send_state()

    def run_until_trials(self, n: int, speed: float = 0.2, max_steps: int = 200_000) -> None:
        for _ in range(max_steps):
            if len(self.task.trials) >= n:
                return
            self.step(speed=speed)
        raise AssertionError("trials did not finish")

    def phases(self) -> list[tuple[int, str, str]]:
        """(trial, phase, outcome) of TaskState messages, consecutive repeats removed."""
        out: list[tuple[int, str, str]] = []
        for m in self.h.sent("task"):
            key = (m.trial, m.phase, m.outcome)
            if not out or out[-1] != key:
                out.append(key)
        return out


def test_registered_as_center_out():
    assert registry.resolve("task", "center_out") is CenterOutTask


def test_idle_until_block_start():
    rig = Rig()
    rig.step(200, speed=0.1)
    assert rig.task.phase == "idle" and rig.task.trials == []
    assert rig.h.sent("intent") == []
    assert {m.phase for m in rig.h.sent("task")} == {"idle"}


def test_centre_is_first_effector_position_and_targets_surround_it():
    rig = Rig()
    rig.step(3)
    np.testing.assert_array_equal(rig.task.centre, START)
    tg = rig.task.targets
    assert tg.shape == (8, 3)
    np.testing.assert_allclose(np.linalg.norm(tg - rig.task.centre, axis=1), 0.12)
    np.testing.assert_allclose(tg[:, 2], START[2])  # off-plane coordinate held
    ang = np.degrees(np.arctan2(tg[:, 1] - START[1], tg[:, 0] - START[0])) % 360
    np.testing.assert_allclose(np.sort(ang), np.arange(0, 360, 45), atol=1e-9)


def test_explicit_centre():
    rig = Rig(centre=[0.5, 0.1, 0.2])
    np.testing.assert_array_equal(rig.task.centre, [0.5, 0.1, 0.2])
    rig.step(2)
    np.testing.assert_array_equal(rig.task.centre, [0.5, 0.1, 0.2])


def test_reach_hold_success_with_exact_time_to_target():
    # 0.1 m/s -> 1 mm per tick.  Target 0.12 m away, radius 0.0255: inside
    # after 95 mm, i.e. the 95th tick after onset.
    rig = Rig(target_radius_m=0.0255)
    rig.step(5)
    rig.event("block_start", block="b1", mode="closed_loop")
    t0 = rig.t
    assert rig.task.phase == "reach" and rig.task.target_id >= 0  # arm already at centre
    rig.step(94, speed=0.1)
    assert rig.task.phase == "reach"
    rig.step(1, speed=0.1)
    assert rig.task.phase == "hold"
    rig.step(49, speed=0.1)
    assert rig.task.trials == []
    rig.step(1, speed=0.1)
    assert len(rig.task.trials) == 1
    tr = rig.task.trials[0]
    assert tr.outcome == "success" and tr.block == "b1" and tr.mode == "closed_loop"
    assert tr.index == 0 and tr.start_t_s == pytest.approx(t0)
    assert tr.time_to_target_s == pytest.approx(0.95, abs=1e-9)
    assert tr.end_t_s - tr.start_t_s == pytest.approx(1.45, abs=1e-9)
    assert tr.path_length_m == pytest.approx(0.095, abs=1e-9)
    assert tr.distance_m == pytest.approx(0.12)
    assert tr.holds_broken == 0
    np.testing.assert_allclose(tr.start_position, START)
    assert compute_metrics(rig.task.trials)["path_efficiency"] == pytest.approx(1.0, abs=1e-12)
    # The next trial goes back to the centre at once.
    assert rig.task.target_id == -1 and rig.task.phase == "reach" and rig.task.trial == 1
    np.testing.assert_array_equal(rig.task.target, START)
    assert rig.phases() == [(-1, "idle", ""), (0, "reach", ""), (0, "hold", ""),
                            (0, "done", "success"), (1, "reach", "")]
    done = [m for m in rig.h.sent("task") if m.outcome]
    assert len(done) == 1 and done[0].phase == "done"
    np.testing.assert_allclose(done[0].target, tr.target)


def test_leaving_during_hold_resets_the_hold():
    rig = Rig(target_radius_m=0.0255)
    rig.step(1)
    rig.event("block_start", block="b", mode="closed_loop")
    t0 = rig.t
    rig.step(95, speed=0.1)
    assert rig.task.phase == "hold"
    rig.step(30)  # 0.3 s of a 0.5 s hold
    inside = rig.pos.copy()
    direction = (rig.task.target - inside) / np.linalg.norm(rig.task.target - inside)
    rig.pos = rig.task.target - direction * 0.04  # out of the target
    rig.step(1)
    assert rig.task.phase == "reach"
    rig.pos = inside
    rig.step(1)
    t_reentry = rig.t
    assert rig.task.phase == "hold"
    rig.step(49)
    assert rig.task.trials == []  # the hold restarted on re-entry
    rig.step(1)
    tr = rig.task.trials[0]
    assert tr.outcome == "success" and tr.holds_broken == 1
    assert tr.time_to_target_s == pytest.approx(t_reentry - t0, abs=1e-9)
    assert tr.end_t_s == pytest.approx(t_reentry + 0.5, abs=1e-9)
    # The path includes the excursion (out 40 mm-ish and back).
    assert tr.path_length_m > 0.095 + 0.03
    assert tr.straight_m == pytest.approx(0.095, abs=1e-9)
    phases = [p for _, p, _ in rig.phases()]
    assert [p for p in phases if p != "idle"][:5] == ["reach", "hold", "reach", "hold", "done"]


def test_timeout_fails_and_next_target_is_centre():
    rig = Rig()
    rig.step(1)
    rig.event("block_start", block="b", mode="closed_loop")
    t0 = rig.t
    assert rig.task.target_id >= 0
    rig.step(999)
    assert rig.task.trials == []
    rig.step(1)
    tr = rig.task.trials[0]
    assert tr.outcome == "timeout"
    assert tr.end_t_s - t0 == pytest.approx(10.0, abs=1e-9)
    assert math.isnan(tr.time_to_target_s) and math.isnan(tr.straight_m)
    assert rig.task.target_id == -1
    assert [m.outcome for m in rig.h.sent("task") if m.outcome] == ["timeout"]


def test_centre_failure_repeats_the_centre():
    rig = Rig(timeout_s=2.0)
    rig.step(1)
    rig.pos = rig.pos + np.array([0.06, 0.0, 0.0])  # away from the centre target
    rig.step(1)
    rig.event("block_start", block="b", mode="closed_loop")
    assert rig.task.target_id == -1  # not inside the centre: start there
    rig.step(200)
    assert [t.outcome for t in rig.task.trials] == ["timeout"]
    assert rig.task.target_id == -1


def test_timeout_from_ticks_without_state_messages():
    rig = Rig(timeout_s=1.0)
    rig.step(1)
    rig.event("block_start", block="b", mode="closed_loop")
    rig.h.tick(105)  # no effector states at all: the task's ticks still time out
    assert [t.outcome for t in rig.task.trials] == ["timeout"]


def test_alternation_and_shuffled_blocks_of_eight():
    rig = Rig(seed=3)
    rig.step(1)
    rig.event("block_start", block="b", mode="closed_loop")
    rig.run_until_trials(33, speed=0.3)
    ids = [t.target_id for t in rig.task.trials]
    assert all(t.outcome == "success" for t in rig.task.trials)
    outer, centre = ids[0::2], ids[1::2]
    assert all(i >= 0 for i in outer) and all(i == -1 for i in centre)
    for k in range(0, 16, 8):
        assert sorted(outer[k:k + 8]) == list(range(8))
    assert outer[:8] != list(range(8))  # actually shuffled


def _outer_order(seed: int) -> list[int]:
    rig = Rig(seed=seed)
    rig.step(1)
    rig.event("block_start", block="b", mode="closed_loop")
    rig.run_until_trials(16, speed=0.3)
    return [t.target_id for t in rig.task.trials if t.target_id >= 0]


def test_target_order_is_deterministic_for_a_seed():
    assert _outer_order(5) == _outer_order(5)
    assert _outer_order(5) != _outer_order(6)


def test_open_loop_publishes_intents_toward_the_target():
    rig = Rig()
    rig.step(1)
    rig.event("block_start", block="cal", mode="open_loop")
    rig.step(100)  # 1 s, effector not moving
    intents = rig.h.sent("intent")
    assert len(intents) == 20  # every 0.05 s task tick (< the 0.1 s effector watchdog)
    t = np.array([m.header.t_ns for m in intents])
    np.testing.assert_array_equal(np.diff(t), 50_000_000)
    expected = aim_velocity(rig.pos[:2], rig.task.target[:2], 0.15, 2.5)
    for m in intents:
        assert isinstance(m, Intent) and m.velocity.shape == (2,)
        np.testing.assert_allclose(m.velocity, expected)
    assert np.linalg.norm(expected) > 0.1


def test_closed_loop_publishes_no_intents_and_block_end_stops_intents():
    rig = Rig()
    rig.step(1)
    rig.event("block_start", block="cl", mode="closed_loop")
    rig.step(100)
    assert rig.h.sent("intent") == []
    rig.event("block_end", block="cl")
    rig.event("block_start", block="cal", mode="open_loop")
    rig.step(20)
    assert len(rig.h.sent("intent")) == 4
    rig.event("block_end", block="cal")
    rig.h.clear()
    rig.step(50)
    assert rig.h.sent("intent") == []


def test_task_state_every_tick_with_fields():
    rig = Rig()
    rig.step(1)
    rig.event("block_start", block="b7", mode="open_loop")
    rig.h.clear()
    rig.step(100)
    msgs = rig.h.sent("task")
    assert len(msgs) >= 20
    for m in msgs:
        assert isinstance(m, TaskState)
        assert m.block == "b7" and m.mode == "open_loop" and m.trial == 0
        assert m.phase == "reach" and m.target_radius == 0.025 and m.outcome == ""
        np.testing.assert_allclose(m.target, rig.task.target)


def test_block_end_discards_unfinished_trial():
    rig = Rig()
    rig.step(1)
    rig.event("block_start", block="b", mode="closed_loop")
    rig.run_until_trials(2, speed=0.3)
    rig.step(10, speed=0.1)  # part way into trial 2
    rig.event("block_end", block="b")
    assert rig.task.completed_trials("b") == 2 and len(rig.task.trials_in("b")) == 2
    assert rig.task.phase == "idle" and rig.task.block is None
    assert rig.h.sent("task")[-1].phase == "idle"
    rig.step(1500)  # no timeout can happen while idle
    assert len(rig.task.trials) == 2
    rig.event("block_start", block="c", mode="closed_loop")
    assert rig.task.trial == 0 and rig.task.completed_trials() == 0
    rig.run_until_trials(3, speed=0.3)
    assert rig.task.completed_trials("c") == 1 and rig.task.trials[-1].index == 0


def test_block_start_before_any_state_waits_for_the_effector():
    rig = Rig()
    rig.event("block_start", block="b", mode="open_loop")
    rig.h.tick(10)
    assert rig.task.phase == "idle" and rig.h.sent("intent") == []
    rig.step(1)
    assert rig.task.phase == "reach" and rig.task.trial == 0


def test_three_axes_use_cube_vertices():
    rig = Rig(axes=["x", "y", "z"])
    rig.step(1)
    tg = rig.task.targets - np.array(START)
    assert tg.shape == (8, 3)
    np.testing.assert_allclose(np.linalg.norm(tg, axis=1), 0.12)
    np.testing.assert_allclose(np.abs(tg), 0.12 / math.sqrt(3))
    assert len({tuple(np.sign(v)) for v in tg}) == 8
    rig.event("block_start", block="b", mode="open_loop")
    rig.step(10)
    assert rig.h.sent("intent")[-1].velocity.shape == (3,)
    rig.run_until_trials(4, speed=0.3)
    assert all(t.outcome == "success" for t in rig.task.trials)


def test_outer_targets_other_dimensions():
    c = np.array([0.0, 0.0, 0.5])
    one = outer_targets(c, ["y"], 0.1)
    np.testing.assert_allclose(one, [[0, 0.1, 0.5], [0, -0.1, 0.5]])
    fib = outer_targets(c, ["x", "y", "z"], 0.1, n=12)
    assert fib.shape == (12, 3)
    np.testing.assert_allclose(np.linalg.norm(fib - c, axis=1), 0.1)
    four = outer_targets(c, ["x", "z"], 0.1, n=4, first_angle_deg=90)
    np.testing.assert_allclose(four[0], [0, 0, 0.6], atol=1e-12)


def test_params_validation():
    with pytest.raises(ValidationError):
        CenterOutTask("t", radius_m=0.04, target_radius_m=0.025)  # targets overlap
    with pytest.raises(ValidationError):
        CenterOutTask("t", hold=0.5)  # unknown key
    with pytest.raises(ValidationError):
        CenterOutTask("t", centre=[0.0, 1.0])
    with pytest.raises(ValidationError):
        CenterOutTask("t", axes=["x", "x"])


# ---------------------------------------------------------------------------- closed loop


class IntegratingArm(Node):
    """A point effector: integrates the last intent every 10 ms (0.1 s watchdog)."""

    class Params(NodeParams):
        tick_s: float | None = 0.01

    inputs = ("intent",)
    outputs = ("state.arm",)

    def __init__(self, name: str, **kw):
        super().__init__(name, **kw)
        self.pos = np.array(START)
        self.v = np.zeros(3)
        self.last_ns = -(10 ** 12)
        self.velocity_at: dict[int, np.ndarray] = {}

    def on_message(self, topic, msg):
        self.v = np.zeros(3)
        self.v[: len(msg.velocity)] = msg.velocity
        self.last_ns = self.now_ns()

    def on_tick(self, now_ns):
        if now_ns - self.last_ns > 100_000_000:
            self.v = np.zeros(3)
        self.pos = self.pos + self.v * DT
        self.velocity_at[now_ns] = self.v[:2].copy()
        self.emit("state.arm", EffectorState, position=self.pos.copy(), velocity=self.v.copy(),
                  joint_position=np.zeros(7), joint_velocity=np.zeros(7))


def test_open_loop_autopilot_drives_an_effector_through_trials_with_a_simulated_user():
    src, task, arm = SimulatedSource("source"), CenterOutTask("task"), IntegratingArm("arm")
    rt = InlineRuntime([src, task, arm], tick_s=DT, seed=1)
    rt.start()
    rt.inject("event", Event(header=Header(0, 0, "op"), kind="block_start",
                             data={"block": "calibration", "mode": "open_loop"}))
    rt.run_for(120, until=lambda: task.completed_trials("calibration") >= 16)
    m = compute_metrics(task.trials_in("calibration"))
    assert m["trials"] == 16 and m["success_rate"] == 1.0
    assert 0.5 < m["mean_time_to_target_s"] < 1.5
    assert m["path_efficiency"] > 0.95
    # The simulated user, watching with a 0.15 s delay, intends what the
    # autopilot commanded 0.15 s earlier (up to motor noise).
    t_s, v = src.intended_history()
    lagged = np.array([arm.velocity_at.get(round(t * NS) - 150_000_000, np.zeros(2))
                       for t in t_s])
    moving = np.linalg.norm(lagged, axis=1) > 0.05
    assert moving.sum() > 100
    cos = np.sum(v[moving] * lagged[moving], axis=1) / (
        np.linalg.norm(v[moving], axis=1) * np.linalg.norm(lagged[moving], axis=1))
    assert np.median(cos) > 0.95
    ratio = np.linalg.norm(v[moving], axis=1) / np.linalg.norm(lagged[moving], axis=1)
    assert 0.85 < np.median(ratio) < 1.15

"""SimulatedSource node through NodeHarness: cadence, provenance, feedback."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydantic import ValidationError

from bciarm import registry
from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import EffectorState, NeuralFrame, TaskState
from bciarm.sources.simulated import SimulatedSource

NS = 1_000_000_000


def state(h: NodeHarness, pos, topic: str = "state.arm") -> EffectorState:
    return h.make(topic, EffectorState, position=np.asarray(pos, float), velocity=np.zeros(3),
                  joint_position=np.zeros(7), joint_velocity=np.zeros(7))


def task_state(h: NodeHarness, target, phase: str = "reach") -> TaskState:
    return h.make("task", TaskState, block="b", trial=0, phase=phase, mode="closed_loop",
                  target=np.asarray(target, float), target_radius=0.02)


def test_registered_as_simulated():
    assert registry.resolve("source", "simulated") is SimulatedSource


def test_emits_frames_at_bin_cadence_with_own_provenance():
    src = SimulatedSource("src")
    h = NodeHarness(src, tick_s=0.01)
    h.advance(1.0)
    frames = h.sent("neural")
    assert len(frames) == 20
    assert all(isinstance(f, NeuralFrame) for f in frames)
    t = np.array([f.header.t_ns for f in frames])
    np.testing.assert_array_equal(np.diff(t), 50_000_000)
    for i, f in enumerate(frames):
        assert f.header.seq == i
        assert f.header.neural_seq == f.header.seq
        assert f.header.neural_t_ns == f.header.t_ns
        assert f.header.src == "src"
        assert f.counts.shape == (192,) and f.counts.dtype == np.uint16
        assert f.bin_s == 0.05
    assert sum(int(f.counts.sum()) for f in frames) > 0


def test_bin_width_sets_the_tick():
    src = SimulatedSource("src", bin_s=0.02, n_channels=16)
    assert src.tick_s == 0.02
    h = NodeHarness(src, tick_s=0.01)
    h.advance(1.0)
    assert len(h.sent("neural")) == 50
    assert h.sent("neural")[0].bin_s == 0.02


def test_params_validation():
    with pytest.raises(ValidationError):
        SimulatedSource("s", bin_s=0.05, tick_s=0.01)
    with pytest.raises(ValidationError):
        SimulatedSource("s", n_chanels=10)  # typo: extra keys are errors
    with pytest.raises(ValidationError):
        SimulatedSource("s", axes=["x", "q"])
    with pytest.raises(ValidationError):
        SimulatedSource("s", feedback_delay_s=-0.1)
    assert SimulatedSource("s", tick_s=0.05).tick_s == 0.05


def test_runs_at_4096_channels_within_budget():
    src = SimulatedSource("src", n_channels=4096)
    h = NodeHarness(src, tick_s=0.05)
    h.send("state.arm", state(h, [0.0, 0.0, 0.3]))
    h.send("task", task_state(h, [0.1, 0.0, 0.3]))
    t0 = time.perf_counter()
    h.tick(100)
    per_tick = (time.perf_counter() - t0) / 100
    frames = h.sent("neural")
    assert len(frames) == 100 and frames[-1].counts.shape == (4096,)
    # Includes encoding, decoding and delivery of each 8 kB frame; ~0.5 ms here.
    assert per_tick < 10e-3, f"{per_tick * 1e3:.2f} ms per tick"


def test_intention_follows_delayed_feedback():
    src = SimulatedSource("src", noise_rel=0.0, noise_abs=0.0, feedback_delay_s=0.15)
    h = NodeHarness(src, tick_s=0.01)
    h.advance(0.5)
    np.testing.assert_array_equal(src.intended_velocity, [0.0, 0.0])  # nothing seen yet
    # Effector at the origin, target to the right (+x).
    h.send("state.arm", state(h, [0.0, 0.0, 0.3]))
    h.send("task", task_state(h, [0.1, 0.0, 0.3]))
    t_seen = h.now_ns
    h.tick(10)  # 0.1 s < delay
    np.testing.assert_array_equal(src.intended_velocity, [0.0, 0.0])
    h.tick(5)  # 0.15 s
    assert src.intended_velocity[0] > 0.1 and src.intended_velocity[1] == 0
    # The effector jumps past the target: the intention flips one delay later.
    h.send("state.arm", state(h, [0.2, 0.0, 0.3]))
    t_jump = h.now_ns
    h.tick(10)
    assert src.intended_velocity[0] > 0
    h.tick(5)
    assert src.intended_velocity[0] < 0
    assert (h.now_ns - t_jump) == 150_000_000 and t_jump > t_seen
    # Task goes idle: no target, no intention.
    h.send("task", task_state(h, [0.1, 0.0, 0.3], phase="idle"))
    h.tick(15)
    np.testing.assert_array_equal(src.intended_velocity, [0.0, 0.0])


def test_history_records_every_frame():
    src = SimulatedSource("src", n_channels=8)
    h = NodeHarness(src, tick_s=0.05)
    h.send("state.arm", state(h, [0.0, 0.0, 0.3]))
    h.send("task", task_state(h, [0.0, 0.1, 0.3]))
    h.tick(20)
    t, v = src.intended_history()
    frames = h.sent("neural")
    assert v.shape == (20, 2)
    np.testing.assert_allclose(t, [f.header.t_ns / NS for f in frames])
    assert src.history_seq == [f.header.seq for f in frames]
    np.testing.assert_array_equal(v[-1], src.intended_velocity)


def test_follows_only_the_named_effector():
    src = SimulatedSource("src", effector="arm", noise_rel=0.0, noise_abs=0.0)
    h = NodeHarness(src, tick_s=0.05)
    h.send("state.other", state(h, [0.0, 0.0, 0.3], topic="state.other"))
    h.send("task", task_state(h, [0.1, 0.0, 0.3]))
    h.tick(10)
    np.testing.assert_array_equal(src.intended_velocity, [0.0, 0.0])
    h.send("state.arm", state(h, [0.0, 0.0, 0.3]))
    h.tick(10)
    assert src.intended_velocity[0] > 0


def test_counts_carry_the_intention():
    """Neural activity differs between opposite intentions (tuning reaches the frames)."""
    def mean_counts(target_x: float) -> np.ndarray:
        src = SimulatedSource("src", population_seed=1)
        h = NodeHarness(src, tick_s=0.05, seed=2)
        h.send("state.arm", state(h, [0.0, 0.0, 0.3]))
        h.send("task", task_state(h, [target_x, 0.0, 0.3]))
        h.tick(400)
        pop = src.population
        counts = np.array([f.counts for f in h.sent("neural")[10:]], float)
        return counts.mean(axis=0), pop

    right, pop = mean_counts(0.5)
    left, _ = mean_counts(-0.5)
    diff = right - left
    pd_x = pop.preferred_direction[:, 0]
    tuned = pop.tuned
    # Units preferring +x fire more when reaching right, and vice versa.
    assert np.corrcoef(diff[tuned], (pop.depth_hz * pd_x)[tuned])[0, 1] > 0.8


def test_deterministic_for_a_seed_and_population_seed_fixes_the_subject():
    def run(seed, **kw):
        src = SimulatedSource("src", n_channels=32, **kw)
        h = NodeHarness(src, tick_s=0.05, seed=seed)
        h.send("state.arm", state(h, [0.0, 0.0, 0.3]))
        h.send("task", task_state(h, [0.1, 0.0, 0.3]))
        h.tick(20)
        return src, np.array([f.counts for f in h.sent("neural")])

    (a, ca), (_, cb), (c, cc) = run(1), run(1), run(2)
    np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(ca, cc)
    assert not np.array_equal(a.population.preferred_direction, c.population.preferred_direction)
    (d, _), (e, _) = run(1, population_seed=7), run(2, population_seed=7)
    np.testing.assert_array_equal(d.population.preferred_direction,
                                  e.population.preferred_direction)


def test_three_axes():
    src = SimulatedSource("src", axes=["x", "y", "z"], n_channels=16, noise_rel=0.0,
                          noise_abs=0.0)
    h = NodeHarness(src, tick_s=0.05)
    h.send("state.arm", state(h, [0.0, 0.0, 0.3]))
    h.send("task", task_state(h, [0.0, 0.0, 0.4]))
    h.tick(5)
    assert src.intended_velocity.shape == (3,) and src.intended_velocity[2] > 0

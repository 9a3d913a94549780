"""Unit and property tests of the safety chain (pure NumPy, no device)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bciarm.effectors.safety import (
    ACCEL,
    ESTOP,
    INVALID,
    JOINT_ACCEL,
    JOINT_INVALID,
    JOINT_LIMIT,
    JOINT_SPEED,
    SPEED,
    WATCHDOG,
    WORKSPACE,
    CartesianSafety,
    EStopLatch,
    JointSafety,
    braking_speed,
    clip_norm,
)

TICK = 0.01
LOWER = np.array([-0.3, -0.3, 0.7])
UPPER = np.array([0.1, 0.3, 1.1])


def make_cart(**kw) -> CartesianSafety:
    args = dict(max_speed=0.25, max_accel=1.0, watchdog_s=0.1, tick_s=TICK, dim=3, axes=(0, 1),
                workspace=(LOWER, UPPER))
    args.update(kw)
    return CartesianSafety(**args)


# --------------------------------------------------------------------------- helpers


def test_clip_norm_keeps_direction_and_survives_huge_values():
    v, clipped = clip_norm(np.array([3.0, 4.0]), 1.0)
    assert clipped and np.allclose(v, [0.6, 0.8])
    v, clipped = clip_norm(np.array([1e308, -1e308, 1e308]), 0.25)
    assert clipped and np.all(np.isfinite(v))
    assert np.isclose(np.linalg.norm(v), 0.25)
    assert np.allclose(v / np.linalg.norm(v), np.array([1, -1, 1]) / np.sqrt(3))
    v, clipped = clip_norm(np.array([0.1, 0.0]), 1.0)
    assert not clipped and np.allclose(v, [0.1, 0.0])
    v, clipped = clip_norm(np.zeros(3), 1.0)
    assert not clipped and np.all(v == 0)


def test_braking_speed_is_exact_discrete_envelope():
    a, dt = 1.0, 0.01
    for d in [0.0, 1e-4, 0.003, 0.05, 0.5]:
        v = float(braking_speed(np.array(d), a, dt))
        # Brake from v: travel must fit in d; from slightly more it must not.
        def travel(v0: float) -> float:
            total, v_ = 0.0, v0
            while v_ > 0:
                total += v_ * dt
                v_ -= a * dt
            return total
        assert travel(v) <= d + 1e-12
        assert travel(v * 1.01 + 1e-9) > d
    assert float(braking_speed(np.array(-0.1), a, dt)) == 0.0


def test_estop_latch():
    latch = EStopLatch()
    assert not latch.latched
    latch.trigger("button")
    latch.trigger("again")
    assert latch.latched and latch.count == 2 and latch.reason == "again"
    assert latch.resume() is True
    assert latch.resume() is False


# --------------------------------------------------------------------------- Cartesian guards


def run(safety: CartesianSafety, intents, position, steps=1, t0=0.0):
    out = None
    t = t0
    for k in range(steps):
        t = t0 + (k + 1) * TICK
        if intents is not None:
            safety.offer(intents, t)
        out = safety.step(t, position)
    return out, t


def test_speed_clamp_and_accel_ramp():
    s = make_cart(workspace=None)
    out = s.step(TICK, None)
    assert np.all(out.velocity == 0) and out.guards == ()
    s.offer([10.0, 0.0], TICK)
    out = s.step(2 * TICK, None)
    assert SPEED in out.guards and ACCEL in out.guards
    assert np.isclose(np.linalg.norm(out.velocity), 1.0 * TICK)  # one tick of max_accel
    for k in range(3, 60):
        s.offer([10.0, 0.0], k * TICK)
        out = s.step(k * TICK, None)
    assert np.allclose(out.velocity, [0.25, 0.0, 0.0])


def test_invalid_intents_rejected_counted_and_brake():
    s = make_cart(workspace=None)
    for k in range(1, 40):
        assert s.offer([0.2, 0.0], k * TICK)
        s.step(k * TICK, None)
    v_before = np.linalg.norm(s.velocity)
    assert v_before > 0.19
    bad = [[np.nan, 0.0], [np.inf, 1.0], [1.0, 2.0, 3.0], [], "x", None, [[1.0, 2.0]]]
    for b in bad:
        assert s.offer(b, 0.4) is False
    assert s.rejected == len(bad)
    out = s.step(0.4, None)
    assert INVALID in out.guards
    # Garbage drops the held intent at once: it brakes now, not after the watchdog.
    assert np.linalg.norm(out.velocity) < v_before
    assert np.isclose(v_before - np.linalg.norm(out.velocity), 1.0 * TICK, atol=1e-9)


def test_watchdog_brakes_at_decel_limit_not_instantly():
    s = make_cart(workspace=None)
    t = 0.0
    for k in range(1, 60):
        t = k * TICK
        s.offer([0.25, 0.0], t)
        s.step(t, None)
    last_intent = t
    speeds = []
    guards = []
    while t < last_intent + 1.0:
        t += TICK
        out = s.step(t, None)
        speeds.append(np.linalg.norm(out.velocity))
        guards.append(out.guards)
    speeds = np.array(speeds)
    times = last_intent + TICK * np.arange(1, speeds.size + 1)
    # The watchdog fires once the intent is older than watchdog_s (to within a tick) ...
    fired = next(i for i, g in enumerate(guards) if WATCHDOG in g)
    assert abs(times[fired] - (last_intent + 0.1)) <= TICK + 1e-9
    assert np.all(speeds[:fired] == pytest.approx(0.25))
    # ... then decelerates at max_accel (not a lock) ...
    assert speeds[fired] == pytest.approx(0.25 - 1.0 * TICK)
    assert np.all(np.diff(speeds[fired:]) >= -1.0 * TICK - 1e-12)
    # ... to zero within watchdog + max_speed/max_accel (+ one tick of rounding).
    bound = 0.1 + 0.25 / 1.0 + TICK
    assert np.all(speeds[times > last_intent + bound] == 0.0)


def test_watchdog_stop_is_anchored_at_the_last_intent_however_late_the_tick():
    """A tick that comes late (the process did not get the CPU) commands what the stop
    should have reached by then: the braking ramp from max_speed at the watchdog's time,
    falling at max_decel — not one or two ticks' worth of braking from where it was."""
    decel, wd = 5.0, 0.05
    deadline = wd + 0.25 / decel          # 0.1 s after the last intent

    def run(late_at: float) -> float:
        s = make_cart(workspace=None, watchdog_s=wd, max_decel=decel)
        for k in range(1, 40):
            s.offer([0.25, 0.0], k * TICK)
            s.step(k * TICK, None)
        t_last = 39 * TICK
        t = t_last
        while t + TICK < t_last + wd - 1e-9:  # on time while the intent is fresh
            t += TICK
            assert np.linalg.norm(s.step(t, None).velocity) == pytest.approx(0.25)
        out = s.step(t_last + late_at, None)
        assert WATCHDOG in out.guards
        return float(np.linalg.norm(out.velocity))

    # independent reference: v(t) = max_speed - decel * (t - watchdog), clipped to [0, max]
    for late_at in (0.055, 0.07, 0.09, 0.099):
        ramp = min(0.25, max(0.0, 0.25 - decel * (late_at - wd)))
        assert run(late_at) <= ramp + 1e-12, late_at
        assert run(late_at) >= ramp - decel * TICK - 1e-12  # still a ramp, not a lock
    assert run(deadline) == 0.0
    assert run(0.5) == 0.0


def test_joints_follow_a_late_braking_tick():
    """Braking, a late tick lets each joint slow down by max_decel x the time elapsed
    (the stop is anchored in time); in normal motion a long gap licenses two ticks only."""
    j = JointSafety([-3.0] * 2, [3.0] * 2, max_velocity=2.0, max_accel=2.0, tick_s=TICK,
                    max_decel=10.0)
    q = np.zeros(2)
    j.step([1.0, -1.0], q, 0.0)
    j.velocity = np.array([1.0, -1.0])
    out = j.step([0.0, 0.0], q, 0.08, braking=True)      # 8 ticks late: 0.8 rad/s allowed
    assert np.allclose(out.velocity, [0.2, -0.2])
    out = j.step([0.0, 0.0], q, 0.2, braking=True)
    assert np.all(out.velocity == 0.0)
    j.velocity = np.array([1.0, -1.0])
    out = j.step([0.0, 0.0], q, 0.3)                      # not braking: 2 ticks at max_accel
    assert np.allclose(out.velocity, [1.0 - 2.0 * 2 * TICK, -(1.0 - 2.0 * 2 * TICK)])


def test_estop_zero_at_once_latched_until_resume():
    s = make_cart(workspace=None)
    for k in range(1, 40):
        s.offer([0.2, 0.1], k * TICK)
        s.step(k * TICK, None)
    s.trigger_estop("test")
    out = s.step(0.4, None)
    assert np.all(out.velocity == 0) and ESTOP in out.guards
    # Intents while latched are ignored.
    assert s.offer([0.2, 0.0], 0.41) is False
    out = s.step(0.41, None)
    assert np.all(out.velocity == 0)
    assert s.resume() is True
    # The old intent is gone: no motion without a fresh one.
    out = s.step(0.42, None)
    assert np.all(out.velocity == 0) and out.guards == ()
    assert s.offer([0.2, 0.0], 0.43)
    out = s.step(0.43, None)
    assert out.velocity[0] > 0


def test_workspace_removes_outward_component_at_the_wall():
    s = make_cart()
    at_wall = np.array([UPPER[0], 0.0, 0.9])
    for k in range(1, 20):
        s.offer([0.2, 0.2], k * TICK)
        out = s.step(k * TICK, at_wall)
    assert WORKSPACE in out.guards
    assert out.velocity[0] == 0.0  # pointing out of the box: removed
    assert out.velocity[1] > 0.1   # along the wall: kept


def test_workspace_stops_before_the_wall_from_full_speed():
    s = make_cart()
    p = np.array([-0.2, 0.0, 0.9])
    for k in range(1, 300):
        s.offer([0.25, 0.0], k * TICK)
        p = p + s.step(k * TICK, p).velocity * TICK
        assert p[0] <= UPPER[0] + 1e-12
    assert p[0] == pytest.approx(UPPER[0], abs=2e-3)


def test_unknown_position_brakes():
    s = make_cart()
    for k in range(1, 30):
        s.offer([0.2, 0.0], k * TICK)
        s.step(k * TICK, np.array([-0.1, 0.0, 0.9]))
    v0 = np.linalg.norm(s.velocity)
    s.offer([0.2, 0.0], 0.3)
    out = s.step(0.3, np.array([np.nan, 0.0, 0.9]))
    assert np.linalg.norm(out.velocity) < v0


def test_constructor_rejects_nonsense():
    with pytest.raises(ValueError):
        make_cart(max_speed=0.0)
    with pytest.raises(ValueError):
        make_cart(max_accel=np.nan)
    with pytest.raises(ValueError):
        make_cart(axes=(0, 0))
    with pytest.raises(ValueError):
        make_cart(workspace=(UPPER, LOWER))


# --------------------------------------------------------------------------- properties

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
huge = st.floats(min_value=-1e308, max_value=1e308)
intent_strategy = st.one_of(
    st.none(),                                                       # no intent this tick
    st.lists(st.floats(-0.5, 0.5), min_size=2, max_size=2),          # sensible
    st.lists(huge, min_size=2, max_size=2),                          # huge
    st.lists(finite_or_not, min_size=2, max_size=2),                 # NaN / Inf
    st.lists(finite_or_not, min_size=0, max_size=5),                 # wrong sizes
    st.just([2.5, -2.5]),                                            # 10x max speed
)
box_point = st.tuples(st.floats(LOWER[0], UPPER[0]), st.floats(LOWER[1], UPPER[1]),
                      st.floats(LOWER[2], UPPER[2]))


@settings(max_examples=150, deadline=None)
@given(intents=st.lists(intent_strategy, min_size=1, max_size=120), start=box_point,
       estop_at=st.one_of(st.none(), st.integers(0, 120)))
def test_cartesian_chain_always_holds(intents, start, estop_at):
    s = make_cart()
    p = np.array(start)
    prev = np.zeros(3)
    for k, intent in enumerate(intents):
        t = (k + 1) * TICK
        if estop_at is not None and k == estop_at:
            s.trigger_estop()
        if intent is not None:
            s.offer(intent, t)
        out = s.step(t, p)
        v = out.velocity
        assert v.shape == (3,) and np.all(np.isfinite(v))
        assert np.linalg.norm(v) <= s.max_speed * (1 + 1e-9)
        if not (estop_at is not None and k == estop_at):  # the e-stop is allowed a hard stop
            assert np.linalg.norm(v - prev) <= s.max_accel * TICK * (1 + 1e-9) + 1e-12
        assert v[2] == 0.0  # 2-D task: the off-plane axis is never commanded
        p = p + v * TICK
        assert np.all(p >= LOWER - 1e-12) and np.all(p <= UPPER + 1e-12), p
        if s.estop.latched:
            assert np.all(v == 0.0)
        prev = v


@settings(max_examples=150, deadline=None)
@given(commands=st.lists(st.one_of(st.lists(huge, min_size=7, max_size=7),
                                   st.lists(st.floats(-3, 3), min_size=7, max_size=7),
                                   st.lists(finite_or_not, min_size=0, max_size=9)),
                         min_size=1, max_size=80),
       start=st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7))
def test_joint_chain_always_holds(commands, start):
    lower = np.array([-2.9, -1.8, -2.9, -3.07, -2.9, -0.09, -2.9])
    upper = np.array([2.9, 1.8, 2.9, -0.07, 2.9, 3.8, 2.9])
    vmax = np.array([1.0, 1.0, 1.0, 1.0, 1.3, 1.3, 1.3])
    js = JointSafety(lower, upper, vmax, max_accel=10.0, margin=0.1, tick_s=TICK)
    # Start inside the limits (joint 4 lives in [-3.07, -0.07]).
    q = np.clip(np.array(start) + np.array([0, 0, 0, -1.5, 0, 1.5, 0]), lower, upper)
    for k, cmd in enumerate(commands):
        out = js.step(cmd, q, (k + 1) * TICK)
        v = out.velocity
        assert v.shape == (7,) and np.all(np.isfinite(v))
        assert np.all(np.abs(v) <= vmax * (1 + 1e-12))
        q_next = q + v * TICK
        assert np.all(q_next >= lower - 1e-12) and np.all(q_next <= upper + 1e-12)
        # Inside the margin, speed toward the limit is at most vmax * distance / margin.
        toward_up = v > 0
        assert np.all(v[toward_up] <= vmax[toward_up] *
                      np.clip((upper - q)[toward_up] / 0.1, 0, 1) + 1e-9)
        toward_down = v < 0
        assert np.all(-v[toward_down] <= vmax[toward_down] *
                      np.clip((q - lower)[toward_down] / 0.1, 0, 1) + 1e-9)
        q = q_next


def test_joint_guards_report_by_name():
    js = JointSafety([-1.0, -1.0], [1.0, 1.0], [1.0, 1.0], max_accel=10.0, margin=0.1,
                     tick_s=TICK)
    out = js.step([100.0, 0.0], [0.0, 0.0], TICK)
    assert JOINT_SPEED in out.guards and JOINT_ACCEL in out.guards
    assert out.velocity[0] == pytest.approx(10.0 * TICK)
    # Near the upper limit, motion toward it is scaled down ...
    js = JointSafety([-1.0, -1.0], [1.0, 1.0], [1.0, 1.0], max_accel=1e6, margin=0.1,
                     tick_s=TICK)
    out = js.step([0.5, -0.5], [0.95, 0.95], TICK)
    assert JOINT_LIMIT in out.guards
    assert out.velocity[0] == pytest.approx(0.25)   # half-way into the margin: half speed
    assert out.velocity[1] == pytest.approx(-0.5)   # away from the limit: untouched
    out = js.step([0.5, 0.0], [1.0, 0.0], 2 * TICK)
    assert out.velocity[0] == 0.0                   # at the limit: nothing further
    out = js.step([np.nan, 0.0], [0.0, 0.0], 3 * TICK)
    assert JOINT_INVALID in out.guards and js.rejected == 1
    js.trigger_estop()
    out = js.step([0.5, 0.5], [0.0, 0.0], 4 * TICK)
    assert np.all(out.velocity == 0) and out.guards == (ESTOP,)
    js.resume()
    assert np.any(js.step([0.5, 0.5], [0.0, 0.0], 5 * TICK).velocity != 0)


def test_joint_hard_limit_when_braking_cannot_make_it():
    # Moving fast toward a limit with a weak acceleration limit: the margin's
    # scaled target cannot be reached in one tick, so the hard stop must act.
    js = JointSafety([-1.0], [1.0], [1.0], max_accel=1.0, margin=0.1, tick_s=TICK)
    js.velocity = np.array([1.0])
    out = js.step([1.0], [0.995], TICK)
    assert JOINT_LIMIT in out.guards
    assert 0.995 + out.velocity[0] * TICK <= 1.0 + 1e-12
    out = js.step([1.0], [1.0], 2 * TICK)
    assert out.velocity[0] <= 0.0

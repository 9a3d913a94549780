"""Wheelchair motion pieces without physics: jerk limiter, stopping figures, intake, shared control."""

import math

import numpy as np
import pytest

from bciarm.effectors.wheelchair.assist import AssistConfig, Footprint, SharedControl, arc_poses
from bciarm.effectors.wheelchair.intake import IntentShaper, dead_zone
from bciarm.effectors.wheelchair.motion import JerkLimiter, stopping_bound, stopping_distance
from bciarm.effectors.wheelchair.profiles import PROFILES

DT = 0.01


def run(lim, targets):
    v = [lim.v]
    for t in targets:
        v.append(lim.step(t, DT))
    v = np.array(v)
    a = np.diff(v) / DT
    j = np.diff(np.r_[0.0, a]) / DT
    return v, a, j


@pytest.mark.parametrize("seed", range(5))
def test_jerk_limiter_respects_accel_decel_and_jerk(seed):
    rng = np.random.default_rng(seed)
    lim = JerkLimiter(accel=0.6, decel=1.0, jerk=2.0)
    targets = np.repeat(rng.uniform(-0.3, 0.8, 60), 25)
    v, a, j = run(lim, targets)
    assert np.abs(j).max() <= 2.0 + 1e-9
    assert np.abs(a).max() <= 1.0 + 1e-9
    speeding = (np.sign(a) == np.sign(v[1:])) & (np.abs(v[1:]) > np.abs(v[:-1]))
    assert np.abs(a[speeding]).max() <= 0.6 + 1e-9


def test_jerk_limiter_reaches_the_target_without_overshoot():
    lim = JerkLimiter(accel=0.6, decel=1.0, jerk=2.0)
    v, _, _ = run(lim, [0.8] * 400)
    assert v[-1] == pytest.approx(0.8) and v.max() <= 0.8 + 1e-12
    v, _, _ = run(lim, [0.0] * 400)
    assert v[-1] == 0.0 and v.min() >= -1e-12


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_stopping_bound_covers_the_simulated_stop(name):
    p = PROFILES[name]
    for speed in np.linspace(0.05, p.max_forward, 8):
        d, _ = stopping_distance(speed, p.decel, p.jerk, DT)
        assert stopping_bound(speed, 0.0, p.decel, p.jerk) >= d
    # Still accelerating when the brake is needed: the bound covers that too.
    lim = JerkLimiter(p.accel, p.decel, p.jerk)
    for _ in range(40):
        lim.step(p.max_forward, DT)
    bound = stopping_bound(lim.v, lim.a, p.decel, p.jerk)
    d = 0.0
    while lim.v > 0 or lim.a != 0:
        v0 = lim.v
        lim.step(0.0, DT)
        d += 0.5 * (v0 + lim.v) * DT
    assert d <= bound


def test_documented_stopping_distances():
    # The figures in the README (intent loss at top speed; the default watchdog trips
    # 0.09 s after the last intent: stop_within_s 0.1 minus a tick).
    from bciarm.effectors.wheelchair.controller import WheelchairConfig

    watchdog = WheelchairConfig().watchdog_timeout_s
    assert watchdog == pytest.approx(0.09)
    d_in, t_in = stopping_distance(PROFILES["indoor"].max_forward, PROFILES["indoor"].decel,
                                   PROFILES["indoor"].jerk, DT, watchdog)
    d_out, t_out = stopping_distance(PROFILES["outdoor"].max_forward, PROFILES["outdoor"].decel,
                                     PROFILES["outdoor"].jerk, DT, watchdog)
    assert d_in == pytest.approx(0.59, abs=0.005) and t_in == pytest.approx(1.39, abs=0.011)
    assert d_out == pytest.approx(1.94, abs=0.005) and t_out == pytest.approx(2.07, abs=0.011)


def test_dead_zone_is_continuous_and_reaches_full_scale():
    u = np.array([0.05, -0.12, 0.13, -1.0, 1.0])
    out = dead_zone(u, 0.12)
    assert out[0] == 0 and out[1] == 0 and 0 < out[2] < 0.02
    assert out[3] == -1.0 and out[4] == 1.0


def test_resting_noise_never_creeps_the_chair_but_a_deliberate_command_wakes_it():
    rng = np.random.default_rng(1)
    shaper = IntentShaper(dead_zone=0.12, idle_s=1.0, wake=0.35, wake_s=0.2)
    outs = [shaper.shape(rng.normal(0, 0.08, 2), k * 0.05) for k in range(2400)]  # 2 min
    assert shaper.idle and not np.any(outs)
    t0 = 2400 * 0.05
    woke = None
    for k in range(20):
        out = shaper.shape(np.array([0.6, 0.0]), t0 + k * 0.05)
        if np.any(out) and woke is None:
            woke = k * 0.05
    assert woke is not None and woke <= 0.2 + 1e-9


FP = Footprint(front=0.5, rear=0.5, half_width=0.31)


def stop_d(v):
    return stopping_bound(v, 0, 1.0, 2.0) + 0.02 * v


def stop_a(w):
    return stopping_bound(w, 0, 2.0, 6.0) + 0.02 * w


def test_open_space_leaves_the_user_in_charge():
    sc = SharedControl(FP, AssistConfig(level=1.0))
    far = np.array([[4.0, 3.0], [-4.0, 3.5], [0.0, -3.9]])
    for v, w in ((0.8, 0.0), (0.5, -0.7), (-0.3, 0.2), (0.0, 0.8)):
        out = sc.step(far, v, w, 0.8, 0.8, stop_d, stop_a)
        assert (out.v, out.w) == (v, w) and out.guards == ()


def test_wall_ahead_slows_then_stops_before_it_at_any_level():
    wall = np.array([[x, y] for x in (1.0,) for y in np.linspace(-2, 2, 81)])
    for level in (0.0, 1.0):
        sc = SharedControl(FP, AssistConfig(level=level))
        out = sc.step(wall, 0.8, 0.0, 0.8, 0.8, stop_d, stop_a)
        assert out.v < 0.8
        assert ("obstacle" in out.guards) if level == 0 else ("slow" in out.guards)
        # What is allowed really stops short of the wall (front at 0.5 m, wall at 1.0 m).
        assert 0.5 + stop_d(out.v) <= 1.0 - sc.config.margin + 1e-6
        # Backing away is never blocked.
        back = sc.step(wall, -0.3, 0.0, 0.8, 0.8, stop_d, stop_a)
        assert back.v == -0.3


def test_repulsion_turns_away_and_centring_turns_to_the_middle():
    sc = SharedControl(FP, AssistConfig(level=1.0))
    left_wall = np.array([[x, 0.55] for x in np.linspace(-0.5, 1.5, 41)])
    out = sc.step(left_wall, 0.5, 0.0, 0.8, 0.8, stop_d, stop_a)
    assert out.w < 0 and "repulsion" in out.guards
    # Doorway 0.85 m wide, 0.8 m ahead, its middle 0.1 m to the left.
    jamb_l = np.array([[0.8 + dx, 0.1 + 0.425 + dy] for dx in (0, 0.05, 0.1)
                       for dy in np.linspace(0, 0.5, 11)])
    jamb_r = np.array([[0.8 + dx, 0.1 - 0.425 - dy] for dx in (0, 0.05, 0.1)
                       for dy in np.linspace(0, 0.5, 11)])
    out = sc.step(np.vstack([jamb_l, jamb_r]), 0.4, 0.0, 0.8, 0.8, stop_d, stop_a)
    assert out.w > 0 and "centring" in out.guards
    off = SharedControl(FP, AssistConfig(level=0.0)).step(
        np.vstack([jamb_l, jamb_r]), 0.4, 0.0, 0.8, 0.8, stop_d, stop_a)
    assert off.w == 0.0 and "centring" not in off.guards


def _doorway(wall_x=(-0.45, -0.35), half_gap=0.425):
    """Points of a 0.85 m doorway (0.10 m wall) around the chair's rear half: jamb reveals and
    the wall faces beside the opening."""
    xs = np.linspace(wall_x[0], wall_x[1], 5)
    reveal = [[x, sgn * half_gap] for x in xs for sgn in (1, -1)]
    faces = [[x, sgn * y] for x in wall_x for y in np.linspace(half_gap, 1.5, 20)
             for sgn in (1, -1)]
    return np.array(reveal + faces)


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_guard_vetoes_only_the_turn_that_swings_into_a_jamb(level):
    """Rear half still in a doorway: the turn is cut back, the forward speed that takes the
    chair out of it is not (a common scale of v and ω would have slowed it too)."""
    sc = SharedControl(FP, AssistConfig(level=level))
    pts = _doorway()
    out = sc.step(pts, 0.3, 0.8, 0.8, 0.8, stop_d, stop_a)
    assert "obstacle" in out.guards
    assert out.v == pytest.approx(0.3) and 0.0 <= out.w < 0.8
    # What it allows really is free, and the full turn really was not.
    d_now = FP.distance(pts)
    assert not sc._swept_collides(pts, d_now, out.v, out.w, stop_d(out.v), stop_a(out.w))
    assert sc._swept_collides(pts, d_now, 0.3, 0.8, stop_d(0.3), stop_a(0.8))
    # Backing straight out of the doorway is never cut.
    back = sc.step(pts, -0.3, 0.0, 0.8, 0.8, stop_d, stop_a)
    assert back.v == -0.3 and back.w == 0.0


def test_guard_allows_turning_away_from_and_moving_along_a_jamb():
    """A jamb edge 3 cm off the chair's left side near the front (inside the margin)."""
    sc = SharedControl(FP, AssistConfig(level=0.0))
    jamb = np.array([[0.45, 0.34], [0.45, 0.40], [0.45, 0.46]])
    away = sc.step(jamb, 0.0, -0.8, 0.8, 0.8, stop_d, stop_a)  # turn right on the spot
    assert (away.v, away.w) == (0.0, -0.8) and away.guards == ()
    into = sc.step(jamb, 0.0, 0.8, 0.8, 0.8, stop_d, stop_a)  # turn left: the side swings in
    assert "obstacle" in into.guards and into.w < 0.8
    for v in (0.5, -0.3):  # rolling along it, either way
        along = sc.step(jamb, v, 0.0, 0.8, 0.8, stop_d, stop_a)
        assert (along.v, along.w) == (v, 0.0)
    # Rolling on while turning into it: the roll is kept, the turn is cut.
    mixed = sc.step(jamb, 0.5, 0.8, 0.8, 0.8, stop_d, stop_a)
    assert mixed.v == pytest.approx(0.5) and mixed.w < 0.8


def test_guard_lets_the_chair_back_away_from_a_wall_it_faces():
    sc = SharedControl(FP, AssistConfig(level=0.0))
    wall = np.array([[0.53, y] for y in np.linspace(-1.5, 1.5, 61)])  # 3 cm ahead
    fwd = sc.step(wall, 0.5, 0.3, 0.8, 0.8, stop_d, stop_a)
    assert fwd.v == 0.0
    back = sc.step(wall, -0.3, 0.5, 0.8, 0.8, stop_d, stop_a)
    assert back.v == pytest.approx(-0.3)


def test_arc_poses_follow_a_circle():
    poses = arc_poses(0.5, 0.5, math.pi / 2, math.pi / 2, 4)  # quarter circle, radius 1
    assert np.allclose(poses[-1], [1.0, 1.0, math.pi / 2])
    assert np.allclose(np.hypot(poses[:, 0], poses[:, 1] - 1.0), 1.0)


def test_stop_contract_trips_the_watchdog_within_stop_within_s():
    from pydantic import ValidationError

    from bciarm.effectors.wheelchair.controller import WheelchairConfig

    assert WheelchairConfig().watchdog_timeout_s == pytest.approx(0.1 - 0.01)
    assert WheelchairConfig(stop_within_s=0.2).watchdog_timeout_s == pytest.approx(0.19)
    assert WheelchairConfig(watchdog_s=0.05).watchdog_timeout_s == 0.05
    with pytest.raises(ValidationError, match="watchdog_s.*exceeds stop_within_s"):
        WheelchairConfig(watchdog_s=0.15)

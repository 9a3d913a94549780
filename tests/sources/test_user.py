"""SimulatedUser: delayed feedback, speed profile, seeded motor noise."""

from __future__ import annotations

import numpy as np
import pytest

from bciarm.sources.user import SimulatedUser, aim_velocity
from bciarm.space import axis_indices


def quiet_user(**kw) -> SimulatedUser:
    return SimulatedUser(2, noise_rel=0.0, noise_abs=0.0, rng=0, **kw)


def test_intends_zero_before_anything_is_seen():
    u = quiet_user()
    np.testing.assert_array_equal(u.intend(0.0), [0.0, 0.0])
    u.observe(1.0, [0.0, 0.0], [0.1, 0.0])
    # Seen at 1.0, but not yet perceived (delay 0.15 s).
    np.testing.assert_array_equal(u.intend(1.1), [0.0, 0.0])
    assert u.intend(1.15)[0] > 0


def test_intends_zero_without_target_even_with_noise():
    u = SimulatedUser(2, rng=0)  # default noise
    u.observe(0.0, [0.0, 0.0], None)
    np.testing.assert_array_equal(u.intend(1.0), [0.0, 0.0])


def test_uses_the_observation_from_t_minus_delay():
    delay = 0.15
    u = quiet_user(feedback_delay_s=delay)
    target = np.array([0.0, 0.0])
    # The effector sits left of the target until t = 1.0, then jumps right of it.
    for t in np.arange(0.0, 1.0, 0.01):
        u.observe(t, [-0.1, 0.0], target)
    for t in np.arange(1.0, 2.0, 0.01):
        u.observe(t, [0.1, 0.0], target)
        if t < 1.0 + delay - 1e-6:
            # Still acting on the old position: push right (+x).
            assert u.intend(t)[0] > 0, t
    # The change is perceived exactly one delay later, not before.
    assert u.intend(1.0 + delay - 0.01)[0] > 0
    assert u.intend(1.0 + delay)[0] < 0


@pytest.mark.parametrize("delay", [0.1, 0.2])
def test_delay_is_configurable(delay):
    u = quiet_user(feedback_delay_s=delay)
    u.observe(0.0, [0.0, 0.0], [0.1, 0.0])
    u.observe(0.5, [0.0, 0.0], [-0.1, 0.0])  # the target moves
    assert u.intend(0.5 + delay - 0.01)[0] > 0
    assert u.intend(0.5 + delay)[0] < 0


def test_target_is_also_seen_through_the_delay():
    u = quiet_user()
    u.observe(0.0, [0.0, 0.0], None)
    u.observe(0.5, [0.0, 0.0], [0.0, 0.1])  # target appears
    np.testing.assert_array_equal(u.intend(0.6), [0.0, 0.0])
    assert u.intend(0.65)[1] > 0


def test_speed_profile_saturates_and_tapers_to_zero():
    vmax, gain = 0.15, 2.5
    far = aim_velocity(np.zeros(2), np.array([1.0, 0.0]), vmax, gain)
    assert np.linalg.norm(far) == pytest.approx(vmax, rel=1e-6)
    assert far[0] > 0 and far[1] == 0
    very_far = aim_velocity(np.zeros(2), np.array([0.0, -10.0]), vmax, gain)
    assert np.linalg.norm(very_far) <= vmax + 1e-12
    near = aim_velocity(np.zeros(2), np.array([0.002, 0.0]), vmax, gain)
    assert np.linalg.norm(near) == pytest.approx(gain * 0.002, rel=1e-3)
    np.testing.assert_array_equal(aim_velocity(np.ones(2), np.ones(2), vmax, gain), [0, 0])
    # Monotone in distance.
    speeds = [np.linalg.norm(aim_velocity(np.zeros(2), np.array([d, 0.0]), vmax, gain))
              for d in np.linspace(0, 0.3, 50)]
    assert np.all(np.diff(speeds) > 0)


def test_user_speed_saturates_at_preferred_speed():
    u = quiet_user(preferred_speed=0.18)
    u.observe(0.0, [0.0, 0.0], [0.5, 0.5])
    assert np.linalg.norm(u.intend(1.0)) == pytest.approx(0.18, rel=1e-4)


def test_noise_is_seeded_and_scaled():
    def run(seed):
        u = SimulatedUser(2, noise_rel=0.2, noise_abs=0.01, rng=seed)
        u.observe(0.0, [0.0, 0.0], [1.0, 0.0])  # far: intended speed = preferred
        return np.array([u.intend(1.0 + 0.05 * i) for i in range(4000)])

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    clean = np.array([0.15, 0.0])
    err = a - clean
    assert np.all(np.abs(err.mean(axis=0)) < 0.002)  # unbiased
    expected_sd = np.sqrt((0.2 * 0.15) ** 2 + 0.01 ** 2)
    np.testing.assert_allclose(err.std(axis=0), expected_sd, rtol=0.1)


def test_intended_velocity_attribute_and_buffer_stays_small():
    u = quiet_user()
    for i in range(10_000):
        t = 0.01 * i
        u.observe(t, [0.0, 0.0], [0.1, 0.0])
        v = u.intend(t)
    np.testing.assert_array_equal(u.intended_velocity, v)
    assert len(u._seen) <= 20  # about delay / observation period


def test_observations_must_be_in_time_order():
    u = quiet_user()
    u.observe(1.0, [0, 0], None)
    with pytest.raises(ValueError):
        u.observe(0.5, [0, 0], None)


def test_works_in_three_dimensions():
    u = SimulatedUser(3, noise_rel=0.0, noise_abs=0.0)
    u.observe(0.0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.1])
    v = u.intend(0.2)
    assert v.shape == (3,) and v[2] > 0 and v[0] == 0


def test_axis_indices():
    assert list(axis_indices(["x", "y"])) == [0, 1]
    assert list(axis_indices(["z"])) == [2]
    for bad in ([], ["x", "x"], ["w"]):
        with pytest.raises(ValueError):
            axis_indices(bad)


def test_observation_is_weaker_later_and_noisier_only_while_watching():
    from bciarm.sources.user import ObservationSpec

    obs = ObservationSpec(engagement=0.5, extra_lag_s=0.1, noise_rel=0.0)
    u = quiet_user(feedback_delay_s=0.15, observation=obs)
    target = np.array([0.0, 0.0])
    # Left of the target until t = 1.0, right of it afterwards.
    for t in np.arange(0.0, 1.0, 0.01):
        u.observe(t, [-0.1, 0.0], target)
    u.observe(1.0, [0.1, 0.0], target)
    u.observing = True
    left = aim_velocity([-0.1, 0.0], target, u.preferred_speed, u.gain)
    right = aim_velocity([0.1, 0.0], target, u.preferred_speed, u.gain)
    # Watching: half the aim, and the jump is perceived 0.15 + 0.1 s later.
    np.testing.assert_allclose(u.intend(1.2), 0.5 * left)
    np.testing.assert_allclose(u.intend(1.25), 0.5 * right)
    # In control again: the full aim at the 0.15 s old view.
    u.observing = False
    np.testing.assert_allclose(u.intend(1.3), right)
    # The extra noise is drawn only while watching.
    noisy = SimulatedUser(2, noise_rel=0.0, noise_abs=0.0, rng=0,
                          observation=ObservationSpec(noise_rel=0.5))
    noisy.observe(0.0, [-0.1, 0.0], target)
    np.testing.assert_allclose(noisy.intend(1.0), left)
    noisy.observing = True
    draws = np.array([noisy.intend(1.0 + 0.05 * i) for i in range(2000)])
    np.testing.assert_allclose(draws.mean(axis=0), left, atol=0.01)
    np.testing.assert_allclose(draws.std(axis=0), 0.5 * np.linalg.norm(left), rtol=0.1)
    assert not ObservationSpec().enabled and obs.enabled
    with pytest.raises(ValueError):
        ObservationSpec(engagement=0.0)

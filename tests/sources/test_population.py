"""CosineTunedPopulation: rates, Poisson counts, tuning, seeding, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bciarm.sources.population import CosineTunedPopulation, unit_vectors


def random_velocities(rng: np.random.Generator, t: int, k: int = 2, speed: float = 0.15):
    return rng.uniform(-speed, speed, size=(t, k))


def test_rates_are_non_negative_even_for_extreme_velocities():
    pop = CosineTunedPopulation(192, 2, rng=0)
    rng = np.random.default_rng(1)
    v = random_velocities(rng, 2000, speed=2.0)  # 13x v_ref: many units rectified
    r = pop.rates(v)
    assert r.shape == (2000, 192)
    assert (r >= 0).all()
    assert (r == 0).any(), "rectification never happened: the test did not probe it"


def test_rates_follow_the_cosine_model():
    pop = CosineTunedPopulation(64, 3, rng=2, untuned_fraction=0.0, baseline_hz=30.0)
    v = np.array([0.05, -0.02, 0.01])
    expected = pop.baseline_hz + pop.depth_hz * (pop.preferred_direction @ v) / pop.v_ref
    np.testing.assert_allclose(pop.rates(v), np.maximum(expected, 0.0))
    # At zero velocity every unit fires at its baseline.
    np.testing.assert_allclose(pop.rates(np.zeros(3)), pop.baseline_hz)


def test_counts_have_poisson_mean_and_variance():
    pop = CosineTunedPopulation(50, 2, rng=3)
    v = np.array([0.1, -0.05])
    bin_s, t = 0.05, 20_000
    counts = pop.sample(np.tile(v, (t, 1)), bin_s, np.random.default_rng(4)).astype(float)
    lam = pop.rates(v) * bin_s
    mean = counts.mean(axis=0)
    # 5 standard errors per unit (50 units: a false alarm is ~1e-5 likely) plus
    # a small floor; a wrong scaling (e.g. rate not multiplied by bin_s, or
    # bin_s applied twice) is off by far more.
    tol = 5 * np.sqrt(lam / t) + 1e-3
    assert np.all(np.abs(mean - lam) <= tol), np.max(np.abs(mean - lam) / tol)
    fano = counts.var(axis=0).sum() / counts.mean(axis=0).sum()
    assert 0.95 < fano < 1.05


def test_sample_returns_uint16_of_shape_n():
    pop = CosineTunedPopulation(10, 2, rng=0)
    c = pop.sample(np.zeros(2), 0.05, np.random.default_rng(0))
    assert c.dtype == np.uint16 and c.shape == (10,)
    cc = pop.sample(np.zeros((7, 2)), 0.05, np.random.default_rng(0))
    assert cc.dtype == np.uint16 and cc.shape == (7, 10)


def test_untuned_fraction_is_respected():
    for n, frac in [(192, 0.2), (100, 0.35), (4096, 0.2), (10, 0.0), (10, 1.0)]:
        pop = CosineTunedPopulation(n, 2, rng=n, untuned_fraction=frac)
        assert (~pop.tuned).sum() == round(frac * n)
        assert np.all(pop.depth_hz[~pop.tuned] == 0)
        assert np.all(pop.depth_hz[pop.tuned] > 0)
    pop = CosineTunedPopulation(192, 2, rng=5)
    r1, r2 = pop.rates(np.array([0.15, 0.0])), pop.rates(np.array([-0.15, 0.1]))
    np.testing.assert_array_equal(r1[~pop.tuned], r2[~pop.tuned])
    assert np.all(r1[pop.tuned] != r2[pop.tuned])


def test_tuning_is_recoverable_by_linear_regression():
    pop = CosineTunedPopulation(192, 2, rng=6)
    rng = np.random.default_rng(7)
    v = random_velocities(rng, 6000, speed=0.12)  # below v_ref: little rectification
    counts = pop.sample(v, 0.05, rng).astype(float)
    X = np.c_[np.ones(len(v)), v]
    beta, *_ = np.linalg.lstsq(X, counts, rcond=None)
    resid = counts - X @ beta
    r2 = 1 - resid.var(axis=0) / counts.var(axis=0)
    tuned = pop.tuned
    # Tuned units: clearly above chance; untuned: at chance (~2/6000).
    assert np.median(r2[tuned]) > 0.01
    assert np.median(r2[~tuned]) < 0.002
    assert r2[tuned].mean() > 5 * r2[~tuned].mean()
    # Preferred directions come back for well-modulated units.
    strong = tuned & (pop.depth_hz > np.median(pop.depth_hz[tuned]))
    fitted = beta[1:].T[strong]
    cos = np.sum(fitted * pop.preferred_direction[strong], axis=1) / np.linalg.norm(fitted, axis=1)
    assert np.median(cos) > 0.9


def test_population_decodes_but_imperfectly():
    """Realistic defaults: a least-squares linear read-out of 192 channels from
    single 50 ms bins explains a good part, not all, of the velocity."""
    pop = CosineTunedPopulation(192, 2, rng=8)
    rng = np.random.default_rng(9)
    v = random_velocities(rng, 8000, speed=0.15)
    counts = pop.sample(v, 0.05, rng).astype(float)
    X = np.c_[np.ones(len(v)), counts]
    train, test = slice(0, 6000), slice(6000, None)
    w, *_ = np.linalg.lstsq(X[train], v[train], rcond=None)
    pred = X[test] @ w
    r2 = 1 - ((v[test] - pred) ** 2).sum(0) / ((v[test] - v[test].mean(0)) ** 2).sum(0)
    assert np.all(r2 > 0.3) and np.all(r2 < 0.9), r2


def test_same_seed_same_population_and_counts():
    a = CosineTunedPopulation(192, 2, rng=11)
    b = CosineTunedPopulation(192, 2, rng=np.random.default_rng(11))
    c = CosineTunedPopulation(192, 2, rng=12)
    np.testing.assert_array_equal(a.preferred_direction, b.preferred_direction)
    np.testing.assert_array_equal(a.baseline_hz, b.baseline_hz)
    assert not np.array_equal(a.preferred_direction, c.preferred_direction)
    v = np.array([0.05, 0.1])
    ca = a.sample(v, 0.05, np.random.default_rng(3))
    cb = b.sample(v, 0.05, np.random.default_rng(3))
    np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(ca, a.sample(v, 0.05, np.random.default_rng(4)))


def test_batch_equals_one_bin_at_a_time():
    pop = CosineTunedPopulation(32, 2, rng=0)
    v = random_velocities(np.random.default_rng(1), 20)
    np.testing.assert_allclose(pop.rates(v), np.vstack([pop.rates(x) for x in v]))


def test_baselines_within_range_and_realistic():
    pop = CosineTunedPopulation(4096, 2, rng=0)
    assert pop.baseline_hz.min() >= 2.0 and pop.baseline_hz.max() <= 60.0
    assert 8.0 < np.median(pop.baseline_hz) < 16.0
    assert 2.0 < np.median(pop.depth_hz[pop.tuned]) < 6.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_preferred_directions_are_unit_vectors(k):
    pop = CosineTunedPopulation(500, k, rng=k)
    np.testing.assert_allclose(np.linalg.norm(pop.preferred_direction, axis=1), 1.0)
    # Roughly isotropic: the mean direction is near zero.
    assert np.linalg.norm(pop.preferred_direction.mean(axis=0)) < 0.15
    assert unit_vectors(3, k, np.random.default_rng(0)).shape == (3, k)


def test_vectorised_and_fast_at_4096_channels():
    pop = CosineTunedPopulation(4096, 2, rng=0)
    rng = np.random.default_rng(0)
    v = np.array([0.1, 0.05])
    pop.sample(v, 0.05, rng)
    t0 = time.perf_counter()
    for _ in range(200):
        c = pop.sample(v, 0.05, rng)
    per_bin = (time.perf_counter() - t0) / 200
    assert c.shape == (4096,)
    # ~0.2 ms here; 5 ms is a 50 ms bin budget shared with the whole graph.
    assert per_bin < 5e-3, f"{per_bin * 1e3:.2f} ms per bin"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        CosineTunedPopulation(0, 2)
    with pytest.raises(ValueError):
        CosineTunedPopulation(10, 2, untuned_fraction=1.5)
    with pytest.raises(ValueError):
        CosineTunedPopulation(10, 2, v_ref=0)
    pop = CosineTunedPopulation(10, 2, rng=0)
    with pytest.raises(ValueError):
        pop.rates(np.zeros(3))

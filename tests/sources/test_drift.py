"""Non-stationarity of the simulated population (off by default)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from bciarm.sources.drift import Drift, DriftSpec
from bciarm.sources.population import CosineTunedPopulation


def _pop(seed=0):
    return CosineTunedPopulation(64, 2, rng=seed)


def test_default_spec_is_off_and_draws_nothing():
    spec = DriftSpec()
    assert not spec.enabled
    rng = np.random.default_rng(0)
    pop = _pop()
    before = (pop.preferred_direction.copy(), pop.baseline_hz.copy())
    Drift(spec, rng).advance(pop, 10.0, 0.05)
    assert np.array_equal(pop.preferred_direction, before[0])
    assert np.array_equal(pop.baseline_hz, before[1])
    assert rng.random() == np.random.default_rng(0).random()  # stream untouched


def test_direction_drift_rotates_preferred_directions_at_the_given_rate():
    pop = _pop()
    d0 = pop.preferred_direction.copy()
    drift = Drift(DriftSpec(direction_deg_per_min=10.0), np.random.default_rng(1))
    for i in range(1200):  # one minute of 50 ms bins
        drift.advance(pop, (i + 1) * 0.05, 0.05)
    angle = np.degrees(np.arccos(np.clip(np.sum(d0 * pop.preferred_direction, axis=1), -1, 1)))
    assert 5.0 < np.sqrt(np.mean(angle ** 2)) < 20.0
    assert np.allclose(np.linalg.norm(pop.preferred_direction, axis=1), 1.0)


def test_dropout_silences_units_for_good():
    pop = _pop()
    drift = Drift(DriftSpec(dropout_per_min=0.5), np.random.default_rng(2))
    for i in range(1200):
        drift.advance(pop, (i + 1) * 0.05, 0.05)
    lost = ~pop.alive
    assert 0.25 < lost.mean() < 0.8
    assert sorted(drift.dropped) == np.flatnonzero(lost).tolist()
    rates = pop.rates(np.zeros(2))  # baselines
    assert np.all(rates[lost] == 0) and np.all(rates[~lost] > 0)


def test_baseline_shift_and_start_time():
    pop = _pop()
    b0 = pop.baseline_hz.copy()
    drift = Drift(DriftSpec(shifts_per_min=60.0, shift_rel=0.5, start_s=30.0),
                  np.random.default_rng(3))
    for i in range(600):  # 30 s: nothing before start_s
        drift.advance(pop, (i + 1) * 0.05, 0.05)
    assert np.array_equal(pop.baseline_hz, b0)
    for i in range(600, 1800):
        drift.advance(pop, (i + 1) * 0.05, 0.05)
    assert drift.shifts
    ratio = pop.baseline_hz / b0
    assert np.allclose(ratio, ratio[0]) and not np.isclose(ratio[0], 1.0)


def test_spec_rejects_bad_values():
    with pytest.raises(ValidationError):
        DriftSpec(dropout_per_min=-1)
    with pytest.raises(ValidationError):
        DriftSpec(not_a_field=1)

"""compute_metrics on hand-computed examples."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bciarm.tasks.metrics import METRIC_KEYS, TrialRecord, compute_metrics, index_of_difficulty


def trial(outcome="success", tt=1.0, duration=1.5, distance=0.12, radius=0.025, path=0.1,
          straight=0.09, block="b", start=0.0) -> TrialRecord:
    ok = outcome == "success"
    return TrialRecord(
        block=block, mode="closed_loop", index=0, target_id=0, start_t_s=start,
        end_t_s=start + duration, start_position=np.zeros(3), target=np.array([distance, 0, 0]),
        target_radius=radius, outcome=outcome, time_to_target_s=tt if ok else math.nan,
        path_length_m=path, straight_m=straight if ok else math.nan, distance_m=distance)


def test_keys():
    m = compute_metrics([trial()])
    assert tuple(k for k in m if k != "per_block") == METRIC_KEYS
    assert set(m["per_block"]["b"]) == set(METRIC_KEYS)


def test_index_of_difficulty_uses_target_diameter():
    # D = 0.12, W = 0.05: log2(0.17 / 0.05) = log2(3.4)
    assert index_of_difficulty(0.12, 0.025) == pytest.approx(math.log2(3.4))
    assert index_of_difficulty(0.0, 0.025) == 0.0
    assert index_of_difficulty(0.05, 0.025) == pytest.approx(1.0)  # D = W
    with pytest.raises(ValueError):
        index_of_difficulty(0.1, 0.0)


def test_hand_computed_example():
    trials = [
        trial("success", tt=1.0, duration=1.5, distance=0.12, path=0.1, straight=0.09),
        trial("success", tt=2.0, duration=2.5, distance=0.05, path=0.05, straight=0.05),
        trial("timeout", duration=10.0, path=0.3),
    ]
    m = compute_metrics(trials)
    assert m["trials"] == 3
    assert m["success_rate"] == pytest.approx(2 / 3)
    assert m["mean_time_to_target_s"] == pytest.approx(1.5)
    assert m["path_efficiency"] == pytest.approx((0.9 + 1.0) / 2)
    bits = math.log2(3.4) + 1.0
    assert m["bitrate_bps"] == pytest.approx(bits / (1.0 + 2.0 + 10.0))
    m_hold = compute_metrics(trials, include_hold=True)
    assert m_hold["bitrate_bps"] == pytest.approx(bits / (1.5 + 2.5 + 10.0))


def test_straight_path_has_efficiency_exactly_one():
    m = compute_metrics([trial(path=0.095, straight=0.095)])
    assert m["path_efficiency"] == 1.0


def test_efficiency_never_exceeds_one_and_skips_zero_paths():
    # Rounding could make straight > path by a hair; the result is clipped.
    m = compute_metrics([trial(path=0.1, straight=0.1 + 1e-15), trial(path=0.0, straight=0.0)])
    assert m["path_efficiency"] == 1.0


def test_failures_only_and_empty():
    m = compute_metrics([trial("timeout", duration=10.0)])
    assert m["success_rate"] == 0.0 and m["bitrate_bps"] == 0.0
    assert math.isnan(m["mean_time_to_target_s"]) and math.isnan(m["path_efficiency"])
    e = compute_metrics([])
    assert e["trials"] == 0 and math.isnan(e["success_rate"]) and math.isnan(e["bitrate_bps"])
    assert e["per_block"] == {}


def test_per_block_breakdown():
    trials = [trial(block="a"), trial("timeout", block="b", duration=10.0), trial(block="a")]
    m = compute_metrics(trials)
    assert list(m["per_block"]) == ["a", "b"]
    assert m["per_block"]["a"]["success_rate"] == 1.0
    assert m["per_block"]["b"]["success_rate"] == 0.0
    assert m["success_rate"] == pytest.approx(2 / 3)


def test_records_are_plain_dataclasses():
    row = dataclasses.asdict(trial())
    assert row["outcome"] == "success" and row["distance_m"] == 0.12
    assert trial().duration_s == 1.5 and trial().success

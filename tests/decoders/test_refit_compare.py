"""ReFIT-KF against the calibration decoder in closed loop (issue 4 acceptance).

The shipped pair ``arm_refit`` / ``arm_refit_fixed`` (192 channels, drift,
the same seed, targets and drift) end to end, ReFIT-KF with position feedback
included. All seeds 0-4 are measured with ``python -m
bciarm.decoders.refit_compare`` (README, issue 4 section): -67, -7, -31, -61,
-48 %. The >= 30 % bar is NOT met on every seed; this test runs the worst
seed (1) and checks only what holds there: ReFIT-KF succeeds on every trial
and is faster than the calibration decoder.
"""

from __future__ import annotations

import pytest

from bciarm.decoders.refit_compare import compare


@pytest.mark.slow
def test_refit_kf_is_faster_than_the_calibration_decoder(tmp_path):
    res = compare([1], out_dir=tmp_path)
    (row,) = res["per_seed"]
    assert row["trials"] == 48  # the evaluation block
    assert row["refit_success"] == 1.0 and row["fixed_success"] >= 0.9
    assert row["reduction"] > 0.0, row

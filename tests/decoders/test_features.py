"""FeatureTransformer: batch == online, re-binning, lag/history, z-scoring, bad channels."""

from __future__ import annotations

import numpy as np
import pytest

from bciarm.decoders.features import FeatureTransformer


def _counts(T=400, N=12, seed=0):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(2, 30, N) * 0.05
    return rng.poisson(rates, (T, N)).astype(float)


@pytest.mark.parametrize("params", [
    {},
    {"bin_factor": 3, "count_transform": "sqrt"},
    {"zscore": True, "lag": 2, "history": 4},
    {"bin_factor": 2, "zscore": True, "history": 3, "count_transform": "sqrt", "lag": 1},
])
def test_step_reproduces_transform(params):
    C = _counts()
    ft = FeatureTransformer(**params).fit(C, 0.05)
    batch = ft.transform(C)
    ft.reset()
    online = [z for c in C if (z := ft.step(c)) is not None]
    assert len(online) == batch.shape[0] == C.shape[0] // params.get("bin_factor", 1)
    np.testing.assert_allclose(np.array(online), batch, rtol=0, atol=1e-12)


def test_rebinning_sums_bins_and_sets_dt():
    C = _counts(T=10, N=3)
    ft = FeatureTransformer(bin_factor=5, exclude=False).fit(C, 0.01)
    assert ft.dt_ == pytest.approx(0.05)
    np.testing.assert_array_equal(ft.transform(C), np.vstack([C[:5].sum(0), C[5:].sum(0)]))


def test_lag_and_history_are_causal_shifts():
    C = np.arange(1, 41, dtype=float).reshape(20, 2)
    ft = FeatureTransformer(lag=1, history=2).fit(C, 0.05)
    Z = ft.transform(C)
    # row t = [bin t-1, bin t-2]
    np.testing.assert_array_equal(Z[5], np.r_[C[4], C[3]])
    # before the first bin: the calibration mean
    np.testing.assert_allclose(Z[0], np.r_[C.mean(0), C.mean(0)])


def test_zscore_uses_calibration_statistics():
    C = _counts(T=2000)
    ft = FeatureTransformer(zscore=True).fit(C, 0.05)
    Z = ft.transform(C)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 1, atol=1e-12)
    shifted = ft.transform(C + 1)  # statistics are not refit at transform time
    assert np.all(shifted.mean(0) > 0.1)


def test_dead_and_noisy_channels_reported_and_excluded():
    C = _counts(T=2000, N=10)
    C[:, 2] = 0  # dead
    C[:, 5] = np.random.default_rng(1).poisson(0.05 * 30, 2000) * 20.0  # very noisy
    C[:, 7] = 0
    C[::400, 7] = 50  # artefact bursts only
    ft = FeatureTransformer(min_rate_hz=0.5, max_var_ratio=20.0, max_burst_fraction=0.5).fit(C, 0.05)
    assert ft.report_["dead"] == [2]
    assert 5 in ft.report_["noisy"] and 7 in ft.report_["noisy"]
    assert ft.report_["n_channels_kept"] == 10 - len(ft.report_["excluded"])
    assert ft.transform(C).shape[1] == ft.report_["n_channels_kept"]
    kept = FeatureTransformer(min_rate_hz=0.5, max_var_ratio=20.0, exclude=False).fit(C, 0.05)
    assert kept.transform(C).shape[1] == 10 and kept.report_["dead"] == [2]


def test_save_load_round_trip(tmp_path):
    C = _counts()
    ft = FeatureTransformer(zscore=True, history=3, bin_factor=2).fit(C, 0.05)
    back = FeatureTransformer.load(ft.save(tmp_path / "f.npz"))
    np.testing.assert_array_equal(back.transform(C), ft.transform(C))
    assert back.get_params() == ft.get_params() and back.report_ == ft.report_


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="history"):
        FeatureTransformer(history=0).fit(_counts(), 0.05)
    ft = FeatureTransformer().fit(_counts(), 0.05)
    with pytest.raises(ValueError, match="channels"):
        ft.transform(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        FeatureTransformer().fit(np.full((10, 2), np.nan), 0.05)

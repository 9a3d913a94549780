"""The click (grasp/release) decoder: LDA against an independent reference, dwell, hysteresis."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from bciarm.bus.messages import GRASP_CLOSE, GRASP_RELEASE
from bciarm.decoders.click import ClickDecoder, LDAClassifier


def _two_classes(rng, n=400, d=6, sep=1.5):
    y = (rng.random(n) < 0.4).astype(int)
    mix = rng.standard_normal((d, d))
    cov = mix @ mix.T / d + np.eye(d)
    mu = np.zeros((2, d))
    mu[1, :2] = sep
    Z = np.array([rng.multivariate_normal(mu[c], cov) for c in y])
    return Z, y


def test_lda_posteriors_match_gaussian_bayes_reference():
    """Shrinkage 0: posteriors are Bayes' rule with the pooled covariance (scipy densities)."""
    rng = np.random.default_rng(0)
    Z, y = _two_classes(rng)
    lda = LDAClassifier(shrinkage=0.0).fit(Z, y)
    # Independent reference: pooled covariance, class means, priors, scipy pdfs.
    means = [Z[y == c].mean(axis=0) for c in (0, 1)]
    resid = np.vstack([Z[y == c] - means[c] for c in (0, 1)])
    pooled = resid.T @ resid / (len(Z) - 2)
    priors = np.bincount(y) / len(y)
    dens = np.column_stack([priors[c] * multivariate_normal(means[c], pooled).pdf(Z)
                            for c in (0, 1)])
    ref = dens / dens.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(lda.predict_proba(Z), ref, rtol=1e-8, atol=1e-12)
    assert lda.score(Z, y) > 0.75
    np.testing.assert_array_equal(lda.predict(Z), ref.argmax(axis=1))


def test_lda_follows_the_estimator_contract_and_rejects_bad_input():
    lda = LDAClassifier(shrinkage=0.2)
    assert lda.get_params() == {"shrinkage": 0.2, "priors": None}
    assert lda.set_params(shrinkage=0.3) is lda and lda.shrinkage == 0.3
    with pytest.raises(ValueError, match="unknown parameter"):
        lda.set_params(nope=1)
    rng = np.random.default_rng(1)
    Z, y = _two_classes(rng, n=50)
    assert lda.fit(Z, y) is lda and hasattr(lda, "coef_")
    with pytest.raises(ValueError, match="NaN"):
        LDAClassifier().fit(np.full((4, 2), np.nan), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="two classes"):
        LDAClassifier().fit(Z, np.zeros(len(Z)))
    with pytest.raises(ValueError, match="features"):
        lda.predict_proba(np.zeros(3))
    # Shrinkage keeps a rank-deficient covariance (more channels than bins) usable.
    wide = LDAClassifier(shrinkage=0.5).fit(rng.standard_normal((10, 40)), [0, 1] * 5)
    assert np.all(np.isfinite(wide.predict_proba(rng.standard_normal((3, 40)))))


class _Scripted(ClickDecoder):
    """A click decoder fed scripted P(grasp) values instead of neural bins."""

    def probability(self, z):
        return float(z)


def _run(dec, probs):
    return [dec.step(p) for p in probs]


def test_dwell_and_hysteresis():
    dec = _Scripted(p_close=0.8, p_open=0.2, close_dwell_s=0.15, open_dwell_s=0.25)
    dec.dt_ = 0.05  # 3 bins to close, 5 to open
    # Two confident bins are not enough; the third in a row closes.
    assert _run(dec, [0.9, 0.9, 0.1, 0.9, 0.9]) == [GRASP_RELEASE] * 5
    assert dec.step(0.9) == GRASP_CLOSE
    # Inside the hysteresis band nothing changes, however long.
    assert set(_run(dec, [0.5] * 40)) == {GRASP_CLOSE}
    # Four release bins then a relapse: still closed (a noisy decoder does not drop).
    assert set(_run(dec, [0.1, 0.1, 0.1, 0.1, 0.5])) == {GRASP_CLOSE}
    assert _run(dec, [0.1] * 5)[-1] == GRASP_RELEASE
    assert dec.reset().closed is False


def test_click_decoder_fit_save_load(tmp_path):
    rng = np.random.default_rng(2)
    Z, y = _two_classes(rng, sep=4.0)
    dec = ClickDecoder(close_dwell_s=0.1).fit(Z, y, 0.05)
    out = [dec.step(z) for z in Z[y == 1][:10]]
    assert out[-1] == GRASP_CLOSE
    loaded = ClickDecoder.load(dec.save(tmp_path / "click.npz"))
    np.testing.assert_allclose(loaded.lda_.predict_proba(Z), dec.lda_.predict_proba(Z))
    assert loaded.close_dwell_s == 0.1 and loaded.dt_ == 0.05
    with pytest.raises(ValueError, match="hysteresis"):
        ClickDecoder(p_close=0.3, p_open=0.5).fit(Z, y, 0.05)

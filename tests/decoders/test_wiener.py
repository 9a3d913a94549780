"""WienerDecoder: contract, causality, ridge."""

from __future__ import annotations

import numpy as np

from bciarm.decoders.wiener import WienerDecoder
from bciarm.testing import check_decoder


def test_contract():
    check_decoder(WienerDecoder)


def test_recovers_a_causal_filter_and_ignores_the_future():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((3000, 4))
    X = np.zeros((3000, 1))
    X[2:, 0] = Z[2:, 0] - 0.5 * Z[1:-1, 1] + 0.25 * Z[:-2, 2]
    dec = WienerDecoder(history=3).fit(Z, X, 0.05)
    w = dec.coef_.reshape(3, 4)
    np.testing.assert_allclose([w[0, 0], w[1, 1], w[2, 2]], [1, -0.5, 0.25], atol=1e-3)
    # Changing a future bin does not change earlier outputs.
    Z2 = Z.copy()
    Z2[100] += 10
    np.testing.assert_array_equal(dec.predict(Z)[:100], dec.predict(Z2)[:100])


def test_ridge_shrinks_weights():
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((500, 20))
    X = Z[:, :2] + rng.standard_normal((500, 2))
    small = WienerDecoder(history=2, alpha=0).fit(Z, X, 0.05)
    big = WienerDecoder(history=2, alpha=1e4).fit(Z, X, 0.05)
    assert np.linalg.norm(big.coef_) < 0.5 * np.linalg.norm(small.coef_)

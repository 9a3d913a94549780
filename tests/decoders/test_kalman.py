"""Tests of the Kalman-filter decoder: compiled kernels against independent math."""

from __future__ import annotations

import json
import timeit
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from bciarm.decoders import KalmanDecoder, KalmanReference, _kalman
from bciarm.decoders.kalman import (
    FORMAT_VERSION,
    NotFittedError,
    RiccatiConvergenceError,
    kinematic_states,
    r2_per_dim,
)
from bciarm.testing.decoder_checks import check_decoder

DT = 0.05


# ---------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------


def simulate(
    rng: np.random.Generator,
    T: int,
    n_channels: int,
    k: int = 2,
    include_position: bool = False,
    A_v: np.ndarray | None = None,
    noise: float = 1.0,
) -> dict[str, np.ndarray]:
    """A linear-Gaussian session generated from the decoder's own model class.

    Velocity follows v_t = A_v v_{t-1} + b + w_t; features follow
    z_t = C [p_t,] v_t, 1] + q_t with correlated Gaussian q_t.
    """
    if A_v is None:
        A_v = 0.9 * np.eye(k) + 0.03 * rng.normal(size=(k, k))
    b = 0.002 * rng.normal(size=k)
    L_w = 0.05 * np.tril(rng.normal(size=(k, k)) * 0.3 + np.eye(k))
    V = np.zeros((T, k))
    for t in range(1, T):
        V[t] = A_v @ V[t - 1] + b + L_w @ rng.normal(size=k)
    states = kinematic_states(V, DT, include_position)
    d = states.shape[1]
    C = rng.normal(0.0, 20.0, (n_channels, d))
    C[:, -1] = rng.uniform(3.0, 12.0, n_channels)
    if include_position:
        C[:, :k] *= 5.0  # make position well observed
    mix = np.eye(n_channels) + 0.1 * rng.normal(size=(n_channels, n_channels)) / np.sqrt(n_channels)
    Q = noise**2 * (mix @ mix.T)
    Z = states @ C.T + rng.normal(size=(T, n_channels)) @ np.linalg.cholesky(Q).T
    return {"Z": Z, "V": V, "A_v": A_v, "b": b, "W_v": L_w @ L_w.T, "C": C, "Q": Q}


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(20240521)


def fitted(data: dict, **params) -> KalmanDecoder:
    return KalmanDecoder(**params).fit(data["Z"], data["V"], DT)


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float, what: str) -> None:
    """Max absolute error <= tol * max(1, max |expected|)."""
    scale = max(1.0, float(np.max(np.abs(expected))))
    err = float(np.max(np.abs(np.asarray(actual) - np.asarray(expected))))
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} (scale {scale:.3g})"


# ---------------------------------------------------------------------------
# Compiled full filter == textbook covariance-form filter
# ---------------------------------------------------------------------------

CASES = [  # (channels, velocity dims, position) -> d = 3 or 5
    (20, 2, False),
    (200, 2, False),
    (20, 2, True),
    (200, 2, True),
]


@pytest.mark.parametrize(("n_channels", "k", "pos"), CASES)
def test_full_matches_reference_step_by_step(rng, n_channels, k, pos):
    data = simulate(rng, 2000, n_channels, k, pos)
    dec = fitted(data, mode="full", include_position=pos, gain=1.7)
    ref = KalmanReference.from_params(
        A=dec.A_, W=dec.W_, C=dec.C_, Q=dec.Q_, include_position=pos, gain=1.7)
    assert dec.state_dim_ == (5 if pos else 3)
    for t, z in enumerate(data["Z"][:100]):
        assert_close(dec.step(z), ref.step(z), 1e-10, f"output at step {t}")
        assert_close(dec.state_, ref.state_, 1e-10, f"state at step {t}")
        assert_close(dec.covariance_, ref.P_, 1e-10, f"covariance at step {t}")


@pytest.mark.parametrize(("n_channels", "k", "pos"), CASES)
def test_full_predict_matches_reference(rng, n_channels, k, pos):
    data = simulate(rng, 2000, n_channels, k, pos)
    dec = fitted(data, mode="full", include_position=pos)
    ref = KalmanReference(include_position=pos).fit(data["Z"], data["V"], DT)
    for name in "AWCQ":  # shared fitting math, but the decoder normalises symmetry
        assert_close(getattr(dec, f"{name}_"), getattr(ref, f"{name}_"), 1e-12, name)
    assert_close(dec.predict(data["Z"][:250]), ref.predict(data["Z"][:250]), 1e-10, "predict")


# ---------------------------------------------------------------------------
# Steady state against scipy's DARE solver
# ---------------------------------------------------------------------------


def dare_gain(dec: KalmanDecoder) -> tuple[np.ndarray, np.ndarray]:
    """Steady gain of the dynamic (non-constant) block via scipy's DARE.

    The constant state has zero noise and a unit eigenvalue, which the DARE
    cannot handle; it is known exactly, so C's last column is a known offset and
    the dynamic block is a standard filtering problem.
    """
    A_d, W_d, C_d = dec.A_[:-1, :-1], dec.W_[:-1, :-1], dec.C_[:, :-1]
    P = scipy.linalg.solve_discrete_are(A_d.T, C_d.T, W_d, dec.Q_)
    K = np.linalg.solve(C_d @ P @ C_d.T + dec.Q_, C_d @ P).T
    return K, P


@pytest.mark.parametrize(("n_channels", "k", "pos"), CASES + [(60, 3, True)])
def test_steady_gain_matches_scipy_dare(rng, n_channels, k, pos):
    data = simulate(rng, 3000, n_channels, k, pos)
    dec = fitted(data, mode="steady", include_position=pos)
    K_ref, P_ref = dare_gain(dec)
    K = dec.steady_state_gain()
    rel = np.max(np.abs(K[:-1] - K_ref)) / np.max(np.abs(K_ref))
    assert rel <= 1e-8, f"steady gain differs from the DARE solution by {rel:.3g} (relative)"
    assert np.all(K[-1] == 0.0), "the constant state must have zero gain"
    rel_p = np.max(np.abs(dec.steady_prior_cov_[:-1, :-1] - P_ref)) / np.max(np.abs(P_ref))
    assert rel_p <= 1e-8
    F_expected = (np.eye(dec.state_dim_) - K @ dec.C_) @ dec.A_
    assert_close(dec.F_, F_expected, 1e-12, "F = (I - K C) A")
    np.testing.assert_array_equal(dec.F_[-1], dec.A_[-1])


def test_steady_gain_matches_dare_for_given_params(rng):
    """from_params with dense W and Q, not produced by our own fit."""
    d, n = 5, 40
    A = np.eye(d)
    A[:-1, :-1] = 0.6 * scipy.linalg.orth(rng.normal(size=(d - 1, d - 1)))
    A[:-1, -1] = 0.01 * rng.normal(size=d - 1)
    B = rng.normal(size=(d - 1, d - 1))
    W = np.zeros((d, d))
    W[:-1, :-1] = 0.1 * B @ B.T
    C = rng.normal(size=(n, d))
    M = rng.normal(size=(n, n))
    Q = M @ M.T / n + np.eye(n)
    dec = KalmanDecoder.from_params(A=A, W=W, C=C, Q=Q)
    K_ref, _ = dare_gain(dec)
    rel = np.max(np.abs(dec.K_[:-1] - K_ref)) / np.max(np.abs(K_ref))
    assert rel <= 1e-8


@pytest.mark.parametrize("pos", [False, True])
def test_full_gain_converges_to_steady_gain(rng, pos):
    data = simulate(rng, 3000, 50, 2, pos, noise=30.0)  # low SNR: a slow transient
    dec = fitted(data, mode="full", include_position=pos)
    K = dec.steady_state_gain()
    gains = []
    for z in data["Z"][:500]:
        dec.step(z)
        gains.append(dec.covariance_ @ dec.G_)  # full-mode gain P_t C' Q^-1
    start = np.max(np.abs(gains[0] - K)) / np.max(np.abs(K))
    end = np.max(np.abs(gains[-1] - K)) / np.max(np.abs(K))
    assert start > 1e-2, "the first gain should still be far from steady state"
    assert end <= 1e-9, f"full-mode gain did not converge to the steady gain ({end:.3g})"


def test_riccati_non_convergence_is_reported(rng):
    """An unobservable, noise-driven random walk has no steady state."""
    d = 3
    A = np.eye(d)
    W = np.diag([1.0, 1.0, 0.0])
    C = np.zeros((4, d))
    C[:, 0] = 1.0  # second state never observed
    C[:, -1] = 2.0
    dec = KalmanDecoder.from_params(A=A, W=W, C=C, Q=np.eye(4), mode="full", max_riccati_iter=2**12)
    with pytest.raises(RiccatiConvergenceError, match="did not converge"):
        dec.steady_state_gain()
    with pytest.raises(RiccatiConvergenceError):
        KalmanDecoder.from_params(A=A, W=W, C=C, Q=np.eye(4), mode="steady")
    # a rejected switch to steady mode keeps the working full filter
    dec.step(np.ones(4))
    x = dec.state_
    with pytest.raises(RiccatiConvergenceError):
        dec.set_params(mode="steady")
    assert dec.mode == "full"
    np.testing.assert_array_equal(dec.state_, x)
    assert np.all(np.isfinite(dec.step(np.ones(4))))


# ---------------------------------------------------------------------------
# Online / batch consistency
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["steady", "full"])
@pytest.mark.parametrize("pos", [False, True])
def test_predict_equals_loop_of_step(rng, mode, pos):
    data = simulate(rng, 1500, 64, 3, pos)
    dec = fitted(data, mode=mode, include_position=pos, gain=0.8)
    block = data["Z"][:500]
    predicted = dec.predict(block)
    dec.reset()
    stepped = np.array([dec.step(z) for z in block])
    assert predicted.shape == (500, dec.n_kinematic_)
    assert_close(predicted, stepped, 1e-12, "predict vs loop of step")


def test_predict_leaves_online_state_alone(rng):
    data = simulate(rng, 1000, 30)
    for mode in ("steady", "full"):
        dec = fitted(data, mode=mode)
        for z in data["Z"][:10]:
            dec.step(z)
        x, P = dec.state_, dec.covariance_
        first = dec.predict(data["Z"][:5])
        np.testing.assert_array_equal(dec.state_, x)
        np.testing.assert_array_equal(dec.covariance_, P)
        # and predict started from a reset filter, not from the online state
        np.testing.assert_array_equal(first, dec.predict(data["Z"][:5]))
        assert not np.allclose(first[0], dec.step(data["Z"][0]))


def test_steady_and_full_converge_after_transient(rng):
    data = simulate(rng, 3000, 80, noise=30.0)  # low SNR: a visible transient
    block = data["Z"][:600]
    steady = fitted(data, mode="steady").predict(block)
    full = fitted(data, mode="full").predict(block)
    assert np.max(np.abs(steady[:3] - full[:3])) > 1e-3 * np.max(np.abs(full)), "the transient should differ"
    assert_close(steady[300:], full[300:], 1e-10, "steady vs full after the transient")


def test_gain_scales_velocity_only(rng):
    data = simulate(rng, 1200, 30, 2, include_position=True)
    base = fitted(data, mode="full", include_position=True).predict(data["Z"][:100])
    scaled = fitted(data, mode="full", include_position=True, gain=2.5).predict(data["Z"][:100])
    np.testing.assert_array_equal(scaled[:, :2], base[:, :2])  # positions untouched
    assert_close(scaled[:, 2:], 2.5 * base[:, 2:], 1e-14, "velocity gain")


def test_set_gain_acts_at_next_step_and_keeps_state(rng):
    data = simulate(rng, 1000, 30)
    dec = fitted(data)
    for z in data["Z"][:20]:
        dec.step(z)
    x = dec.state_
    dec.set_params(gain=3.0)
    np.testing.assert_array_equal(dec.state_, x)
    out = dec.step(data["Z"][20])
    assert_close(out, 3.0 * dec.state_[:-1], 1e-15, "gain after set_params")


def test_set_params_mode_rebuilds_filter(rng):
    data = simulate(rng, 1000, 30)
    dec = fitted(data, mode="steady")
    full = fitted(data, mode="full").predict(data["Z"][:50])
    dec.set_params(mode="full")
    np.testing.assert_array_equal(dec.predict(data["Z"][:50]), full)
    with pytest.raises(ValueError, match="mode"):
        dec.set_params(mode="fast")
    assert dec.mode == "full", "a rejected set_params must leave the decoder unchanged"
    with pytest.raises(ValueError, match="invalid parameter"):
        dec.set_params(gian=2.0)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["steady", "full"])
def test_step_rejects_bad_input_and_keeps_state(rng, mode):
    data = simulate(rng, 800, 25)
    data["Z"][:, 4] = 0.0  # a silent channel: zero gain column, NaN must still be caught
    dec = fitted(data, mode=mode)
    dec.step(data["Z"][0])
    x, P = dec.state_, dec.covariance_
    for bad_index in (4, 7):
        z = data["Z"][1].copy()
        z[bad_index] = np.nan
        with pytest.raises(ValueError, match="non-finite"):
            dec.step(z)
    z = data["Z"][1].copy()
    z[2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        dec.step(z)
    np.testing.assert_array_equal(dec.state_, x)
    np.testing.assert_array_equal(dec.covariance_, P)
    with pytest.raises(ValueError, match="25 channel"):
        dec.step(np.zeros(24))
    with pytest.raises(ValueError, match="1-D"):
        dec.step(np.zeros((1, 25)))
    with pytest.raises(ValueError, match="columns|channels"):
        dec.predict(np.zeros((5, 24)))
    Zbad = data["Z"][:5].copy()
    Zbad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        dec.predict(Zbad)


def test_step_accepts_counts_and_lists(rng):
    data = simulate(rng, 800, 25)
    dec = fitted(data)
    counts = np.abs(np.round(data["Z"][:3])).astype(np.uint8)
    expected = [dec.step(c.astype(np.float64)) for c in counts]
    dec.reset()
    got = [dec.step(counts[0]), dec.step(list(counts[1])), dec.step(counts[2][::1].astype(">f8"))]
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


@pytest.mark.parametrize(
    ("Z_fn", "X_fn", "dt", "match"),
    [
        (lambda Z: Z, lambda X: X[:-1], DT, "same number of bins"),
        (lambda Z: Z[:, 0], lambda X: X, DT, "2-D"),
        (lambda Z: Z, lambda X: X[:, 0], DT, "2-D"),
        (lambda Z: np.where(np.arange(Z.size).reshape(Z.shape) == 7, np.nan, Z), lambda X: X, DT, "NaN"),
        (lambda Z: Z, lambda X: np.where(X > 0.05, np.inf, X), DT, "NaN or Inf"),
        (lambda Z: Z, lambda X: X, 0.0, "dt"),
        (lambda Z: Z, lambda X: X, float("nan"), "dt"),
        (lambda Z: Z[:3], lambda X: X[:3], DT, "at least"),
    ],
)
def test_fit_rejects_bad_input(rng, Z_fn, X_fn, dt, match):
    data = simulate(rng, 500, 10)
    with pytest.raises(ValueError, match=match):
        KalmanDecoder().fit(Z_fn(data["Z"]), X_fn(data["V"]), dt)


def test_unfitted_decoder_raises():
    dec = KalmanDecoder()
    for call in (lambda: dec.step(np.zeros(3)), lambda: dec.predict(np.zeros((2, 3))),
                 dec.reset, dec.steady_state_gain, lambda: dec.state_):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert not hasattr(dec, "K_")


def test_invalid_hyperparameters_rejected_at_fit(rng):
    data = simulate(rng, 500, 10)
    for params in ({"mode": "kalman"}, {"alpha": -1.0}, {"gain": float("inf")},
                   {"tol": 0.0}, {"max_riccati_iter": 0}, {"include_position": "yes"}):
        with pytest.raises(ValueError):
            KalmanDecoder(**params).fit(data["Z"], data["V"], DT)


# ---------------------------------------------------------------------------
# from_params
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pos", [False, True])
def test_from_params_reproduces_fitted_decoder(rng, pos):
    data = simulate(rng, 1500, 40, 2, pos)
    for mode in ("steady", "full"):
        dec = fitted(data, mode=mode, include_position=pos)
        rebuilt = KalmanDecoder.from_params(
            A=dec.A_, W=dec.W_, C=dec.C_, Q=dec.Q_, dt=dec.dt_, **dec.get_params())
        np.testing.assert_array_equal(rebuilt.predict(data["Z"]), dec.predict(data["Z"]))
        assert rebuilt.n_kinematic_ == dec.n_kinematic_ and rebuilt.dt_ == DT


def _good_params(d: int = 3, n: int = 6) -> dict[str, np.ndarray]:
    A = np.eye(d)
    A[:-1, :-1] *= 0.9
    W = np.diag([0.1] * (d - 1) + [0.0])
    C = np.arange(n * d, dtype=float).reshape(n, d) / 10
    return {"A": A, "W": W, "C": C, "Q": np.eye(n)}


def _with(**changes):
    params = _good_params()
    for key, fn in changes.items():
        params[key] = fn(params[key].copy())
    return params


def _set(M, index, value):
    M[index] = value
    return M


@pytest.mark.parametrize(
    ("params", "hyper", "match"),
    [
        (_with(A=lambda A: A[:, :2]), {}, "A must be square"),
        (_with(W=lambda W: W[:2, :2]), {}, "W must be 3x3"),
        (_with(C=lambda C: C[:, :2]), {}, "C must be N x 3"),
        (_with(Q=lambda Q: Q[:5, :5]), {}, "Q must be 6x6"),
        (_with(A=lambda A: _set(A, (0, 1), np.nan)), {}, "A contains NaN"),
        (_with(C=lambda C: _set(C, (2, 1), np.inf)), {}, "C contains NaN or Inf"),
        (_with(W=lambda W: _set(W, (0, 1), 0.05)), {}, "W must be symmetric"),
        (_with(Q=lambda Q: _set(Q, (0, 1), 0.5)), {}, "Q must be symmetric"),
        (_with(W=lambda W: _set(W, (0, 0), -0.1)), {}, "positive semi-definite"),
        (_with(Q=lambda Q: _set(Q, (3, 3), 0.0)), {}, "not positive definite"),
        (_with(A=lambda A: _set(A, (-1, 0), 0.2)), {}, "last row of A"),
        (_with(W=lambda W: _set(W, (-1, -1), 0.1)), {}, "constant state"),
        (_good_params(d=4), {"include_position": True}, "even number"),
        (_good_params(), {"dt": -0.05}, "dt"),
        (_good_params(), {"mode": "both"}, "mode"),
    ],
)
def test_from_params_rejects_invalid(params, hyper, match):
    with pytest.raises(ValueError, match=match):
        KalmanDecoder.from_params(**params, **hyper)


def test_from_params_accepts_valid_and_copies():
    params = _good_params()
    dec = KalmanDecoder.from_params(**params)
    params["A"][0, 0] = 123.0  # the decoder must not alias caller arrays
    assert dec.A_[0, 0] == 0.9
    assert dec.state_dim_ == 3 and dec.n_channels_ == 6 and dec.dt_ == 0.05


# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------


def test_fit_recovers_known_linear_gaussian_model():
    rng = np.random.default_rng(7)
    A_v = np.array([[0.95, 0.04], [-0.04, 0.93]])
    data = simulate(rng, 60000, 12, 2, A_v=A_v)
    dec = fitted(data)
    np.testing.assert_allclose(dec.A_[:2, :2], A_v, atol=0.01)
    np.testing.assert_allclose(dec.A_[:2, 2], data["b"], atol=0.002)
    np.testing.assert_array_equal(dec.A_[2], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(dec.W_[:2, :2], data["W_v"], rtol=0.05, atol=1e-6)
    assert np.all(dec.W_[2] == 0) and np.all(dec.W_[:, 2] == 0)
    np.testing.assert_allclose(dec.C_, data["C"], rtol=0.03, atol=0.25)
    np.testing.assert_allclose(dec.Q_, data["Q"], atol=0.03)


def test_fit_with_position_has_kinematic_rows():
    rng = np.random.default_rng(8)
    data = simulate(rng, 20000, 12, 2, include_position=True)
    dec = fitted(data, include_position=True)
    A, k = dec.A_, 2
    np.testing.assert_array_equal(A[:k, :k], np.eye(k))
    np.testing.assert_array_equal(A[:k, k:2 * k], DT * np.eye(k))
    assert np.all(A[:k, -1] == 0) and np.all(A[k:2 * k, :k] == 0)
    assert np.all(dec.W_[:k] == 0), "position carries no process noise of its own"
    np.testing.assert_allclose(dec.C_, data["C"], rtol=0.05, atol=0.5)
    assert (dec.n_kinematic_, dec.n_velocity_, dec.state_dim_) == (4, 2, 5)


def test_kinematic_states_integrate_velocity():
    V = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    S = kinematic_states(V, 0.1, True)
    np.testing.assert_allclose(S[:, :2], [[0, 0], [0.1, 0.2], [0.4, 0.6]])
    np.testing.assert_array_equal(S[:, 2:4], V)
    np.testing.assert_array_equal(S[:, 4], 1.0)


def test_ridge_shrinks_observation_model(rng):
    data = simulate(rng, 400, 10)
    plain = fitted(data)
    ridge = fitted(data, alpha=1e4)
    assert np.linalg.norm(ridge.C_[:, :-1]) < 0.8 * np.linalg.norm(plain.C_[:, :-1])


def test_silent_channel_needs_q_ridge(rng):
    data = simulate(rng, 500, 10)
    data["Z"][:, 3] = 0.0
    dec = fitted(data)
    with pytest.raises(ValueError, match="not positive definite"):
        dec.set_params(q_ridge=0.0).fit(data["Z"], data["V"], DT)
    assert not hasattr(dec, "A_"), "a failed fit must leave the decoder unfitted, not half-updated"
    with pytest.raises(NotFittedError):
        dec.step(data["Z"][0])
    dec = fitted(data)  # default q_ridge
    assert np.all(dec.K_[:, 3] == 0.0), "a silent channel must get zero gain"


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def test_r2_per_dim_definition():
    y = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    p = np.array([[1.5, 2.0], [2.0, 2.0], [2.5, 2.0]])
    np.testing.assert_allclose(r2_per_dim(y, p), [1 - 0.5 / 2.0, 1.0])
    assert r2_per_dim(y, y + 1)[1] == 0.0
    with pytest.raises(ValueError):
        r2_per_dim(y, p[:2])


def test_score_is_mean_velocity_r2(rng):
    data = simulate(rng, 2000, 40, 2, include_position=True)
    dec = fitted(data, include_position=True)
    per_dim = dec.r2_per_dim(data["Z"], data["V"])
    velocity = dec.predict(data["Z"])[:, 2:]
    np.testing.assert_allclose(per_dim, r2_per_dim(data["V"], velocity))
    assert dec.score(data["Z"], data["V"]) == pytest.approx(per_dim.mean())
    assert per_dim.min() > 0.5


# ---------------------------------------------------------------------------
# Persistence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["steady", "full"])
def test_save_load_round_trip(rng, tmp_path, mode):
    data = simulate(rng, 1000, 30, 2, include_position=True)
    dec = fitted(data, mode=mode, include_position=True, gain=1.5, alpha=0.1)
    path = dec.save(tmp_path / "kf.model")
    assert path == tmp_path / "kf.model" and path.exists(), "save must write exactly the given path"
    loaded = KalmanDecoder.load(path)
    assert loaded.get_params() == dec.get_params()
    assert loaded.dt_ == dec.dt_
    np.testing.assert_array_equal(loaded.predict(data["Z"]), dec.predict(data["Z"]))
    with np.load(path, allow_pickle=False) as archive:  # no pickled objects inside
        meta = json.loads(str(archive["meta"]))
    assert meta["format_version"] == FORMAT_VERSION and meta["bciarm_version"]


def _rewrite_meta(src: Path, dst: Path, **changes) -> None:
    with np.load(src, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["meta"])) | changes
    arrays["meta"] = np.array(json.dumps(meta))
    with dst.open("wb") as fh:
        np.savez(fh, **arrays)


def test_load_rejects_incompatible_files(rng, tmp_path):
    data = simulate(rng, 500, 10)
    path = fitted(data).save(tmp_path / "kf.npz")
    _rewrite_meta(path, tmp_path / "future.npz", format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="format version"):
        KalmanDecoder.load(tmp_path / "future.npz")
    _rewrite_meta(path, tmp_path / "other.npz", format="someone.Else")
    with pytest.raises(ValueError, match="format"):
        KalmanDecoder.load(tmp_path / "other.npz")
    np.savez(tmp_path / "junk.npz", A=np.eye(2))
    with pytest.raises(ValueError, match="missing"):
        KalmanDecoder.load(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------
# Kernels against their documented NumPy equivalents
# ---------------------------------------------------------------------------


def test_kernel_functions_match_numpy(rng):
    d, n = 5, 37
    A = np.eye(d)
    A[:-1, :-1] = 0.5 * rng.normal(size=(d - 1, d - 1)) / np.sqrt(d)
    B = rng.normal(size=(d, d))
    W = B @ B.T
    W[-1] = W[:, -1] = 0.0
    C = rng.normal(size=(n, d))
    Qi = np.eye(n) * 2.0
    G = np.ascontiguousarray(C.T @ Qi)
    S = G @ C
    x = rng.normal(size=d)
    x[-1] = 1.0
    P = np.diag(rng.uniform(0.1, 1.0, d))
    P[-1, -1] = 0.0
    z = rng.normal(size=n)

    x1, P1, out = x.copy(), P.copy(), np.empty(d - 1)
    _kalman.full_step(A, W, S, G, x1, P1, z, out, np.empty(_kalman.full_work_size(d)), 2, 0.5)
    xp = A @ x
    Pp = A @ P @ A.T + W
    P_ref = np.linalg.solve(np.eye(d) + Pp @ S, Pp)
    x_ref = xp + P_ref @ (G @ z - S @ xp)
    assert_close(P1, P_ref, 1e-12, "full_step P")
    assert_close(x1, x_ref, 1e-12, "full_step x")
    assert_close(out, np.r_[x_ref[:2], 0.5 * x_ref[2:-1]], 1e-12, "full_step out")

    F, K = A.copy(), rng.normal(size=(d, n))
    x2, out2 = x.copy(), np.empty(d - 1)
    _kalman.steady_step(F, K, x2, z, out2)
    assert_close(x2, F @ x + K @ z, 1e-12, "steady_step")

    Z = rng.normal(size=(6, n))
    batch = np.empty((6, d - 1))
    _kalman.steady_batch(F, K, x, Z, batch, 1, 2.0)
    xs, looped = x.copy(), []
    for row in Z:
        o = np.empty(d - 1)
        _kalman.steady_step(F, K, xs, row, o, 1, 2.0)
        looped.append(o)
    np.testing.assert_array_equal(batch, looped)
    with pytest.raises(ValueError, match="row 2"):
        Z[2, 5] = np.nan
        _kalman.steady_batch(F, K, x, Z, batch)
    with pytest.raises(ValueError, match="work"):
        _kalman.full_step(A, W, S, G, x1, P1, z, out, np.empty(3))
    with pytest.raises(ValueError, match="K must be"):
        _kalman.steady_step(F, K[:3], x2, z, out2)


def _full_step_loop(A, W, S, G, x, P, Z, d):
    """The uncached kernel, step by step: the recursion computed every time."""
    work, outs = np.empty(_kalman.full_work_size(d)), []
    for z in Z:
        out = np.empty(d - 1)
        _kalman.full_step(A, W, S, G, x, P, z, out, work)
        outs.append(out)
    return np.array(outs)


@pytest.mark.parametrize("n, d", [(192, 7), (40, 3), (64, 5)])
def test_full_filter_cycle_lookup_is_bit_identical(n, d):
    """Once the covariance recursion sits on its floating-point limit cycle, the
    filter looks the next P up instead of computing it; outputs and P must stay
    identical bit for bit, also across a reset and an outside change of P."""
    rng = np.random.default_rng(d)
    A = np.zeros((d, d))
    A[:-1, :-1] = 0.9 * np.eye(d - 1) + 0.01 * rng.standard_normal((d - 1, d - 1))
    A[-1, -1] = 1.0
    W = np.zeros((d, d))
    W[:-1, :-1] = 0.01 * np.eye(d - 1)
    C = rng.standard_normal((n, d))
    G = np.ascontiguousarray((C / rng.uniform(0.5, 2.0, n)[:, None]).T)
    S = np.ascontiguousarray(G @ C)
    S = 0.5 * (S + S.T)
    Z = rng.standard_normal((600, n))
    x0 = np.zeros(d)
    x0[-1] = 1.0

    x_ref, P_ref = x0.copy(), np.zeros((d, d))
    x, P = x0.copy(), np.zeros((d, d))
    eng = _kalman.FullFilter(A, W, S, G, x, P, d - 1, 0)
    ref = _full_step_loop(A, W, S, G, x_ref, P_ref, Z[:300], d)
    got = np.array([eng.step(z) for z in Z[:300]])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(P, P_ref)
    assert eng.covariance_converged  # the look-up path was exercised

    # An outside change of P (as KalmanDecoder.reset, or an intervention) resumes
    # the recursion: still identical to the uncached kernel.
    for Pm in (P_ref, P):
        Pm[:] = 0.0
    x[:] = x_ref[:] = x0
    assert not eng.covariance_converged
    ref = _full_step_loop(A, W, S, G, x_ref, P_ref, Z[300:], d)
    got = np.array([eng.step(z) for z in Z[300:]])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(P, P_ref)
    P_ref[0, 0] += 1e-3
    P[0, 0] += 1e-3
    np.testing.assert_array_equal(eng.step(Z[0]), _full_step_loop(A, W, S, G, x_ref, P_ref, Z[:1], d)[0])

    # cache=False (the bench's bciarm-full-nocache) computes the recursion on
    # every step: the same outputs, and it never reports a known cycle.
    xn, Pn = x0.copy(), np.zeros((d, d))
    nocache = _kalman.FullFilter(A, W, S, G, xn, Pn, d - 1, 0, cache=False)
    assert not nocache.cache and eng.cache
    got = np.array([nocache.step(z) for z in Z[:300]])
    np.testing.assert_array_equal(got, _full_step_loop(A, W, S, G, x0.copy(), np.zeros((d, d)),
                                                       Z[:300], d))
    assert not nocache.covariance_converged

    # full_batch uses the same look-up: equal to the loop as well.
    batch = np.empty((600, d - 1))
    _kalman.full_batch(A, W, S, G, x0, np.zeros((d, d)), Z, batch)
    np.testing.assert_array_equal(batch, _full_step_loop(A, W, S, G, x0.copy(), np.zeros((d, d)), Z, d))


# ---------------------------------------------------------------------------
# Complexity: nothing N x N per step, cost linear in channels
# ---------------------------------------------------------------------------


def _decoder_for(n_channels: int, mode: str) -> KalmanDecoder:
    rng = np.random.default_rng(n_channels)
    d = 3
    A = np.diag([0.9, 0.9, 1.0])
    W = np.diag([0.01, 0.01, 0.0])
    C = rng.normal(size=(n_channels, d))
    return KalmanDecoder.from_params(A=A, W=W, C=C, Q=np.eye(n_channels), mode=mode)


@pytest.mark.parametrize("mode", ["steady", "full"])
def test_step_scratch_is_independent_of_channels(mode):
    small, large = _decoder_for(64, mode), _decoder_for(2048, mode)
    assert small._engine.work_nbytes == large._engine.work_nbytes
    assert large._engine.work_nbytes <= 64 * large.state_dim_**2 * 8


@pytest.mark.parametrize("mode", ["steady", "full"])
def test_step_allocates_nothing_channel_squared(mode):
    n = 2000
    dec = _decoder_for(n, mode)
    zs = np.random.default_rng(1).normal(size=(20, n))
    dec.step(zs[0])
    tracemalloc.start()
    try:
        for z in zs:
            dec.step(z)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One N x N float64 would be 32 MB; a step may allocate only its d-sized output.
    assert peak < 8 * n, f"a step allocated up to {peak} bytes"


@pytest.mark.parametrize("mode", ["steady", "full"])
def test_step_cost_grows_linearly_with_channels(mode):
    def per_step(n_channels: int) -> float:
        dec = _decoder_for(n_channels, mode)
        z = np.ones(n_channels)
        return min(timeit.repeat(lambda: dec.step(z), number=300, repeat=7)) / 300

    ratio = per_step(2048) / per_step(128)
    # 16x the channels: linear cost gives <= ~16x, quadratic would give ~256x.
    assert ratio < 48, f"N=2048 vs N=128 step cost ratio {ratio:.1f}"


# ---------------------------------------------------------------------------
# Package contract
# ---------------------------------------------------------------------------


def test_check_decoder_passes():
    check_decoder(KalmanDecoder)


def test_check_decoder_catches_a_broken_decoder():
    class DriftingPredict(KalmanDecoder):
        def predict(self, Z):
            return super().predict(Z) + 1e-6

    with pytest.raises(AssertionError, match="predict"):
        check_decoder(DriftingPredict)


def test_sklearn_style_params():
    dec = KalmanDecoder(mode="full", gain=2.0)
    params = dec.get_params()
    assert params["mode"] == "full" and params["gain"] == 2.0
    assert KalmanDecoder(**params).get_params() == params
    assert "gain=2.0" in repr(dec)


def test_position_feedback_is_the_causal_intervention(rng):
    """position_feedback: set_position also zeroes the position uncertainty (Gilja
    et al. 2012); full mode equals a NumPy loop of that recursion, and the steady
    gain is its limit."""
    T = 1500
    V = np.zeros((T, 2))
    for t in range(1, T):
        V[t] = 0.9 * V[t - 1] + rng.normal(0, 0.02, 2)
    P = np.cumsum(V, 0) * 0.05
    Z = 10 + V @ rng.normal(0, 30, (2, 40)) + 3 * P @ rng.normal(0, 1, (2, 40)) \
        + rng.normal(0, 1, (T, 40))
    full = KalmanDecoder(mode="full", include_position=True, position_feedback=True).fit(Z, V, 0.05)
    steady = KalmanDecoder(include_position=True, position_feedback=True).fit(Z, V, 0.05)
    plain = KalmanDecoder(include_position=True).fit(Z, V, 0.05)
    A, W, S, G = full.A_, full.W_, full.S_, full.G_
    d = A.shape[0]
    x, Pc = np.r_[np.zeros(d - 1), 1.0], np.zeros((d, d))
    for t in range(T):
        pos = P[t - 1] if t else np.zeros(2)
        full.set_position(pos)
        steady.set_position(pos)
        x[:2] = pos
        Pc[:2, :] = Pc[:, :2] = 0.0
        xp = A @ x
        Pp = A @ Pc @ A.T + W
        Pc = np.linalg.solve(np.eye(d) + Pp @ S, Pp)
        Pc = 0.5 * (Pc + Pc.T)
        x = xp + Pc @ (G @ Z[t] - S @ xp)
        out_full, out_steady = full.step(Z[t]), steady.step(Z[t])
        assert_close(out_full, x[:-1], 1e-9, "full mode with the intervention")
        if t > 300:
            assert_close(out_steady, x[:-1], 1e-9, "steady mode with the intervention")
    assert_close(steady.covariance_, Pc, 1e-9, "steady posterior")
    assert not np.allclose(plain.K_, steady.K_)  # the intervention changes the gain

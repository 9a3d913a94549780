"""Kalman-filter velocity decoder (Wu et al. 2006), with compiled update kernels.

Model, for one bin t of width ``dt``::

    x_t = A x_{t-1} + w_t,   w_t ~ N(0, W)      (state: [position,] velocity, 1)
    z_t = C x_t     + q_t,   q_t ~ N(0, Q)      (z_t: N neural features)

The state always ends with a constant 1 (zero process noise, last row of A is
``[0, ..., 0, 1]``), so the last column of ``C`` is a per-channel offset and the
last column of ``A`` a velocity drift term.

Two update modes share the model:

``"full"``
    The exact time-varying filter in information (Woodbury) form. ``G = C' Q^-1``
    and ``S = G C`` are precomputed once, so a step inverts nothing larger than
    the state and costs O(N d + d^3) -- linear in the number of channels.
``"steady"``
    The fixed-gain filter the full one converges to: ``x <- F x + K z`` with the
    steady-state Kalman gain K and ``F = (I - K C) A``. O(N d) per step.

Fitting is least squares (:func:`fit_kalman_model`); the per-step arithmetic
lives in the Cython extension :mod:`bciarm.decoders._kalman`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

import bciarm
from bciarm.decoders import _kalman

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "KalmanDecoder",
    "NotFittedError",
    "RiccatiConvergenceError",
    "fit_kalman_model",
    "information_matrices",
    "kinematic_states",
    "r2_per_dim",
    "steady_state_riccati",
    "validate_model",
]

Mode = Literal["full", "steady"]
FloatArray = NDArray[np.float64]

FORMAT_NAME = "bciarm.KalmanDecoder"
FORMAT_VERSION = 1

_MODES = ("full", "steady")
# Relative tolerance for "W and Q are symmetric" in from_params.
_SYMMETRY_RTOL = 1e-10


class _SteadyState(NamedTuple):
    K: FloatArray  # steady gain, d x N
    F: FloatArray  # (I - K C) A
    post: FloatArray  # steady posterior covariance
    prior: FloatArray  # steady prior covariance (DARE solution)


class NotFittedError(ValueError, AttributeError):
    """The decoder was used before ``fit`` or ``from_params``."""


class RiccatiConvergenceError(RuntimeError):
    """The steady-state Riccati recursion did not converge."""


# ---------------------------------------------------------------------------
# Fitting (shared with the NumPy reference implementation)
# ---------------------------------------------------------------------------


def kinematic_states(X: FloatArray, dt: float, include_position: bool) -> FloatArray:
    """Stack the fitting states ``[p, v, 1]`` (or ``[v, 1]``) for each bin.

    Position is the integral of velocity that the model's kinematic rows assume,
    ``p_t = p_{t-1} + dt v_{t-1}`` with ``p_0 = 0`` (an exclusive cumulative sum),
    so the fitted C sees exactly the positions the filter will propagate. The
    arbitrary starting point is absorbed by the constant column of C.

    Parameters
    ----------
    X : (T, k) ndarray
        Velocities.
    dt : float
        Bin width, s.
    include_position : bool
        Prepend the integrated position.

    Returns
    -------
    (T, d) ndarray
        d = k + 1, or 2 k + 1 with position.
    """
    ones = np.ones((X.shape[0], 1))
    if not include_position:
        return np.hstack([X, ones])
    pos = np.zeros_like(X)
    np.cumsum(X[:-1] * dt, axis=0, out=pos[1:])
    return np.hstack([pos, X, ones])


def _fit_transition(
    states: FloatArray, k: int, dt: float, include_position: bool
) -> tuple[FloatArray, FloatArray]:
    """Least-squares A and W (Wu et al. 2006) with the structural rows fixed.

    Velocity rows regress ``v_t`` on ``[v_{t-1}, 1]``. With position included its
    rows are the exact kinematics ``p_t = p_{t-1} + dt v_{t-1}`` and carry zero
    process noise: position uncertainty enters only through velocity, and
    velocity rows ignore the (drifting, integrated) position on purpose.
    """
    d = states.shape[1]
    n_pos = k if include_position else 0
    vel = slice(n_pos, n_pos + k)
    regressors = states[:-1, n_pos:]  # [v_{t-1}, 1]
    targets = states[1:, vel]
    coef, *_ = np.linalg.lstsq(regressors, targets, rcond=None)
    residuals = targets - regressors @ coef

    A = np.zeros((d, d))
    A[vel, n_pos:] = coef.T
    A[-1, -1] = 1.0
    if include_position:
        A[:k, :k] = np.eye(k)
        A[:k, vel] = dt * np.eye(k)
    W = np.zeros((d, d))
    W[vel, vel] = residuals.T @ residuals / residuals.shape[0]
    return A, W


def _fit_observation(
    Z: FloatArray, states: FloatArray, alpha: float, q_ridge: float
) -> tuple[FloatArray, FloatArray]:
    """Least-squares (optionally ridge) C and residual covariance Q.

    The ridge penalty ``alpha`` spares the constant column (channel offsets).
    ``q_ridge`` adds ``q_ridge * mean(diag Q)`` to the diagonal of Q so that silent
    or perfectly explained channels do not make Q singular.
    """
    T, d = states.shape
    if alpha > 0:
        penalty = np.sqrt(alpha) * np.eye(d)[:-1]
        design = np.vstack([states, penalty])
        target = np.vstack([Z, np.zeros((d - 1, Z.shape[1]))])
    else:
        design, target = states, Z
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    C = np.ascontiguousarray(coef.T)
    residuals = Z - states @ coef
    Q = residuals.T @ residuals / T
    if q_ridge > 0:
        scale = float(np.mean(np.diag(Q)))
        Q[np.diag_indices_from(Q)] += q_ridge * (scale if scale > 0 else 1.0)
    return C, Q


def fit_kalman_model(
    Z: FloatArray,
    X: FloatArray,
    dt: float,
    include_position: bool = False,
    alpha: float = 0.0,
    q_ridge: float = 0.0,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Fit ``A, W, C, Q`` of the linear-Gaussian model by least squares.

    Parameters
    ----------
    Z : (T, N) ndarray
        Neural features, validated and finite.
    X : (T, k) ndarray
        Velocities aligned to ``Z``.
    dt : float
        Bin width, s.
    include_position : bool
        Model position (integrated velocity) as well as velocity.
    alpha : float
        Ridge penalty on the non-constant columns of C.
    q_ridge : float
        Relative diagonal loading of Q (see :class:`KalmanDecoder`).

    Returns
    -------
    A, W : (d, d) ndarray
    C : (N, d) ndarray
    Q : (N, N) ndarray
    """
    states = kinematic_states(X, dt, include_position)
    A, W = _fit_transition(states, X.shape[1], dt, include_position)
    C, Q = _fit_observation(Z, states, alpha, q_ridge)
    return A, W, C, Q


# ---------------------------------------------------------------------------
# Model checks and derived matrices
# ---------------------------------------------------------------------------


def _as_matrix(name: str, M: ArrayLike) -> FloatArray:
    arr = np.array(M, dtype=np.float64, order="C", copy=True)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def _check_symmetric(name: str, M: FloatArray) -> None:
    scale = max(float(np.max(np.abs(M))), np.finfo(float).tiny)
    asym = float(np.max(np.abs(M - M.T)))
    if asym > _SYMMETRY_RTOL * scale:
        raise ValueError(f"{name} must be symmetric (max |{name} - {name}.T| = {asym:.3g})")


def validate_model(
    A: ArrayLike, W: ArrayLike, C: ArrayLike, Q: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Check and copy model matrices into C-contiguous float64 arrays.

    Enforces the decoder's structure: A, W are d x d with d >= 2; C is N x d; Q
    is N x N; W, Q symmetric; W positive semi-definite; the last state is the
    constant 1 (last row of A is ``[0, ..., 0, 1]``, last row/column of W zero).
    Positive definiteness of Q is checked by :func:`information_matrices`.

    Raises
    ------
    ValueError
        Naming the offending matrix.
    """
    A, W, C, Q = (_as_matrix(n, M) for n, M in zip("AWCQ", (A, W, C, Q)))
    d = A.shape[0]
    if A.shape != (d, d) or d < 2:
        raise ValueError(f"A must be square d x d with d >= 2, got {A.shape}")
    if W.shape != (d, d):
        raise ValueError(f"W must be {d}x{d} like A, got {W.shape}")
    if C.ndim != 2 or C.shape[1] != d or C.shape[0] < 1:
        raise ValueError(f"C must be N x {d} (channels x state), got {C.shape}")
    n = C.shape[0]
    if Q.shape != (n, n):
        raise ValueError(f"Q must be {n}x{n} (channels x channels), got {Q.shape}")
    _check_symmetric("W", W)
    _check_symmetric("Q", Q)
    constant_row = np.zeros(d)
    constant_row[-1] = 1.0
    if not np.array_equal(A[-1], constant_row):
        raise ValueError("the last state is the constant 1: the last row of A must be [0, ..., 0, 1]")
    if np.any(W[-1] != 0) or np.any(W[:, -1] != 0):
        raise ValueError("the constant state has no process noise: last row/column of W must be 0")
    eig_min = float(np.linalg.eigvalsh(W).min())
    if eig_min < -1e-10 * max(float(np.max(np.abs(W))), 1.0):
        raise ValueError(f"W must be positive semi-definite (smallest eigenvalue {eig_min:.3g})")
    # Exact symmetry keeps the Riccati recursion and the kernels symmetric.
    W = 0.5 * (W + W.T)
    Q = 0.5 * (Q + Q.T)
    return A, W, C, Q


def information_matrices(C: FloatArray, Q: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``G = C' Q^-1`` (d x N) and ``S = G C`` (d x d), via one Cholesky solve.

    Raises
    ------
    ValueError
        If Q is not positive definite.
    """
    try:
        factor = scipy.linalg.cho_factor(Q, lower=True)
    except np.linalg.LinAlgError:
        raise ValueError(
            "Q is not positive definite (e.g. a silent channel); fit with q_ridge > 0 "
            "or add a small diagonal to Q"
        ) from None
    G = np.ascontiguousarray(scipy.linalg.cho_solve(factor, C).T)  # (Q^-1 C)' = C' Q^-1
    S = G @ C
    S = np.ascontiguousarray(0.5 * (S + S.T))
    return G, S


def steady_state_riccati(
    A: FloatArray,
    W: FloatArray,
    S: FloatArray,
    G: FloatArray,
    tol: float = 1e-12,
    max_iter: int = 2**30,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Steady state of the information-form Riccati recursion started at P = 0.

    The recursion is the covariance half of a full filter step::

        P-_{j+1} = A P_j A' + W,     P_j = solve(I + P-_j S, P-_j)

    (only d x d matrices). It is iterated by doubling (the structure-preserving
    doubling algorithm of Chu et al. 2005): iteration i of the loop below yields
    exactly the prior after 2**i steps of the recursion, so a filter whose
    steady state takes 10^5 steps to reach (e.g. a weakly observed integrated
    position) costs ~17 d x d iterations instead of 10^5. Convergence is
    quadratic, so the change between two doublings bounds the remaining error;
    the loop stops when it is below ``tol`` relative to ``max |P-|``. Since
    ``K = P G`` is linear in P, K has converged to the same relative accuracy.

    Parameters
    ----------
    A, W, S : (d, d) ndarray
        Transition, its noise, and ``C' Q^-1 C``.
    G : (d, N) ndarray
        ``C' Q^-1``.
    tol : float
        Relative tolerance.
    max_iter : int
        Most recursion steps the steady state may take to reach (2**30 by
        default, about 1.7 years of 50 ms bins).

    Returns
    -------
    P_prior, P_post : (d, d) ndarray
        Steady prior covariance (the solution of the DARE) and posterior one.
    K : (d, N) ndarray
        Steady-state gain ``P_post G = P_prior C' (C P_prior C' + Q)^-1``.

    Raises
    ------
    RiccatiConvergenceError
        If the recursion has not converged after ``max_iter`` steps, or blows up.
    """
    d = A.shape[0]
    eye = np.eye(d)
    # Doubling for X = At X (I + Gd X)^-1 At' + Hd with At = A, Gd = S, Hd = W:
    # H_i is the prior after 2**i recursion steps from P_post = 0 (H_0 = W).
    a_k, g_k, h_k = A.T.copy(), S.copy(), W.copy()
    steps, change, scale = 1, np.inf, 1.0
    while steps < max_iter:
        m = eye + g_k @ h_k
        m_a = np.linalg.solve(m, a_k)
        h_new = h_k + a_k.T @ h_k @ m_a
        g_new = g_k + a_k @ np.linalg.solve(m, g_k) @ a_k.T
        a_k = a_k @ m_a
        g_k = 0.5 * (g_new + g_new.T)
        h_new = 0.5 * (h_new + h_new.T)
        steps *= 2
        if not np.all(np.isfinite(h_new)):
            break
        change = float(np.max(np.abs(h_new - h_k)))
        scale = max(float(np.max(np.abs(h_new))), np.finfo(float).tiny)
        h_k = h_new
        if change <= tol * scale:
            post = np.linalg.solve(eye + h_k @ S, h_k)
            post = 0.5 * (post + post.T)
            return h_k, post, post @ G
    raise RiccatiConvergenceError(
        f"the steady-state Riccati recursion did not converge to tol={tol:g} within "
        f"{steps} steps (last relative change {change / scale:.3g}); the model may be "
        f"unstable or unobservable -- use mode='full', or raise max_riccati_iter"
    )


def _steady_state_with_known_position(
    A: FloatArray, W: FloatArray, S: FloatArray, G: FloatArray, n_position: int,
    tol: float, max_iter: int,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Steady state of the recursion in which the position is observed after each step.

    ReFIT-KF's causal intervention (Gilja et al. 2012): after every update the
    position states are set to the effector's actual position, so their
    variance and covariances are zero before the next prediction::

        P-_{j+1} = A Z(P_j) A' + W,   P_j = solve(I + P-_j S, P-_j)

    with Z zeroing the position rows and columns. Iterated directly (no
    doubling: Z breaks the structure doubling relies on); the intervention
    removes the slow integrated-position mode, so this converges like the
    velocity block. Returns the steady prior, the posterior (before Z) and
    the gain ``P G`` that the filter applies.
    """
    d = A.shape[0]
    eye = np.eye(d)
    post = np.zeros((d, d))
    prior = np.full((d, d), np.inf)  # no previous prior: the first change is never small
    for _ in range(min(max_iter, 1_000_000)):
        known = post.copy()
        known[:n_position, :] = 0.0
        known[:, :n_position] = 0.0
        new_prior = A @ known @ A.T + W
        new_prior = 0.5 * (new_prior + new_prior.T)
        post = np.linalg.solve(eye + new_prior @ S, new_prior)
        post = 0.5 * (post + post.T)
        change = float(np.max(np.abs(new_prior - prior)))
        scale = max(float(np.max(np.abs(new_prior))), np.finfo(float).tiny)
        prior = new_prior
        if not np.all(np.isfinite(prior)):
            break
        if change <= tol * scale:
            return prior, post, post @ G
    raise RiccatiConvergenceError(
        "the steady state of the position-feedback recursion did not converge; use mode='full'")


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def r2_per_dim(y_true: ArrayLike, y_pred: ArrayLike) -> FloatArray:
    """Coefficient of determination of each column (scikit-learn convention).

    ``1 - SS_res / SS_tot`` per column; a constant true column scores 1.0 if
    predicted exactly and 0.0 otherwise.

    Parameters
    ----------
    y_true, y_pred : (T, k) array_like

    Returns
    -------
    (k,) ndarray
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.ndim == 1:
        yt = yt[:, None]
    if yp.ndim == 1:
        yp = yp[:, None]
    if yt.shape != yp.shape or yt.shape[0] < 1:
        raise ValueError(f"y_true and y_pred must have the same (T, k) shape, got {yt.shape} and {yp.shape}")
    ss_res = np.sum((yt - yp) ** 2, axis=0)
    ss_tot = np.sum((yt - yt.mean(axis=0)) ** 2, axis=0)
    r2 = np.where(ss_res == 0, 1.0, 0.0)
    nonconstant = ss_tot > 0
    r2[nonconstant] = 1.0 - ss_res[nonconstant] / ss_tot[nonconstant]
    return r2


# ---------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------


class KalmanDecoder:
    """Kalman-filter decoder of velocity (optionally position) from neural features.

    Follows the scikit-learn estimator contract (``get_params``/``set_params``,
    ``fit`` returning ``self``, learned attributes ending in ``_``) and adds an
    online interface: :meth:`step` decodes one bin and advances the filter,
    :meth:`reset` restarts it.

    Parameters
    ----------
    mode : {"steady", "full"}
        ``"steady"``: fixed steady-state gain, ``x <- F x + K z`` (fastest).
        ``"full"``: exact time-varying Kalman filter in information form.
    include_position : bool
        Model position (integrated velocity) before velocity in the state. Its
        rows of A are the exact kinematics ``p_t = p_{t-1} + dt v_{t-1}`` with no
        process noise of their own.
    alpha : float
        Ridge penalty on the observation model C (not on its offset column).
    gain : float
        Clinical decoder gain: multiplies the velocity returned by :meth:`step`
        and :meth:`predict`. The filter state itself is not scaled, and changing
        ``gain`` on a running decoder takes effect at the next step.
    q_ridge : float
        Diagonal loading of the fitted Q, relative to its mean diagonal, so that
        silent channels do not make Q singular. Not applied by
        :meth:`from_params`, which uses Q as given.
    position_feedback : bool
        The position states are observed (ReFIT-KF's causal intervention,
        Gilja et al. 2012): :meth:`set_position` sets them to the effector's
        actual position and zeroes their uncertainty, and the steady gain is
        computed for that recursion. Needs ``include_position`` to matter; the
        decoder node calls :meth:`set_position` with its ``position_feedback``.
    tol : float
        Relative convergence tolerance of the steady-state Riccati recursion.
    max_riccati_iter : int
        Most filter steps the steady state may take to reach (the recursion is
        iterated by doubling, so this costs only log2 of it in d x d work).

    Attributes
    ----------
    A_, W_ : (d, d) ndarray
        State transition and its noise covariance.
    C_ : (N, d) ndarray
        Observation model; last column is the per-channel offset.
    Q_ : (N, N) ndarray
        Observation noise covariance.
    G_ : (d, N) ndarray
        ``C' Q^-1``.
    S_ : (d, d) ndarray
        ``C' Q^-1 C``.
    K_, F_ : ndarray
        Steady-state gain (d x N) and transition (d x d); computed at fit in
        steady mode, on first access in full mode.
    dt_ : float
        Bin width, s.
    n_channels_, n_features_in_ : int
        Number of neural features N.
    state_dim_ : int
        d = n_kinematic_ + 1.
    n_kinematic_ : int
        Length of a decoded vector: k, or 2 k with position ([p, v]).
    n_velocity_ : int
        k, the number of velocity dimensions.
    state_ : (d,) ndarray
        Copy of the current filter state (constant 1 last).
    covariance_ : (d, d) ndarray
        Posterior covariance of ``state_`` (full mode); in steady mode the
        steady-state posterior covariance the fixed gain assumes.
    steady_prior_cov_ : (d, d) ndarray
        Steady-state prior covariance (solution of the Riccati equation).

    Notes
    -----
    :meth:`predict` always starts from a freshly reset filter and leaves the
    online state alone; after :meth:`reset`, ``predict(Z)`` equals
    ``np.array([step(z) for z in Z])`` (same compiled arithmetic).

    :meth:`step` costs O(N d) in steady mode and O(N d + d^3) in full mode and
    allocates only its output. In full mode the covariance recursion (which
    does not depend on the data) settles after a transient on a floating-point
    fixed point or short cycle; from then on the next covariance is looked up
    instead of recomputed, which is bit-identical and makes a step O(N d + d^2).
    A reset or any change to the covariance resumes the recursion; nothing N x N is touched after fitting. A step
    whose new state would be non-finite (NaN/Inf in ``z``) raises ``ValueError``
    and leaves the filter as it was. A decoder instance is not thread-safe.

    A fit that fails (e.g. Q not positive definite, or no steady state in steady
    mode) leaves the decoder unfitted.

    Examples
    --------
    ::

        dec = KalmanDecoder(mode="steady").fit(Z_train, X_train, dt=0.05)
        velocity = dec.step(z)        # online: one bin, advances the filter
        V = dec.predict(Z_test)       # offline: a block, from a reset filter
        dec.save("decoder.npz"); dec = KalmanDecoder.load("decoder.npz")

    References
    ----------
    Wu W, Gao Y, Bienenstock E, Donoghue JP, Black MJ (2006). Bayesian population
    decoding of motor cortical activity using a Kalman filter. Neural Comput
    18(1):80-118.
    """

    # Class-level default so an unfitted instance has no learned attributes but
    # step() still fails cleanly; fit()/from_params() set the instance attribute.
    _engine: Any = None
    _steady: _SteadyState | None = None

    def __init__(
        self,
        mode: Mode = "steady",
        include_position: bool = False,
        alpha: float = 0.0,
        gain: float = 1.0,
        q_ridge: float = 1e-6,
        tol: float = 1e-12,
        max_riccati_iter: int = 2**30,
        position_feedback: bool = False,
    ) -> None:
        self.mode = mode
        self.include_position = include_position
        self.position_feedback = position_feedback
        self.alpha = alpha
        self.gain = gain
        self.q_ridge = q_ridge
        self.tol = tol
        self.max_riccati_iter = max_riccati_iter

    # -- scikit-learn parameter protocol ------------------------------------

    _PARAM_NAMES = ("mode", "include_position", "alpha", "gain", "q_ridge", "tol", "max_riccati_iter",
                    "position_feedback")
    # Parameters that change the filter built from a fitted model (not the model).
    _FILTER_PARAMS = frozenset({"mode", "tol", "max_riccati_iter", "position_feedback"})

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters as passed to ``__init__``.

        Parameters
        ----------
        deep : bool
            Accepted for scikit-learn compatibility (no nested estimators).
        """
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **params: Any) -> KalmanDecoder:
        """Set hyper-parameters; returns ``self``.

        On a fitted decoder, ``gain`` acts at the next step, and a changed
        ``mode``, ``tol`` or ``max_riccati_iter`` rebuilds the filter from the
        fitted model and resets it. ``include_position``, ``alpha`` and ``q_ridge`` shape the model and
        take effect at the next :meth:`fit`.

        Raises
        ------
        ValueError
            For an unknown parameter name or an invalid value.
        """
        unknown = sorted(set(params) - set(self._PARAM_NAMES))
        if unknown:
            raise ValueError(f"invalid parameter(s) {unknown} for KalmanDecoder; valid: {list(self._PARAM_NAMES)}")
        old = self.get_params()
        for name, value in params.items():
            setattr(self, name, value)
        if self._is_fitted():
            try:
                self._validate_hyperparameters()
                if any(old[name] != params[name] for name in self._FILTER_PARAMS & set(params)):
                    self._build_filter()
            except Exception:
                for name, value in old.items():
                    setattr(self, name, value)
                raise
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != type(self)().get_params()[k]}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"

    def _validate_hyperparameters(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if not isinstance(self.include_position, (bool, np.bool_)):
            raise ValueError(f"include_position must be a bool, got {self.include_position!r}")
        if not isinstance(self.position_feedback, (bool, np.bool_)):
            raise ValueError(f"position_feedback must be a bool, got {self.position_feedback!r}")
        for name in ("alpha", "q_ridge"):
            if not (_is_real(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if not _is_real(self.gain):
            raise ValueError(f"gain must be a finite number, got {self.gain!r}")
        if not (_is_real(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {self.tol!r}")
        iters = self.max_riccati_iter
        if isinstance(iters, (bool, np.bool_)) or not isinstance(iters, (int, np.integer)) or iters < 1:
            raise ValueError(f"max_riccati_iter must be an int >= 1, got {iters!r}")

    # -- fitting / construction --------------------------------------------

    def fit(self, Z: ArrayLike, X: ArrayLike, dt: float) -> KalmanDecoder:
        """Fit the model by least squares and reset the filter.

        Parameters
        ----------
        Z : (T, N) array_like
            Neural features per bin (e.g. spike counts), finite.
        X : (T, k) array_like
            Velocities aligned to ``Z``, finite.
        dt : float
            Bin width, s (> 0).

        Returns
        -------
        KalmanDecoder
            ``self``.

        Raises
        ------
        ValueError
            On wrong shapes, non-finite values, too few bins or a bad ``dt``.
        """
        self._validate_hyperparameters()
        Z, X = _check_training_data(Z, X)
        dt = _check_dt(dt)
        d = X.shape[1] * (2 if self.include_position else 1) + 1
        if Z.shape[0] < d + 2:
            raise ValueError(f"need at least {d + 2} bins to fit a {d}-dimensional state, got {Z.shape[0]}")
        A, W, C, Q = fit_kalman_model(Z, X, dt, bool(self.include_position), float(self.alpha), float(self.q_ridge))
        # Same normalisation as from_params, so from_params(A_, W_, C_, Q_) is exact.
        self._set_model(*validate_model(A, W, C, Q), dt)
        return self

    @classmethod
    def from_params(
        cls,
        *,
        A: ArrayLike,
        W: ArrayLike,
        C: ArrayLike,
        Q: ArrayLike,
        dt: float = 0.05,
        **hyper: Any,
    ) -> KalmanDecoder:
        """Build a ready-to-run decoder from model matrices.

        Parameters
        ----------
        A, W : (d, d) array_like
            State transition and its noise covariance; the last state must be the
            constant 1 (last row of A ``[0, ..., 0, 1]``, last row/column of W 0).
        C : (N, d) array_like
            Observation model.
        Q : (N, N) array_like
            Observation noise covariance, symmetric positive definite.
        dt : float
            Bin width, s.
        **hyper
            Hyper-parameters of :class:`KalmanDecoder`. With
            ``include_position=True`` the kinematic state (d - 1 entries) is split
            evenly into position then velocity.

        Raises
        ------
        ValueError
            For inconsistent shapes, non-finite, asymmetric or indefinite matrices.
        """
        decoder = cls(**hyper)
        decoder._validate_hyperparameters()
        A, W, C, Q = validate_model(A, W, C, Q)
        if decoder.include_position and (A.shape[0] - 1) % 2:
            raise ValueError(
                f"include_position=True needs an even number of kinematic states, got {A.shape[0] - 1}")
        decoder._set_model(A, W, C, Q, _check_dt(dt))
        return decoder

    _LEARNED = ("A_", "W_", "C_", "Q_", "G_", "S_", "dt_", "n_channels_", "n_features_in_",
                "state_dim_", "n_kinematic_", "n_velocity_")

    def _set_model(self, A: FloatArray, W: FloatArray, C: FloatArray, Q: FloatArray, dt: float) -> None:
        """Install model matrices, derive the filter matrices, reset the state.

        On failure (Q not positive definite, no steady state) the decoder is left
        unfitted rather than half-updated.
        """
        try:
            G, S = information_matrices(C, Q)
            for M in (A, W, C, Q, G, S):
                M.flags.writeable = False  # the compiled filter reads them in place
            d = A.shape[0]
            self.A_, self.W_, self.C_, self.Q_ = A, W, C, Q
            self.G_, self.S_ = G, S
            self.dt_ = float(dt)
            self.n_channels_ = self.n_features_in_ = C.shape[0]
            self.state_dim_ = d
            self.n_kinematic_ = d - 1
            self.n_velocity_ = (d - 1) // 2 if self.include_position else d - 1
            self._n_position = self.n_kinematic_ - self.n_velocity_
            self._build_filter()
        except Exception:
            for name in self._LEARNED + ("_engine", "_steady", "_x", "_P", "_n_position"):
                self.__dict__.pop(name, None)
            raise

    def _build_filter(self) -> None:
        """(Re)create the compiled online filter for the current mode, reset.

        Everything is built before anything is replaced, so a failure (no steady
        state) keeps the previous filter working.
        """
        d = self.state_dim_
        x = self._initial_state()
        P = np.zeros((d, d))
        self._steady = None  # a cache; tol / max_riccati_iter may have changed
        if self.mode == "steady":
            K, F = self._steady_solution()[:2]
            engine = _kalman.SteadyFilter(F, K, x, self.n_kinematic_, self._n_position)
        else:
            engine = _kalman.FullFilter(
                self.A_, self.W_, self.S_, self.G_, x, P, self.n_kinematic_, self._n_position)
        self._x, self._P, self._engine = x, P, engine

    def _initial_state(self) -> FloatArray:
        x = np.zeros(self.state_dim_)
        x[-1] = 1.0
        return x

    def _steady_mode(self) -> bool:
        # The built filter, not self.mode, decides: predict must match step.
        return isinstance(self._engine, _kalman.SteadyFilter)

    def _is_fitted(self) -> bool:
        return "A_" in self.__dict__

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(
                "this KalmanDecoder is not fitted yet; call fit() or build it with from_params()")

    # -- steady state ---------------------------------------------------------

    def _steady_solution(self) -> _SteadyState:
        """The steady-state quantities, computed once per model and settings."""
        self._check_fitted()
        if self._steady is None:
            if self.position_feedback and self._n_position > 0:
                prior, post, K = _steady_state_with_known_position(
                    self.A_, self.W_, self.S_, self.G_, self._n_position, float(self.tol),
                    int(self.max_riccati_iter))
            else:
                prior, post, K = steady_state_riccati(
                    self.A_, self.W_, self.S_, self.G_, float(self.tol), int(self.max_riccati_iter))
            # The constant state is known exactly (zero covariance): its gain row
            # is 0 in exact arithmetic, so F's last row is exactly A's.
            K[-1] = 0.0
            F = (np.eye(self.state_dim_) - K @ self.C_) @ self.A_
            for M in (K, F, post, prior):
                M.flags.writeable = False  # shared with the compiled filter
            self._steady = _SteadyState(np.ascontiguousarray(K), np.ascontiguousarray(F), post, prior)
        return self._steady

    def steady_state_gain(self) -> FloatArray:
        """Steady-state Kalman gain K (d x N), a copy.

        The steady filter reads ``x_t = A x_{t-1} + K (z_t - C A x_{t-1})``, with
        ``K = P C' (C P C' + Q)^-1`` and P the prior covariance solving the discrete
        algebraic Riccati equation (found by iterating the information-form
        recursion, see :func:`steady_state_riccati`). Its last row is 0.

        Raises
        ------
        RiccatiConvergenceError
            If the recursion does not converge.
        """
        return self._steady_solution().K.copy()

    @property
    def K_(self) -> FloatArray:
        """Steady-state gain (d x N), read-only."""
        return self._steady_solution().K

    @property
    def F_(self) -> FloatArray:
        """Steady-state transition ``(I - K C) A`` (d x d), read-only."""
        return self._steady_solution().F

    @property
    def steady_prior_cov_(self) -> FloatArray:
        """Steady prior covariance (the DARE solution), read-only."""
        return self._steady_solution().prior

    # -- online interface -------------------------------------------------------

    @property
    def state_(self) -> FloatArray:
        """Current filter state ``[kinematics, 1]``, a copy."""
        self._check_fitted()
        return self._x.copy()

    @property
    def covariance_(self) -> FloatArray:
        """Posterior covariance of the current state (see class docstring), a copy."""
        self._check_fitted()
        if self._steady_mode():
            return self._steady_solution().post.copy()
        return self._P.copy()

    def reset(self) -> KalmanDecoder:
        """Restart the filter at ``x = [0, ..., 0, 1]``, ``P = 0``; returns ``self``."""
        self._check_fitted()
        self._x[:] = 0.0
        self._x[-1] = 1.0
        self._P[:] = 0.0
        return self

    def set_position(self, position: ArrayLike) -> KalmanDecoder:
        """Position feedback: set the position states to the effector's actual position.

        ReFIT-KF (Gilja et al. 2012) treats position as observed by the user:
        each bin the filter's position is overwritten with where the effector
        really is. With ``position_feedback=True`` its uncertainty is set to
        zero as well (the "causal intervention"): in full mode the position
        rows and columns of the covariance are zeroed here, and the steady gain
        is the one of that recursion. A no-op for a velocity-only model.
        Returns ``self``.

        Raises
        ------
        ValueError
            If ``position`` does not have ``n_velocity_`` finite entries.
        """
        self._check_fitted()
        if self._n_position == 0:
            return self
        p = np.asarray(position, dtype=np.float64)
        if p.shape != (self._n_position,) or not np.all(np.isfinite(p)):
            raise ValueError(f"position must be {self._n_position} finite values, got {p!r}")
        self._x[: self._n_position] = p  # the compiled filter updates this array in place
        if self.position_feedback:
            self._P[: self._n_position, :] = 0.0
            self._P[:, : self._n_position] = 0.0
        return self

    def step(self, z: ArrayLike) -> FloatArray:
        """Decode one bin and advance the filter.

        Parameters
        ----------
        z : (N,) array_like
            Neural features of the bin.

        Returns
        -------
        (n_kinematic_,) ndarray
            New float64 array: velocity (times ``gain``), preceded by position
            when ``include_position``.

        Raises
        ------
        ValueError
            If ``z`` has the wrong shape, or contains NaN/Inf (the state is then
            left unchanged).
        """
        # Hot path: everything, including validation, happens in the compiled
        # filter object; only the output and finiteness of the d-sized new state
        # are checked.
        engine = self._engine
        if engine is None:
            self._check_fitted()
        return engine.step(z, self.gain)

    def predict(self, Z: ArrayLike) -> FloatArray:
        """Decode a block of bins from a freshly reset filter.

        The online state (:meth:`step`) is neither used nor modified.

        Parameters
        ----------
        Z : (T, N) array_like

        Returns
        -------
        (T, n_kinematic_) ndarray
            Row t equals what the t-th :meth:`step` after :meth:`reset` returns.
        """
        self._check_fitted()
        Z = _check_features(Z, self.n_channels_)
        out = np.empty((Z.shape[0], self.n_kinematic_))
        x0 = self._initial_state()
        gain = float(self.gain)
        if self._steady_mode():
            _kalman.steady_batch(self.F_, self.K_, x0, Z, out, self._n_position, gain)
        else:
            P0 = np.zeros((self.state_dim_, self.state_dim_))
            _kalman.full_batch(self.A_, self.W_, self.S_, self.G_, x0, P0, Z, out, self._n_position, gain)
        return out

    # -- scoring ------------------------------------------------------------------

    def r2_per_dim(self, Z: ArrayLike, X: ArrayLike) -> FloatArray:
        """R² of each decoded velocity dimension against true velocities X (T x k).

        Decodes with :meth:`predict` (so ``gain`` applies).
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_velocity_:
            raise ValueError(f"X must be (T, {self.n_velocity_}) velocities, got shape {X.shape}")
        velocity = self.predict(Z)[:, self._n_position:]
        if velocity.shape[0] != X.shape[0]:
            raise ValueError(f"Z has {velocity.shape[0]} bins but X has {X.shape[0]}")
        return r2_per_dim(X, velocity)

    def score(self, Z: ArrayLike, X: ArrayLike) -> float:
        """Mean R² over velocity dimensions (scikit-learn ``score`` convention)."""
        return float(np.mean(self.r2_per_dim(Z, X)))

    # -- persistence ----------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the model to an ``.npz`` file at exactly ``path`` (no pickle).

        The archive holds the arrays ``A, W, C, Q`` and ``meta``, a JSON string
        with the format name and version, ``bciarm_version``, ``dt`` and the
        hyper-parameters. The filter state is not saved.

        Returns
        -------
        Path
            The written path.
        """
        self._check_fitted()
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "bciarm_version": bciarm.__version__,
            "dt": self.dt_,
            # include_position as fitted: set_params only changes it at the next fit.
            "params": {k: _jsonable(v) for k, v in self.get_params().items()}
            | {"include_position": self._n_position > 0},
        }
        path = Path(path)
        with path.open("wb") as fh:  # a file object stops numpy appending ".npz"
            np.savez(fh, A=self.A_, W=self.W_, C=self.C_, Q=self.Q_, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> KalmanDecoder:
        """Read a decoder written by :meth:`save`; the filter starts reset.

        Raises
        ------
        ValueError
            If the file is not a KalmanDecoder archive or has an incompatible
            format version.
        """
        with np.load(Path(path), allow_pickle=False) as archive:
            missing = {"A", "W", "C", "Q", "meta"} - set(archive.files)
            if missing:
                raise ValueError(f"{path}: not a KalmanDecoder file (missing {sorted(missing)})")
            meta = json.loads(str(archive["meta"]))
            arrays = {name: archive[name] for name in "AWCQ"}
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT_NAME!r}")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: KalmanDecoder file format version {version!r} (written by bciarm "
                f"{meta.get('bciarm_version', '?')}) is incompatible; this bciarm "
                f"({bciarm.__version__}) reads version {FORMAT_VERSION}")
        return cls.from_params(**arrays, dt=meta["dt"], **meta["params"])


# ---------------------------------------------------------------------------
# Input validation helpers
# ---------------------------------------------------------------------------


def _is_real(value: Any) -> bool:
    """A finite real scalar (bools excluded)."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value)))


def _jsonable(value: Any) -> Any:
    """Python scalars for JSON (numpy scalars are not all serialisable)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_dt(dt: Any) -> float:
    try:
        value = float(dt)
    except (TypeError, ValueError):
        raise ValueError(f"dt must be a number of seconds, got {dt!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"dt must be a finite positive number of seconds, got {dt!r}")
    return value


def _as_float_2d(name: str, M: ArrayLike, what: str) -> FloatArray:
    try:
        arr = np.ascontiguousarray(M, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric {what} array: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D {what} array, got shape {arr.shape}")
    return arr


def _check_finite(name: str, M: FloatArray) -> None:
    bad = ~np.isfinite(M)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"{name} contains NaN or Inf (rows {rows[:5].tolist()}{'...' if len(rows) > 5 else ''})")


def _check_training_data(Z: ArrayLike, X: ArrayLike) -> tuple[FloatArray, FloatArray]:
    Z = _as_float_2d("Z", Z, "(T, N) feature")
    X = _as_float_2d("X", X, "(T, k) velocity")
    if Z.shape[0] != X.shape[0]:
        raise ValueError(f"Z and X must have the same number of bins, got {Z.shape[0]} and {X.shape[0]}")
    if Z.shape[1] < 1 or X.shape[1] < 1:
        raise ValueError(f"need at least one channel and one velocity dimension, got Z {Z.shape}, X {X.shape}")
    _check_finite("Z", Z)
    _check_finite("X", X)
    return Z, X


def _check_features(Z: ArrayLike, n_channels: int) -> FloatArray:
    Z = _as_float_2d("Z", Z, "(T, N) feature")
    if Z.shape[1] != n_channels:
        raise ValueError(f"Z must have {n_channels} channels (columns), got {Z.shape[1]}")
    _check_finite("Z", Z)
    return Z

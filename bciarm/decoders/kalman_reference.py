"""Plain-NumPy textbook Kalman filter, the yardstick for :class:`KalmanDecoder`.

It shares only the least-squares fitting (:func:`fit_kalman_model`) with the
compiled decoder. The filtering is the classic covariance form, written
independently of the information-form kernels::

    x- = A x                    P- = A P A' + W
    K  = P- C' (C P- C' + Q)^-1         (an N x N innovation solve per step)
    x  = x- + K (z - C x-)      P  = (I - K C) P- (I - K C)' + K Q K'   (Joseph form)

It is deliberately simple and slow (O(N^3) per step): use it in tests only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bciarm.decoders.kalman import fit_kalman_model

__all__ = ["KalmanReference"]

FloatArray = NDArray[np.float64]


class KalmanReference:
    """Reference Kalman decoder with the same model and output as ``KalmanDecoder``.

    Parameters
    ----------
    include_position : bool
        State ``[p, v, 1]`` instead of ``[v, 1]``.
    alpha : float
        Ridge penalty on C (fit only).
    gain : float
        Multiplier of the returned velocity.
    q_ridge : float
        Relative diagonal loading of the fitted Q.

    Attributes
    ----------
    A_, W_, C_, Q_ : ndarray
        Model matrices.
    state_ : (d,) ndarray
        Current state (the object itself, not a copy).
    P_ : (d, d) ndarray
        Current posterior covariance.
    gain_history_ : list of ndarray
        Kalman gain of every step since the last reset (if ``keep_gains``).
    """

    def __init__(
        self,
        include_position: bool = False,
        alpha: float = 0.0,
        gain: float = 1.0,
        q_ridge: float = 1e-6,
        keep_gains: bool = False,
    ) -> None:
        self.include_position = include_position
        self.alpha = alpha
        self.gain = gain
        self.q_ridge = q_ridge
        self.keep_gains = keep_gains

    def fit(self, Z: ArrayLike, X: ArrayLike, dt: float) -> KalmanReference:
        """Least-squares fit (shared with ``KalmanDecoder``); resets the filter."""
        Z = np.asarray(Z, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        A, W, C, Q = fit_kalman_model(Z, X, dt, self.include_position, self.alpha, self.q_ridge)
        return self._set_model(A, W, C, Q)

    @classmethod
    def from_params(
        cls, *, A: ArrayLike, W: ArrayLike, C: ArrayLike, Q: ArrayLike, **hyper: object
    ) -> KalmanReference:
        """Reference filter for given model matrices (no validation)."""
        return cls(**hyper)._set_model(*(np.array(M, dtype=np.float64) for M in (A, W, C, Q)))

    def _set_model(self, A: FloatArray, W: FloatArray, C: FloatArray, Q: FloatArray) -> KalmanReference:
        self.A_, self.W_, self.C_, self.Q_ = A, W, C, Q
        d = A.shape[0]
        self.n_kinematic_ = d - 1
        self.n_position_ = (d - 1) // 2 if self.include_position else 0
        return self.reset()

    def reset(self) -> KalmanReference:
        """x = [0, ..., 0, 1], P = 0."""
        d = self.A_.shape[0]
        self.state_ = np.zeros(d)
        self.state_[-1] = 1.0
        self.P_ = np.zeros((d, d))
        self.gain_history_: list[FloatArray] = []
        return self

    def step(self, z: ArrayLike) -> FloatArray:
        """One classic Kalman step; returns ``[p,] gain * v``."""
        A, W, C, Q = self.A_, self.W_, self.C_, self.Q_
        z = np.asarray(z, dtype=np.float64)
        x_prior = A @ self.state_
        P_prior = A @ self.P_ @ A.T + W
        innovation_cov = C @ P_prior @ C.T + Q  # N x N
        # K = P- C' S^-1  <=>  S K' = C P-   (S, P- symmetric)
        K = np.linalg.solve(innovation_cov, C @ P_prior).T
        self.state_ = x_prior + K @ (z - C @ x_prior)
        I_KC = np.eye(A.shape[0]) - K @ C
        self.P_ = I_KC @ P_prior @ I_KC.T + K @ Q @ K.T
        if self.keep_gains:
            self.gain_history_.append(K)
        out = self.state_[:-1].copy()
        out[self.n_position_:] *= self.gain
        return out

    def predict(self, Z: ArrayLike) -> FloatArray:
        """Decode rows of Z from a reset filter (resets the filter first)."""
        self.reset()
        return np.array([self.step(z) for z in np.asarray(Z, dtype=np.float64)])

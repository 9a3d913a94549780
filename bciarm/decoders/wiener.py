"""Causal Wiener-filter velocity decoder with an online ``step``.

The velocity of bin t is a linear function of the features of bins
``t, t-1, ..., t-history+1`` (nothing from the future)::

    v_t = b + sum_h W_h z_{t-h}

fit by ridge regression (``alpha``, the intercept unpenalised). Online,
:meth:`WienerDecoder.step` keeps the last ``history`` feature vectors in a
ring buffer; slots before the first bin hold the training mean of the
features, in :meth:`~WienerDecoder.fit` and :meth:`~WienerDecoder.predict`
alike, so ``predict(Z)`` equals a loop of ``step`` after ``reset``.
Cost per step: O(history * N * k).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

import bciarm
from bciarm.decoders.kalman import NotFittedError, _check_dt, _check_features, _check_training_data
from bciarm.decoders.kalman import r2_per_dim as _r2

__all__ = ["WienerDecoder", "history_matrix", "ridge_solve"]

FloatArray = NDArray[np.float64]
FORMAT_NAME = "bciarm.WienerDecoder"
FORMAT_VERSION = 1


def history_matrix(Z: FloatArray, history: int, pad: FloatArray) -> FloatArray:
    """Stack ``[z_t, z_{t-1}, ..., z_{t-history+1}]`` per row; earlier slots are ``pad``.

    Parameters
    ----------
    Z : (T, N) ndarray
    history : int
    pad : (N,) ndarray

    Returns
    -------
    (T, N * history) ndarray
    """
    T, n = Z.shape
    padded = np.vstack([np.tile(pad, (history - 1, 1)), Z])
    out = np.empty((T, n * history))
    for h in range(history):
        out[:, h * n:(h + 1) * n] = padded[history - 1 - h: history - 1 - h + T]
    return out


def ridge_solve(gram: FloatArray, cross: FloatArray, alpha: float) -> FloatArray:
    """Solve ``(gram + alpha I') w = cross`` where I' spares the last (intercept) row.

    ``gram`` is the Gram matrix of a design whose last column is all ones.
    """
    A = gram.copy()
    idx = np.arange(A.shape[0] - 1)
    A[idx, idx] += alpha
    try:
        return scipy.linalg.solve(A, cross, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        return np.linalg.lstsq(A, cross, rcond=None)[0]


class WienerDecoder:
    """Causal ridge Wiener filter on ``history`` bins (scikit-learn contract + ``step``).

    Parameters
    ----------
    history : int
        Bins of features the output depends on (current bin included).
    alpha : float
        Ridge penalty on the weights (not on the intercept); features should
        be on comparable scales (z-score them with
        :class:`~bciarm.decoders.features.FeatureTransformer`).
    gain : float
        Multiplies the decoded velocity.

    Attributes
    ----------
    coef_ : (k, N * history) ndarray
    intercept_ : (k,) ndarray
    pad_ : (N,) ndarray
        Training mean of the features (history padding after ``reset``).
    n_channels_, n_features_in_, n_velocity_, n_kinematic_ : int
    dt_ : float
    """

    _PARAM_NAMES = ("history", "alpha", "gain")

    def __init__(self, history: int = 10, alpha: float = 0.0, gain: float = 1.0) -> None:
        self.history = history
        self.alpha = alpha
        self.gain = gain

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **params: Any) -> WienerDecoder:
        """Set hyper-parameters; ``gain`` acts at once, the others at the next fit."""
        unknown = sorted(set(params) - set(self._PARAM_NAMES))
        if unknown:
            raise ValueError(f"invalid parameter(s) {unknown} for WienerDecoder; "
                             f"valid: {list(self._PARAM_NAMES)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"WienerDecoder(history={self.history!r}, alpha={self.alpha!r}, gain={self.gain!r})"

    def _validate(self) -> None:
        h = self.history
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise ValueError(f"history must be an int >= 1, got {h!r}")
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if not np.isfinite(self.gain):
            raise ValueError(f"gain must be finite, got {self.gain!r}")

    def fit(self, Z: ArrayLike, X: ArrayLike, dt: float) -> WienerDecoder:
        """Ridge fit of velocities X (T, k) on the history of features Z (T, N).

        Returns
        -------
        WienerDecoder
            ``self``.
        """
        self._validate()
        Z, X = _check_training_data(Z, X)
        dt = _check_dt(dt)
        pad = Z.mean(axis=0)
        H = history_matrix(Z, int(self.history), pad)
        H = np.hstack([H, np.ones((H.shape[0], 1))])
        w = ridge_solve(H.T @ H, H.T @ X, float(self.alpha))
        self.coef_ = np.ascontiguousarray(w[:-1].T)
        self.intercept_ = w[-1].copy()
        self.pad_ = pad
        self._set_shapes(Z.shape[1], X.shape[1], dt)
        return self

    @classmethod
    def from_params(cls, *, coef: ArrayLike, intercept: ArrayLike, pad: ArrayLike,
                    dt: float = 0.05, **hyper: Any) -> WienerDecoder:
        """Build a ready-to-run decoder from its weights."""
        dec = cls(**hyper)
        dec._validate()
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        pad = np.asarray(pad, dtype=np.float64)
        intercept = np.asarray(intercept, dtype=np.float64)
        if coef.shape != (intercept.shape[0], pad.shape[0] * int(dec.history)):
            raise ValueError(f"coef must be (k, N*history) = ({intercept.shape[0]}, "
                             f"{pad.shape[0] * int(dec.history)}), got {coef.shape}")
        dec.coef_, dec.intercept_, dec.pad_ = coef, intercept, pad
        dec._set_shapes(pad.shape[0], intercept.shape[0], _check_dt(dt))
        return dec

    def _set_shapes(self, n: int, k: int, dt: float) -> None:
        self.n_channels_ = self.n_features_in_ = int(n)
        self.n_velocity_ = self.n_kinematic_ = int(k)
        self.dt_ = float(dt)
        self.reset()

    def _check_fitted(self) -> None:
        if "coef_" not in self.__dict__:
            raise NotFittedError("this WienerDecoder is not fitted yet; call fit()")

    def reset(self) -> WienerDecoder:
        """Fill the history with the training mean; returns ``self``."""
        self._check_fitted()
        self._ring = np.tile(self.pad_, (int(self.history), 1))
        self._head = 0
        return self

    def step(self, z: ArrayLike) -> FloatArray:
        """Decode one bin (N,) and push it into the history; returns (k,) velocity."""
        self._check_fitted()
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (self.n_channels_,):
            raise ValueError(f"z must have shape ({self.n_channels_},), got {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ValueError("z contains NaN or Inf")
        L = int(self.history)
        head = (self._head + 1) % L
        self._ring[head] = z
        self._head = head
        rows = [(head - h) % L for h in range(L)]
        v = self.coef_ @ self._ring[rows].reshape(-1) + self.intercept_
        return v * float(self.gain)

    def predict(self, Z: ArrayLike) -> FloatArray:
        """Decode a block from a reset history (the online state is untouched)."""
        self._check_fitted()
        Z = _check_features(Z, self.n_channels_)
        H = history_matrix(Z, int(self.history), self.pad_)
        return (H @ self.coef_.T + self.intercept_) * float(self.gain)

    def r2_per_dim(self, Z: ArrayLike, X: ArrayLike) -> FloatArray:
        """R² of each decoded velocity dimension."""
        return _r2(X, self.predict(Z))

    def score(self, Z: ArrayLike, X: ArrayLike) -> float:
        """Mean R² over velocity dimensions."""
        return float(np.mean(self.r2_per_dim(Z, X)))

    def save(self, path: str | Path) -> Path:
        """Write to an ``.npz`` at exactly ``path`` (no pickle)."""
        self._check_fitted()
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "bciarm_version": bciarm.__version__, "dt": self.dt_,
                "params": {k: (v.item() if isinstance(v, np.generic) else v)
                           for k, v in self.get_params().items()}}
        path = Path(path)
        with path.open("wb") as fh:
            np.savez(fh, coef=self.coef_, intercept=self.intercept_, pad=self.pad_,
                     meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> WienerDecoder:
        """Read a decoder written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as archive:
            missing = {"coef", "intercept", "pad", "meta"} - set(archive.files)
            if missing:
                raise ValueError(f"{path}: not a WienerDecoder file (missing {sorted(missing)})")
            meta = json.loads(str(archive["meta"]))
            arrays = {k: archive[k] for k in ("coef", "intercept", "pad")}
        if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format {meta.get('format')!r} v{meta.get('format_version')!r} "
                             f"is not {FORMAT_NAME} v{FORMAT_VERSION}")
        return cls.from_params(**arrays, dt=meta["dt"], **meta["params"])

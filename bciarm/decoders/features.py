"""Neural features: the same transform at calibration, offline and online.

Kept separate from the decoders so a fitted decoder and the node that runs it
can never disagree on how counts become features.

:func:`transform_counts` is the stateless count transform. :class:`FeatureTransformer`
is the full, fitted feature stage (scikit-learn transformer contract):

1. **re-binning**: ``bin_factor`` consecutive input bins are summed into one;
2. **channel selection**: dead channels (mean rate below ``min_rate_hz``) and
   noisy ones (variance far above the population's, or almost all of the
   counts in a few bins) are found at :meth:`~FeatureTransformer.fit`,
   excluded, and listed in :attr:`~FeatureTransformer.report_`;
3. **count transform** (``count_transform``): ``"none"`` or ``"sqrt"``;
4. **z-scoring** with the calibration mean and standard deviation;
5. **lag and history**: the feature vector of bin t stacks bins
   ``t - lag, t - lag - 1, ..., t - lag - history + 1`` (causal).

:meth:`~FeatureTransformer.transform` (a block) and
:meth:`~FeatureTransformer.step` (one input bin, online) run the same
arithmetic: after :meth:`~FeatureTransformer.reset`, the non-``None`` outputs of
``step`` stacked equal ``transform`` of the same bins. History slots before the
first bin hold the calibration mean (zero after z-scoring).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["FeatureTransformer", "Transform", "transform_counts"]

Transform = Literal["none", "sqrt"]
FloatArray = NDArray[np.float64]

FORMAT_NAME = "bciarm.FeatureTransformer"
FORMAT_VERSION = 1


def transform_counts(counts: np.ndarray, transform: Transform = "none") -> np.ndarray:
    """Counts per bin -> features (float64).

    ``"sqrt"`` stabilises Poisson variance (variance of sqrt(count) is about
    1/4 whatever the rate), which suits the Kalman filter's Gaussian noise.
    Works on one bin (N,) or many (T, N).
    """
    z = np.asarray(counts, dtype=np.float64)
    if transform == "sqrt":
        return np.sqrt(z)
    if transform == "none":
        return z
    raise ValueError(f"unknown transform {transform!r}; use 'none' or 'sqrt'")


class FeatureTransformer:
    """Counts -> decoder features, fitted at calibration and used identically online.

    Parameters
    ----------
    bin_factor : int
        Input bins summed into one feature bin (1: keep the input bin width).
    count_transform : {"none", "sqrt"}
        Count transform, applied after re-binning.
    zscore : bool
        Subtract the calibration mean and divide by the standard deviation.
    lag : int
        Feature bins between a neural bin and the kinematics it is paired
        with (the features of bin t start at bin ``t - lag``).
    history : int
        Number of feature bins stacked (1: the lagged bin only).
    min_rate_hz : float
        Channels whose mean rate at calibration is below this are dead.
    max_var_ratio : float
        Channels whose (transformed) variance exceeds this multiple of the
        median channel variance are noisy.
    max_burst_fraction : float
        Channels with more than this fraction of their counts in the top 1 %
        of bins (artefact bursts) are noisy.
    exclude : bool
        Drop dead and noisy channels (they are reported either way).

    Attributes
    ----------
    keep_ : (N_in,) ndarray of bool
        Channels kept.
    mean_, scale_ : (N_kept,) ndarray
        Calibration mean and standard deviation of the transformed counts
        (``scale_`` is 1 without z-scoring, ``mean_`` is used as history padding).
    report_ : dict
        ``{"n_channels_in", "n_channels_kept", "dead": [...], "noisy": [...]}``
        (channel indices of the input).
    n_channels_in_, n_features_out_ : int
    dt_in_, dt_ : float
        Input and feature bin widths, s.
    """

    _PARAM_NAMES = ("bin_factor", "count_transform", "zscore", "lag", "history", "min_rate_hz",
                    "max_var_ratio", "max_burst_fraction", "exclude")

    def __init__(self, bin_factor: int = 1, count_transform: Transform = "none", zscore: bool = False,
                 lag: int = 0, history: int = 1, min_rate_hz: float = 0.0,
                 max_var_ratio: float = np.inf, max_burst_fraction: float = 1.0,
                 exclude: bool = True) -> None:
        self.bin_factor = bin_factor
        self.count_transform = count_transform
        self.zscore = zscore
        self.lag = lag
        self.history = history
        self.min_rate_hz = min_rate_hz
        self.max_var_ratio = max_var_ratio
        self.max_burst_fraction = max_burst_fraction
        self.exclude = exclude

    # -- parameters -------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **params: Any) -> FeatureTransformer:
        """Set hyper-parameters (effective at the next :meth:`fit`); returns ``self``."""
        unknown = sorted(set(params) - set(self._PARAM_NAMES))
        if unknown:
            raise ValueError(f"invalid parameter(s) {unknown} for FeatureTransformer; "
                             f"valid: {list(self._PARAM_NAMES)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _validate(self) -> None:
        for name in ("bin_factor", "history"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if isinstance(self.lag, bool) or not isinstance(self.lag, (int, np.integer)) or self.lag < 0:
            raise ValueError(f"lag must be an int >= 0, got {self.lag!r}")
        if self.count_transform not in ("none", "sqrt"):
            raise ValueError(f"unknown transform {self.count_transform!r}; use 'none' or 'sqrt'")
        if not self.min_rate_hz >= 0 or not self.max_var_ratio > 0 or not 0 < self.max_burst_fraction <= 1:
            raise ValueError("min_rate_hz must be >= 0, max_var_ratio > 0, "
                             "0 < max_burst_fraction <= 1")

    # -- fitting ------------------------------------------------------------------

    def fit(self, counts: ArrayLike, dt: float) -> FeatureTransformer:
        """Find dead/noisy channels and the z-scoring statistics of a calibration block.

        Parameters
        ----------
        counts : (T, N) array_like
            Spike counts (or any non-negative per-bin activity), finite.
        dt : float
            Input bin width, s.

        Returns
        -------
        FeatureTransformer
            ``self``.
        """
        self._validate()
        C = _counts_2d(counts)
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        rebinned = _rebin(C, int(self.bin_factor))
        if rebinned.shape[0] < 2:
            raise ValueError(f"need at least 2 feature bins to fit, got {rebinned.shape[0]}")
        dt_out = float(dt) * int(self.bin_factor)
        rate = rebinned.mean(axis=0) / dt_out
        dead = rate < self.min_rate_hz
        if self.min_rate_hz == 0:
            dead |= np.all(rebinned == rebinned[0], axis=0)  # constant: carries nothing
        Zt = transform_counts(rebinned, self.count_transform)
        var = Zt.var(axis=0)
        alive_var = var[~dead]
        med = float(np.median(alive_var)) if alive_var.size else 0.0
        noisy = (~dead) & (var > self.max_var_ratio * med) if med > 0 else np.zeros_like(dead)
        if self.max_burst_fraction < 1:
            top = max(1, int(np.ceil(0.01 * rebinned.shape[0])))
            ranked = np.sort(rebinned, axis=0)[-top:].sum(axis=0)
            total = rebinned.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                burst = np.where(total > 0, ranked / np.where(total > 0, total, 1), 0.0)
            noisy |= (~dead) & (burst > self.max_burst_fraction)
        keep = ~(dead | noisy) if self.exclude else np.ones(C.shape[1], dtype=bool)
        if not keep.any():
            raise ValueError("every channel is dead or noisy at calibration; nothing to decode")
        Zk = Zt[:, keep]
        self.keep_ = keep
        self.mean_ = Zk.mean(axis=0)
        sd = Zk.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0) if self.zscore else np.ones_like(sd)
        self.n_channels_in_ = int(C.shape[1])
        self.n_features_out_ = int(keep.sum()) * int(self.history)
        self.dt_in_ = float(dt)
        self.dt_ = dt_out
        self.report_ = {
            "n_channels_in": int(C.shape[1]),
            "n_channels_kept": int(keep.sum()),
            "dead": np.flatnonzero(dead).tolist(),
            "noisy": np.flatnonzero(noisy).tolist(),
            "excluded": np.flatnonzero(~keep).tolist(),
        }
        self.reset()
        return self

    def fit_transform(self, counts: ArrayLike, dt: float) -> FloatArray:
        """:meth:`fit` then :meth:`transform` of the same counts."""
        return self.fit(counts, dt).transform(counts)

    # -- batch -------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if "keep_" not in self.__dict__:
            raise ValueError("this FeatureTransformer is not fitted yet; call fit()")

    def _normalise(self, rebinned: FloatArray) -> FloatArray:
        Zt = transform_counts(rebinned[..., self.keep_], self.count_transform)
        if self.zscore:
            return (Zt - self.mean_) / self.scale_
        return Zt

    def _pad(self) -> FloatArray:
        return np.zeros_like(self.mean_) if self.zscore else self.mean_

    def transform(self, counts: ArrayLike) -> FloatArray:
        """Features of a block of input bins, from a reset history.

        Parameters
        ----------
        counts : (T, N_in) array_like

        Returns
        -------
        (T // bin_factor, n_features_out_) ndarray
            Row j: feature bin j (input bins ``j*f .. j*f+f-1``), followed by
            its history; a trailing partial bin is dropped.
        """
        self._check_fitted()
        C = _counts_2d(counts)
        if C.shape[1] != self.n_channels_in_:
            raise ValueError(f"counts must have {self.n_channels_in_} channels, got {C.shape[1]}")
        Z = self._normalise(_rebin(C, int(self.bin_factor)))
        T, n = Z.shape
        depth = int(self.lag) + int(self.history)
        padded = np.vstack([np.tile(self._pad(), (depth - 1, 1)), Z])
        out = np.empty((T, n * int(self.history)))
        for h in range(int(self.history)):
            shift = int(self.lag) + h
            out[:, h * n:(h + 1) * n] = padded[depth - 1 - shift: depth - 1 - shift + T]
        return out

    # -- online --------------------------------------------------------------------

    def reset(self) -> FeatureTransformer:
        """Clear the re-binning accumulator and the history; returns ``self``."""
        self._check_fitted()
        depth = int(self.lag) + int(self.history)
        self._ring = np.tile(self._pad(), (depth, 1))
        self._head = 0
        self._acc = np.zeros(self.n_channels_in_)
        self._acc_n = 0
        return self

    def step(self, counts: ArrayLike) -> FloatArray | None:
        """Feed one input bin; the feature vector when a feature bin completes, else None."""
        c = np.asarray(counts, dtype=np.float64)
        if c.shape != (self.n_channels_in_,):
            raise ValueError(f"counts must have shape ({self.n_channels_in_},), got {c.shape}")
        self._acc += c
        self._acc_n += 1
        if self._acc_n < int(self.bin_factor):
            return None
        z = self._normalise(self._acc)
        self._acc = np.zeros(self.n_channels_in_)
        self._acc_n = 0
        depth = self._ring.shape[0]
        self._head = (self._head + 1) % depth
        self._ring[self._head] = z
        rows = [(self._head - int(self.lag) - h) % depth for h in range(int(self.history))]
        return self._ring[rows].reshape(-1)

    # -- persistence -------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as plain arrays plus a JSON ``meta`` string (no pickle)."""
        self._check_fitted()
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "params": {k: _jsonable(v) for k, v in self.get_params().items()},
                "dt_in": self.dt_in_, "report": self.report_}
        return {"keep": self.keep_, "mean": self.mean_, "scale": self.scale_,
                "meta": np.array(json.dumps(meta))}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureTransformer:
        """Inverse of :meth:`to_arrays`."""
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT_NAME} v{FORMAT_VERSION} record: {meta.get('format')!r} "
                             f"v{meta.get('format_version')!r}")
        params = dict(meta["params"])
        if params["max_var_ratio"] is None:
            params["max_var_ratio"] = np.inf
        ft = cls(**params)
        ft._validate()
        ft.keep_ = np.asarray(arrays["keep"], dtype=bool)
        ft.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        ft.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        ft.n_channels_in_ = int(ft.keep_.shape[0])
        ft.n_features_out_ = int(ft.keep_.sum()) * int(ft.history)
        ft.dt_in_ = float(meta["dt_in"])
        ft.dt_ = ft.dt_in_ * int(ft.bin_factor)
        ft.report_ = meta["report"]
        return ft.reset()

    def save(self, path: str | Path) -> Path:
        """Write to an ``.npz`` file at exactly ``path``."""
        path = Path(path)
        with path.open("wb") as fh:
            np.savez(fh, **self.to_arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureTransformer:
        """Read a transformer written by :meth:`save`, reset."""
        with np.load(Path(path), allow_pickle=False) as archive:
            return cls.from_arrays({k: archive[k] for k in archive.files})


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no Infinity; only max_var_ratio may be inf
    return value


def _counts_2d(counts: ArrayLike) -> FloatArray:
    C = np.asarray(counts, dtype=np.float64)
    if C.ndim != 2 or C.shape[1] < 1:
        raise ValueError(f"counts must be a (T, N) array, got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError("counts contain NaN or Inf")
    return C


def _rebin(C: FloatArray, factor: int) -> FloatArray:
    if factor == 1:
        return C
    T = (C.shape[0] // factor) * factor
    return C[:T].reshape(-1, factor, C.shape[1]).sum(axis=1)

"""Offline evaluation of decoders on a recording (``bciarm decode``).

Protocol: the first ``train_fraction`` of the bins train, the rest test, no
shuffling. Every hyper-parameter (count transform, lag, history, ridge
penalty, state set) is chosen by blocked K-fold cross-validation inside the
training part; the best bciarm decoder is chosen by its cross-validated R²,
also inside the training part. The test part is used once, to score the chosen
models. Each candidate is a :class:`~bciarm.decoders.features.FeatureTransformer`
(fitted on the training part only) followed by a registered decoder with an
online ``step``, so what is scored here is what runs online.

Two references are scored in the same run: neural-decoding's Kalman filter
(the ``bench`` extra) and a causal least-squares Wiener filter on 10 bins.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bciarm.decoders.datasets import Recording
from bciarm.decoders.features import FeatureTransformer
from bciarm.decoders.kalman import KalmanDecoder, r2_per_dim
from bciarm.decoders.wiener import WienerDecoder, history_matrix, ridge_solve

__all__ = ["Candidate", "DEFAULT_GRIDS", "evaluate", "corr_per_dim", "blocked_folds"]


@dataclass(frozen=True, eq=False)  # hashed by identity (dict fields)
class Candidate:
    """A feature stage plus a decoder, by hyper-parameters."""

    decoder: str
    features: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        both = {**self.features, **self.params}
        return f"{self.decoder}(" + ", ".join(f"{k}={v}" for k, v in both.items()) + ")"


def _kalman_grid() -> list[Candidate]:
    # q_ridge (diagonal loading of Q) is the Kalman filter's regulariser: with
    # history features a channel nearly silent in the fitting bins otherwise gets
    # an enormous weight (cross-validated R² collapses below 0 on some folds).
    out = []
    for transform, (history, lag), pos, q_ridge in itertools.product(
            ("none", "sqrt"), ((1, 0), (1, 1), (5, 0)), (False, True), (0.1, 1.0)):
        out.append(Candidate("kalman", {"count_transform": transform, "zscore": True, "lag": lag,
                                        "history": history},
                             {"include_position": pos, "q_ridge": q_ridge, "mode": "steady"}))
    return out


def _wiener_grid() -> list[Candidate]:
    out = []
    for transform, history, alpha in itertools.product(
            ("none", "sqrt"), (5, 10), (1e3, 3e3, 1e4, 3e4)):
        out.append(Candidate("wiener", {"count_transform": transform, "zscore": True, "lag": 0,
                                        "history": 1},
                             {"history": history, "alpha": alpha}))
    return out


#: Hyper-parameter grids searched by cross-validation, per decoder name.
DEFAULT_GRIDS = {"kalman": _kalman_grid, "wiener": _wiener_grid}


def corr_per_dim(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column (0 where either is constant)."""
    yt = y_true - y_true.mean(axis=0)
    yp = y_pred - y_pred.mean(axis=0)
    den = np.sqrt((yt ** 2).sum(axis=0) * (yp ** 2).sum(axis=0))
    return np.where(den > 0, (yt * yp).sum(axis=0) / np.where(den > 0, den, 1), 0.0)


def blocked_folds(n: int, k: int) -> list[np.ndarray]:
    """``k`` contiguous, nearly equal index blocks covering ``range(n)``."""
    return np.array_split(np.arange(n), k)


def _make_decoder(c: Candidate) -> Any:
    if c.decoder == "kalman":
        return KalmanDecoder(**c.params)
    if c.decoder == "wiener":
        return WienerDecoder(**c.params)
    raise ValueError(f"no evaluation grid for decoder {c.decoder!r}; known: {sorted(DEFAULT_GRIDS)}")


def _cv_generic(Z: np.ndarray, X: np.ndarray, dt: float, c: Candidate,
                folds: list[np.ndarray]) -> float:
    scores = []
    for f in folds:
        train = np.setdiff1d(np.arange(len(Z)), f)
        dec = _make_decoder(c).fit(Z[train], X[train], dt)
        # The filter runs causally over the whole training part (as it runs over
        # train + test in the final scoring), so an integrated position state
        # is not restarted at 0 at the start of the fold; only fold rows are scored.
        pred = dec.predict(Z)[f][:, -X.shape[1]:]  # velocity (after position, if any)
        scores.append(float(np.mean(r2_per_dim(X[f], pred))))
    return float(np.mean(scores))


def _cv_wiener_family(Z: np.ndarray, X: np.ndarray, cands: list[Candidate],
                      folds: list[np.ndarray]) -> dict[Candidate, float]:
    """CV of ridge Wiener filters sharing features: one Gram matrix, sub-blocks per history.

    Each fold's training Gram is the whole Gram minus the fold's, and a
    shorter history is a leading sub-block of the longest (lag-major columns).
    The history padding is the training mean, as in :meth:`WienerDecoder.fit`.
    """
    n = Z.shape[1]
    L = max(int(c.params["history"]) for c in cands)
    H = np.hstack([history_matrix(Z, L, Z.mean(axis=0)), np.ones((len(Z), 1))])
    G = H.T @ H
    B = H.T @ X
    out: dict[Candidate, list[float]] = {c: [] for c in cands}
    for f in folds:
        Hf = H[f]
        Gt, Bt = G - Hf.T @ Hf, B - Hf.T @ X[f]
        for c in cands:
            h = int(c.params["history"])
            cols = np.r_[np.arange(n * h), H.shape[1] - 1]
            w = ridge_solve(Gt[np.ix_(cols, cols)], Bt[cols], float(c.params["alpha"]))
            out[c].append(float(np.mean(r2_per_dim(X[f], Hf[:, cols] @ w))))
    return {c: float(np.mean(v)) for c, v in out.items()}


def _reference_wiener(train: tuple, test: tuple) -> np.ndarray:
    """Causal least-squares Wiener filter on 10 bins of raw counts (no tuning)."""
    dec = WienerDecoder(history=10, alpha=0.0).fit(train[0], train[1], 0.05)
    return dec.predict(test[0])


def reference_kf_class() -> Any:
    """neural-decoding's ``KalmanFilterDecoder`` (benchmark-only ``bench`` extra).

    Raises
    ------
    ModuleNotFoundError
        Naming the extra, if neural-decoding is not installed.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints warnings on import
            from Neural_Decoding.decoders import KalmanFilterDecoder
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the reference Kalman filter needs neural-decoding, a benchmark-only extra: "
            "pip install 'bciarm[bench]'", name=exc.name) from None
    return KalmanFilterDecoder


def _reference_kf(rec: Recording, n_train: int) -> np.ndarray:
    """neural-decoding's Kalman filter, its documented usage: centred counts and kinematics.

    Its state is [position, velocity] when the recording has positions, else
    velocity; its ``predict`` takes the true first test state to initialise.
    Units silent in the training part are dropped (as its examples do).
    """
    cls = reference_kf_class()
    live = rec.counts[:n_train].std(axis=0) > 0  # a silent unit makes its Q singular
    Zc = rec.counts[:, live] - rec.counts[:n_train, live].mean(axis=0)
    k = rec.velocity.shape[1]
    Y = rec.velocity if rec.position is None else np.hstack([rec.position, rec.velocity])
    Ym = Y[:n_train].mean(axis=0)
    model = cls(C=1)
    with warnings.catch_warnings():  # np.matrix throughout
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        model.fit(Zc[:n_train], Y[:n_train] - Ym)
        pred = np.asarray(model.predict(Zc[n_train:], Y[n_train:] - Ym)) + Ym
    return pred[:, -k:]


def evaluate(rec: Recording, decoders: list[str] | None = None, train_fraction: float = 0.8,
             n_folds: int = 5, references: bool = True,
             grids: dict[str, list[Candidate]] | None = None) -> dict[str, Any]:
    """Cross-validate, fit on the training part and score on the test part.

    Parameters
    ----------
    rec : Recording
    decoders : list of str, optional
        Decoder names to evaluate (default: every one with a grid).
    train_fraction : float
    n_folds : int
        Blocked folds of the training part.
    references : bool
        Also score neural-decoding's KF and the 10-bin Wiener filter.
    grids : dict, optional
        Override the candidate lists per decoder name.

    Returns
    -------
    dict
        JSON-ready: ``kalman_mean_r2``, ``best_mean_r2``, ``best_decoder``,
        ``reference_kf_mean_r2``, ``reference_wiener_mean_r2``, the per-dimension
        lists ``*_r2`` / ``*_corr``, and per-decoder details.
    """
    t_start = time.perf_counter()
    names = decoders or sorted(DEFAULT_GRIDS)
    T = rec.counts.shape[0]
    n_train = int(train_fraction * T)
    if n_train < 50 or T - n_train < 10:
        raise ValueError(f"too few bins ({T}) for a {train_fraction:.0%} train / test split")
    X_train, X_test = rec.velocity[:n_train], rec.velocity[n_train:]
    folds = blocked_folds(n_train, n_folds)
    result: dict[str, Any] = {
        "data": rec.source, "n_bins": T, "n_train": n_train, "n_test": T - n_train,
        "n_channels": int(rec.counts.shape[1]), "dt": rec.dt, "decoders": {},
    }
    for name in names:
        cands = (grids or {}).get(name) or DEFAULT_GRIDS[name]()
        scores: dict[Candidate, float] = {}
        by_features: dict[tuple, list[Candidate]] = {}
        for c in cands:
            by_features.setdefault(tuple(sorted(c.features.items())), []).append(c)
        channel_report = None
        for feats, group in by_features.items():
            ft = FeatureTransformer(**dict(feats), min_rate_hz=0.0).fit(rec.counts[:n_train], rec.dt)
            channel_report = ft.report_
            Z = ft.transform(rec.counts[:n_train])
            if name == "wiener":
                scores.update(_cv_wiener_family(Z, X_train, group, folds))
            else:
                for c in group:
                    scores[c] = _cv_generic(Z, X_train, ft.dt_, c, folds)
        chosen = max(scores, key=scores.get)  # type: ignore[arg-type]
        ft = FeatureTransformer(**chosen.features).fit(rec.counts[:n_train], rec.dt)
        dec = _make_decoder(chosen).fit(ft.transform(rec.counts[:n_train]), X_train, ft.dt_)
        pred = dec.predict(ft.transform(rec.counts))[n_train:]  # causal: history runs on
        pred = pred[:, -X_test.shape[1]:]
        r2 = r2_per_dim(X_test, pred)
        result["decoders"][name] = {
            "chosen": chosen.label(), "features": chosen.features, "params": chosen.params,
            "cv_mean_r2": scores[chosen], "candidates": len(scores),
            "r2": r2.tolist(), "corr": corr_per_dim(X_test, pred).tolist(),
            "mean_r2": float(r2.mean()), "channels": channel_report,
        }
    best = max(result["decoders"], key=lambda n: result["decoders"][n]["cv_mean_r2"])
    kal = result["decoders"].get("kalman")
    result.update({
        "kalman_mean_r2": kal["mean_r2"] if kal else None,
        "kalman_r2": kal["r2"] if kal else None,
        "kalman_corr": kal["corr"] if kal else None,
        "best_decoder": best,
        "best_mean_r2": result["decoders"][best]["mean_r2"],
        "best_r2": result["decoders"][best]["r2"],
        "best_corr": result["decoders"][best]["corr"],
    })
    if references:
        ref_w = _reference_wiener((rec.counts[:n_train], X_train), (rec.counts, None))[n_train:]
        ref_k = _reference_kf(rec, n_train)
        for key, pred in (("reference_wiener", ref_w), ("reference_kf", ref_k)):
            r2 = r2_per_dim(X_test, pred)
            result[f"{key}_mean_r2"] = float(r2.mean())
            result[f"{key}_r2"] = r2.tolist()
            result[f"{key}_corr"] = corr_per_dim(X_test, pred).tolist()
    else:
        for key in ("reference_wiener", "reference_kf"):
            result.update({f"{key}_mean_r2": None, f"{key}_r2": None, f"{key}_corr": None})
    result["wall_s"] = time.perf_counter() - t_start
    return result

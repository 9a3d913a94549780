"""Discrete grasp/release ("click") decoding: a shrinkage LDA and a dwell/hysteresis latch.

Point-and-click BCIs (Kim et al. 2011, Neural Syst Rehabil Eng 19:193;
Jarosiewicz et al. 2015) classify every neural bin as "click" or "move" with
linear discriminant analysis and act only on a classification that persists.
Here:

:class:`LDAClassifier`
    Two-or-more-class LDA with a shared, shrunk covariance, following the
    scikit-learn estimator contract (hyper-parameters in ``__init__``,
    ``fit(Z, y)`` returns self, learned attributes end in ``_``,
    ``predict_proba`` / ``predict`` / ``decision_function``).  With
    ``shrinkage=0`` it is exactly the Gaussian-class Bayes classifier with a
    pooled covariance (``tests/decoders/test_click.py`` checks it against
    :func:`scipy.stats.multivariate_normal` posteriors).  Shrinkage
    (Ledoit & Wolf's target ``mean(diag) * I``) keeps a covariance of a few
    hundred channels well conditioned with minutes of data.

:class:`ClickDecoder`
    Runs the classifier on each bin and latches the hand state with
    **hysteresis** (close when P(grasp) >= ``p_close``, open only when
    P(grasp) <= ``p_open``, with ``p_open < p_close``) and **dwell** (the
    condition must hold ``close_dwell_s`` / ``open_dwell_s`` in a row), so a
    few misclassified bins never drop an object: the release dwell is
    longer than the grasp dwell on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from bciarm.bus.messages import GRASP_CLOSE, GRASP_RELEASE

__all__ = ["ClickDecoder", "LDAClassifier"]


class LDAClassifier:
    """Linear discriminant analysis with a shrunk pooled covariance.

    Parameters
    ----------
    shrinkage : float
        In [0, 1]: covariance ``(1 - s) * S + s * mean(diag S) * I``.
    priors : array_like or None
        Class priors; None uses the class frequencies of the training data.
    """

    _PARAM_NAMES = ("shrinkage", "priors")

    def __init__(self, shrinkage: float = 0.1, priors: ArrayLike | None = None) -> None:
        self.shrinkage = shrinkage
        self.priors = priors

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAM_NAMES}

    def set_params(self, **params: Any) -> LDAClassifier:
        for k, v in params.items():
            if k not in self._PARAM_NAMES:
                raise ValueError(f"unknown parameter {k!r}; valid: {list(self._PARAM_NAMES)}")
            setattr(self, k, v)
        return self

    def fit(self, Z: ArrayLike, y: ArrayLike) -> LDAClassifier:
        """Fit class means and the shared covariance.

        Parameters
        ----------
        Z : (T, N) array_like
            Features.
        y : (T,) array_like
            Class labels (any sortable values; at least two classes).

        Raises
        ------
        ValueError
            Non-finite input, mismatched lengths, fewer than two classes, or
            a bad shrinkage.
        """
        Z = np.asarray(Z, dtype=float)
        y = np.asarray(y).reshape(-1)
        if Z.ndim != 2 or Z.shape[0] != y.shape[0] or Z.shape[0] < 2:
            raise ValueError(f"Z must be (T, N) and y (T,), got {Z.shape} and {y.shape}")
        if not np.all(np.isfinite(Z)):
            raise ValueError("Z contains NaN or Inf")
        if not 0.0 <= float(self.shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage!r}")
        classes, yi = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"need at least two classes, got {classes.tolist()}")
        k = classes.size
        means = np.vstack([Z[yi == c].mean(axis=0) for c in range(k)])
        centred = Z - means[yi]
        cov = centred.T @ centred / max(Z.shape[0] - k, 1)
        s = float(self.shrinkage)
        mu = float(np.trace(cov)) / cov.shape[0]
        cov = (1.0 - s) * cov + s * mu * np.eye(cov.shape[0])
        if self.priors is None:
            priors = np.bincount(yi, minlength=k) / yi.size
        else:
            priors = np.asarray(self.priors, dtype=float).reshape(-1)
            if priors.shape != (k,) or np.any(priors <= 0) or not np.isclose(priors.sum(), 1):
                raise ValueError(f"priors must be {k} positive numbers summing to 1")
        # Discriminant of class c: z' S^-1 mu_c - mu_c' S^-1 mu_c / 2 + log prior_c.
        coef = np.linalg.solve(cov, means.T).T          # (k, N) = mu_c' S^-1
        self.classes_ = classes
        self.means_ = means
        self.covariance_ = cov
        self.priors_ = priors
        self.coef_ = coef
        self.intercept_ = -0.5 * np.einsum("kn,kn->k", coef, means) + np.log(priors)
        self.n_features_in_ = Z.shape[1]
        return self

    def _check(self, Z: ArrayLike) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise ValueError("LDAClassifier is not fitted; call fit first")
        Z = np.asarray(Z, dtype=float)
        one = Z.ndim == 1
        Z2 = Z.reshape(1, -1) if one else Z
        if Z2.ndim != 2 or Z2.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got shape {Z.shape}")
        if not np.all(np.isfinite(Z2)):
            raise ValueError("features contain NaN or Inf")
        return Z2

    def decision_function(self, Z: ArrayLike) -> np.ndarray:
        """Class log-posteriors up to a per-row constant, shape (T, k)."""
        return self._check(Z) @ self.coef_.T + self.intercept_

    def predict_proba(self, Z: ArrayLike) -> np.ndarray:
        """Class posteriors, shape (T, k) (a 1-D ``Z`` counts as one row)."""
        d = self.decision_function(Z)
        d -= d.max(axis=1, keepdims=True)
        e = np.exp(d)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, Z: ArrayLike) -> np.ndarray:
        """Most probable class of each row."""
        return self.classes_[np.argmax(self.decision_function(Z), axis=1)]

    def score(self, Z: ArrayLike, y: ArrayLike) -> float:
        """Accuracy."""
        return float(np.mean(self.predict(Z) == np.asarray(y).reshape(-1)))


class ClickDecoder:
    """Grasp/release latch on top of a two-class :class:`LDAClassifier` (0 open, 1 grasp).

    Parameters
    ----------
    shrinkage : float
        Of the LDA.
    p_close, p_open : float
        Hysteresis thresholds on P(grasp): close at or above ``p_close``,
        open at or below ``p_open``.
    close_dwell_s, open_dwell_s : float
        How long the condition must hold before the state changes, s.
    """

    _PARAM_NAMES = ("shrinkage", "p_close", "p_open", "close_dwell_s", "open_dwell_s")

    def __init__(self, shrinkage: float = 0.1, p_close: float = 0.8, p_open: float = 0.2,
                 close_dwell_s: float = 0.15, open_dwell_s: float = 0.25) -> None:
        self.shrinkage = shrinkage
        self.p_close = p_close
        self.p_open = p_open
        self.close_dwell_s = close_dwell_s
        self.open_dwell_s = open_dwell_s
        self.closed = False
        self._run = 0

    def _validate(self) -> None:
        if not 0.0 < self.p_open < self.p_close < 1.0:
            raise ValueError(f"need 0 < p_open < p_close < 1 (hysteresis), got p_open="
                             f"{self.p_open}, p_close={self.p_close}")
        if self.close_dwell_s < 0 or self.open_dwell_s < 0:
            raise ValueError("dwell times must be >= 0")

    def fit(self, Z: ArrayLike, y: ArrayLike, dt: float) -> ClickDecoder:
        """Fit the LDA on bins ``Z`` labelled ``y`` (1 grasp intended, 0 not); ``dt`` bin width."""
        self._validate()
        y = (np.asarray(y).reshape(-1) > 0.5).astype(int)
        self.lda_ = LDAClassifier(shrinkage=self.shrinkage).fit(Z, y)
        if list(self.lda_.classes_) != [0, 1]:
            raise ValueError("click calibration needs bins with and without grasp intent")
        self.dt_ = float(dt)
        self.reset()
        return self

    def reset(self) -> ClickDecoder:
        """Open hand, no dwell in progress."""
        self.closed = False
        self._run = 0
        return self

    def probability(self, z: ArrayLike) -> float:
        """P(grasp) of one bin."""
        return float(self.lda_.predict_proba(z)[0, 1])

    def step(self, z: ArrayLike) -> int:
        """Classify one bin and return the latched command (GRASP_CLOSE or GRASP_RELEASE)."""
        p = self.probability(z)
        if self.closed:
            need = max(1, round(self.open_dwell_s / self.dt_))
            self._run = self._run + 1 if p <= self.p_open else 0
        else:
            need = max(1, round(self.close_dwell_s / self.dt_))
            self._run = self._run + 1 if p >= self.p_close else 0
        if self._run >= need:
            self.closed = not self.closed
            self._run = 0
        return GRASP_CLOSE if self.closed else GRASP_RELEASE

    def save(self, path: str | Path) -> Path:
        """Write the fitted decoder as ``.npz`` (arrays + JSON hyper-parameters; no pickle)."""
        path = Path(path)
        lda = self.lda_
        np.savez(path, coef=lda.coef_, intercept=lda.intercept_, classes=lda.classes_,
                 means=lda.means_, priors=lda.priors_,
                 meta=np.array(json.dumps({**{k: getattr(self, k) for k in self._PARAM_NAMES},
                                           "dt": self.dt_})))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ClickDecoder:
        """Read a decoder written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            dt = meta.pop("dt")
            dec = cls(**meta)
            lda = LDAClassifier(shrinkage=dec.shrinkage)
            lda.coef_ = f["coef"]
            lda.intercept_ = f["intercept"]
            lda.classes_ = f["classes"]
            lda.means_ = f["means"]
            lda.priors_ = f["priors"]
            lda.n_features_in_ = lda.coef_.shape[1]
        dec.lda_ = lda
        dec.dt_ = float(dt)
        return dec.reset()

"""Contract checks every registered decoder class must pass.

A decoder follows the scikit-learn estimator contract plus an online interface:

* ``__init__`` takes hyper-parameters only (all with defaults) and stores them
  unchanged as attributes; ``get_params()`` / ``set_params(**p)`` (returning
  ``self``, rejecting unknown names with ``ValueError``);
* ``fit(Z, X, dt)`` with Z (T, N) features, X (T, k) velocities, dt the bin width
  in seconds; returns ``self`` and sets learned attributes ending in ``_``;
  non-finite inputs raise ``ValueError``;
* ``step(z)`` decodes one bin (N,) into a new finite float64 vector whose last k
  entries are velocity, ``reset()`` restarts the filter, and ``predict(Z)``
  returns the (T, n_out) stack of what ``step`` gives after ``reset()``;
* ``save(path)`` / ``cls.load(path)`` round-trip the fitted decoder.

:func:`check_decoder` runs all of it on synthetic data and raises
``AssertionError`` with a plain message at the first violation.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_decoder"]

# predict(Z) must reproduce a loop of step(z) to this absolute tolerance
# (relative to the output scale when that exceeds 1).
_STEP_TOLERANCE = 1e-12


def check_decoder(decoder_cls: type, rng_seed: int = 0) -> None:
    """Check that ``decoder_cls`` honours the decoder contract.

    Parameters
    ----------
    decoder_cls : type
        The decoder class (not an instance).
    rng_seed : int
        Seed of the synthetic data.

    Raises
    ------
    AssertionError
        Describing the first contract violation found.
    """
    rng = np.random.default_rng(rng_seed)
    Z, X, dt = _synthetic_session(rng)
    checks: list[Callable[[type, np.ndarray, np.ndarray, float], None]] = [
        _check_constructible,
        _check_params_round_trip,
        _check_fit,
        _check_step,
        _check_predict_equals_steps,
        _check_save_load,
        _check_rejects_non_finite,
    ]
    for check in checks:
        check(decoder_cls, Z, X, dt)


def _fail(message: str) -> None:
    # Explicit raise rather than `assert`: the checks must survive python -O.
    raise AssertionError(message)


def _synthetic_session(
    rng: np.random.Generator, T: int = 1500, n_channels: int = 24, k: int = 2
) -> tuple[np.ndarray, np.ndarray, float]:
    """Smooth 2-D velocities and linearly tuned, noisy count-like features."""
    dt = 0.05
    X = np.zeros((T, k))
    for t in range(1, T):
        X[t] = 0.92 * X[t - 1] + rng.normal(0.0, 0.02, k)
    tuning = rng.normal(0.0, 40.0, (k, n_channels))
    baseline = rng.uniform(2.0, 10.0, n_channels)
    Z = baseline + X @ tuning + rng.normal(0.0, 1.0, (T, n_channels))
    return Z, X, dt


def _public_learned(est: Any) -> list[str]:
    return sorted(a for a in vars(est) if a.endswith("_") and not a.startswith("_"))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return type(a) is type(b) and bool(a == b)


def _fitted(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> Any:
    return decoder_cls().fit(Z, X, dt)


def _check_constructible(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> None:
    name = decoder_cls.__name__
    try:
        est = decoder_cls()
    except Exception as exc:  # noqa: BLE001 - report whatever construction raised
        _fail(f"{name}() with default hyper-parameters raised {type(exc).__name__}: {exc}")
    params = est.get_params()
    if not isinstance(params, dict):
        _fail(f"{name}.get_params() must return a dict, got {type(params).__name__}")
    for key, value in params.items():
        if not hasattr(est, key) or not _same(getattr(est, key), value):
            _fail(f"{name}: hyper-parameter {key!r} is not stored unchanged as an attribute")
    learned = _public_learned(est)
    if learned:
        _fail(f"{name}.__init__ must not set learned attributes, found {learned}")


def _check_params_round_trip(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> None:
    name = decoder_cls.__name__
    params = decoder_cls().get_params()
    clone = decoder_cls(**params)
    if set(clone.get_params()) != set(params) or not all(
        _same(clone.get_params()[k], v) for k, v in params.items()
    ):
        _fail(f"{name}(**get_params()).get_params() differs from the original parameters")
    est = decoder_cls()
    if est.set_params(**params) is not est:
        _fail(f"{name}.set_params() must return self")
    for key, value in params.items():
        est.set_params(**{key: value})
        if not _same(est.get_params()[key], value):
            _fail(f"{name}.set_params({key}=...) did not round-trip through get_params()")
    try:
        est.set_params(not_a_parameter_of_any_decoder=1)
    except ValueError:
        pass
    else:
        _fail(f"{name}.set_params() accepted an unknown parameter name (must raise ValueError)")


def _check_fit(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> None:
    name = decoder_cls.__name__
    est = decoder_cls()
    params = est.get_params()
    if est.fit(Z, X, dt) is not est:
        _fail(f"{name}.fit() must return self")
    if not _public_learned(est):
        _fail(f"{name}.fit() set no learned attributes ending in '_'")
    after = est.get_params()
    if not all(_same(after[k], v) for k, v in params.items()):
        _fail(f"{name}.fit() modified its hyper-parameters")


def _check_step(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> None:
    name = decoder_cls.__name__
    est = _fitted(decoder_cls, Z, X, dt)
    est.reset()
    first = est.step(Z[0])
    if not isinstance(first, np.ndarray) or first.dtype != np.float64 or first.ndim != 1:
        _fail(f"{name}.step() must return a 1-D float64 ndarray, got {type(first).__name__} "
              f"{getattr(first, 'dtype', '')} {getattr(first, 'shape', '')}")
    if first.shape[0] < X.shape[1]:
        _fail(f"{name}.step() returned {first.shape[0]} values, fewer than the {X.shape[1]} velocity dims")
    snapshot = first.copy()
    for z in Z[1:50]:
        out = est.step(z)
        if out.shape != first.shape:
            _fail(f"{name}.step() changed output shape from {first.shape} to {out.shape}")
        if not np.all(np.isfinite(out)):
            _fail(f"{name}.step() returned non-finite values on finite input")
    if not np.array_equal(first, snapshot):
        _fail(f"{name}.step() returned an array that later steps modified (must be a new array)")


def _check_predict_equals_steps(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> None:
    name = decoder_cls.__name__
    est = _fitted(decoder_cls, Z, X, dt)
    block = Z[:300]
    est.reset()
    predicted = np.asarray(est.predict(block))
    est.reset()
    stepped = np.array([est.step(z) for z in block])
    if predicted.shape != stepped.shape:
        _fail(f"{name}.predict() shape {predicted.shape} differs from stacked step() {stepped.shape}")
    error = float(np.max(np.abs(predicted - stepped)))
    scale = max(1.0, float(np.max(np.abs(stepped))))
    if not error <= _STEP_TOLERANCE * scale:
        _fail(f"{name}.predict(Z) differs from a loop of step(z) after reset() by {error:.3g}")


def _check_save_load(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> None:
    name = decoder_cls.__name__
    est = _fitted(decoder_cls, Z, X, dt)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "decoder.npz"
        est.save(path)
        loaded = decoder_cls.load(path)
    if type(loaded) is not decoder_cls:
        _fail(f"{name}.load() returned {type(loaded).__name__}")
    if not all(_same(loaded.get_params()[k], v) for k, v in est.get_params().items()):
        _fail(f"{name}: hyper-parameters changed through save/load")
    block = Z[:200]
    if not np.array_equal(np.asarray(est.predict(block)), np.asarray(loaded.predict(block))):
        _fail(f"{name}: predictions differ after a save/load round trip")


def _check_rejects_non_finite(decoder_cls: type, Z: np.ndarray, X: np.ndarray, dt: float) -> None:
    name = decoder_cls.__name__
    Z_nan = Z.copy()
    Z_nan[10, 3] = np.nan
    X_inf = X.copy()
    X_inf[7, 1] = np.inf
    for label, Zb, Xb in (("NaN in Z", Z_nan, X), ("Inf in X", Z, X_inf)):
        try:
            decoder_cls().fit(Zb, Xb, dt)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001 - wrong exception type is the failure
            _fail(f"{name}.fit() with {label} raised {type(exc).__name__}, not ValueError")
        _fail(f"{name}.fit() accepted {label} (must raise ValueError)")

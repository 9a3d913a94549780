"""Per-step latency of Kalman-filter updates: bciarm's kernels against references.

Implementations (``impl`` names of :func:`run_bench`):

``bciarm-steady`` / ``bciarm-full``
    The compiled online filters that :meth:`KalmanDecoder.step` calls
    (``engine.step(z, gain)``); built here straight from d x N matrices so
    that N = 10000 does not need an N x N Q in memory. ``bciarm-full``
    looks the covariance up once the recursion has reached its floating-point
    limit cycle (bit-identical; see ``ext/_kalman.pyx``).
``bciarm-full-nocache``
    The same full update recomputing the covariance recursion on every step
    (no look-up): information form with ``S = C' Q^-1 C`` and ``G = C' Q^-1``
    precomputed, so a step is one d x N matrix-vector product plus O(d^3)
    d x d work, and the d x N gain is never formed.
``numpy-steady``
    The same steady-state math in plain NumPy: ``x = F @ x + K @ z``, output copied.
``filterpy``
    ``filterpy.kalman.KalmanFilter``: ``predict()`` then ``update(z)``.
``pykalman``
    ``pykalman.KalmanFilter.filter_update``.
``neural-decoding``
    ``KalmanFilterDecoder.predict`` of neural-decoding over a block, per step.

The references (``bench`` extra) invert the N x N innovation covariance each
step, so they are only run while a step stays under ``slow_limit_ms``.

Methodology (the same for every implementation in a run):

* **Threads.** Every BLAS/OpenMP pool loaded in the process (NumPy's and
  SciPy's OpenBLAS, which the compiled kernels call) is limited to the same
  number of threads for the whole run with ``threadpoolctl`` -- by default 1,
  the setting of a pinned real-time decoding process, and the one that gives
  reproducible figures on a shared machine (a multi-threaded 192 x 192
  inversion is at the mercy of other processes). :func:`threading_report`
  says what was in effect.
* **Timing.** A sample is ``k`` consecutive steps timed together with
  ``perf_counter_ns`` and divided by ``k``, where ``k`` (1 to
  :data:`MAX_STEPS_PER_SAMPLE`) is the fewest steps lasting at least
  :data:`MIN_SAMPLE_NS`: the clock's own ~0.1 us overhead then does not
  dominate a sub-microsecond step, and a step slower than that is timed alone.
  Median and 99th percentile of the samples, in microseconds per step. Each
  implementation is called through its plain stepping callable (the compiled
  filters' bound ``step`` method; the references' predict + update).
* **Inputs.** The same random model and the same 64 observation vectors,
  cycled, for every implementation at a size; 3 warm-up steps first.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from bciarm.decoders import _kalman

__all__ = ["IMPLS", "ratios", "run_bench", "threading_report"]

#: A timing sample lasts at least this long (ns), unless one step is longer.
MIN_SAMPLE_NS = 5_000
#: Most steps in one timing sample.
MAX_STEPS_PER_SAMPLE = 64

IMPLS = ("bciarm-steady", "bciarm-full", "bciarm-full-nocache", "numpy-steady", "filterpy",
         "pykalman", "neural-decoding")
REFERENCE_IMPLS = ("filterpy", "pykalman", "neural-decoding")


def _model(n: int, d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A stable, observable random model with a constant last state (as the decoder's)."""
    A = np.zeros((d, d))
    A[:-1, :-1] = 0.9 * np.eye(d - 1) + 0.01 * rng.standard_normal((d - 1, d - 1))
    A[-1, -1] = 1.0
    W = np.zeros((d, d))
    W[:-1, :-1] = 0.01 * np.eye(d - 1)
    C = rng.standard_normal((n, d))
    q = rng.uniform(0.5, 2.0, n)  # diagonal Q: the information form needs only Q^-1 C
    G = np.ascontiguousarray((C / q[:, None]).T)
    S = np.ascontiguousarray(G @ C)
    # A steady gain of the right shape and scale (the value does not change the cost).
    K = np.ascontiguousarray(np.linalg.solve(S + np.eye(d), G))
    K[-1] = 0.0
    F = np.ascontiguousarray((np.eye(d) - K @ C) @ A)
    return {"A": A, "W": W, "C": C, "q": q, "G": G, "S": S, "K": K, "F": F}


def _time_steps(step: Callable[[np.ndarray], Any], Z: np.ndarray, budget_s: float,
                min_steps: int, max_steps: int) -> np.ndarray:
    """Per-step time (us) of samples of ``k`` consecutive steps (see the module docstring)."""
    rows = len(Z)
    for i in range(3):  # warm-up
        step(Z[i % rows])
    # k: the fewest steps that last MIN_SAMPLE_NS (measured on a trial sample).
    k = 1
    while k < MAX_STEPS_PER_SAMPLE:
        t0 = time.perf_counter_ns()
        for j in range(k):
            step(Z[j % rows])
        if time.perf_counter_ns() - t0 >= MIN_SAMPLE_NS:
            break
        k *= 2
    batches = [[Z[(b + j) % rows] for j in range(k)] for b in range(rows)]
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    i = 0
    while i < max_steps and (len(times) < min_steps or time.perf_counter() < t_end):
        batch = batches[len(times) % rows]
        t0 = time.perf_counter_ns()
        for z in batch:
            step(z)
        times.append((time.perf_counter_ns() - t0) / k)
        i += k
    return np.asarray(times, dtype=np.float64) / 1000.0


def _steppers(impl: str, m: dict[str, np.ndarray], d: int) -> Callable[[np.ndarray], Any] | None:
    n = m["C"].shape[0]
    x0 = np.zeros(d)
    x0[-1] = 1.0
    if impl == "bciarm-steady":
        # The bound method KalmanDecoder.step calls (gain defaults to 1).
        return _kalman.SteadyFilter(m["F"], m["K"], x0.copy(), d - 1, 0).step
    if impl in ("bciarm-full", "bciarm-full-nocache"):
        return _kalman.FullFilter(m["A"], m["W"], m["S"], m["G"], x0.copy(), np.zeros((d, d)),
                                  d - 1, 0, cache=impl == "bciarm-full").step
    if impl == "numpy-steady":
        F, K = m["F"], m["K"]
        state = {"x": x0.copy()}

        def numpy_step(z: np.ndarray) -> np.ndarray:
            state["x"] = F @ state["x"] + K @ z
            return state["x"][:-1].copy()
        return numpy_step
    if impl == "filterpy":
        from filterpy.kalman import KalmanFilter as FKF

        kf = FKF(dim_x=d, dim_z=n)
        kf.F, kf.Q, kf.H, kf.R = m["A"], m["W"], m["C"], np.diag(m["q"])
        kf.x, kf.P = x0.copy(), np.eye(d) * 1e-3

        def filterpy_step(z: np.ndarray) -> np.ndarray:
            kf.predict()
            kf.update(z)
            return kf.x
        return filterpy_step
    if impl == "pykalman":
        from pykalman import KalmanFilter as PKF

        pk = PKF(transition_matrices=m["A"], observation_matrices=m["C"],
                 transition_covariance=m["W"], observation_covariance=np.diag(m["q"]))
        state = {"x": x0.copy(), "P": np.eye(d) * 1e-3}

        def pykalman_step(z: np.ndarray) -> np.ndarray:
            state["x"], state["P"] = pk.filter_update(state["x"], state["P"], z)
            return state["x"]
        return pykalman_step
    raise ValueError(f"unknown impl {impl!r}; known: {list(IMPLS)}")


def _neural_decoding(m: dict[str, np.ndarray], d: int, Z: np.ndarray, steps: int) -> np.ndarray:
    """Per-step time of neural-decoding's KF: its predict loop over ``steps`` bins, divided."""
    with contextlib.redirect_stdout(io.StringIO()):  # it prints warnings on import
        from Neural_Decoding.decoders import KalmanFilterDecoder
    kf = KalmanFilterDecoder(C=1)
    kf.model = [np.asmatrix(m["A"]), np.asmatrix(m["W"]), np.asmatrix(m["C"]),
                np.asmatrix(np.diag(m["q"]))]
    out = []
    for _ in range(3):
        Zb = Z[:steps]
        t0 = time.perf_counter_ns()
        with warnings.catch_warnings():  # np.matrix throughout
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            kf.predict(Zb, np.zeros((steps, d)))
        out.append((time.perf_counter_ns() - t0) / 1000.0 / (steps - 1))
    return np.asarray(out)


def check_extras(impls: Iterable[str]) -> None:
    """Raise ModuleNotFoundError naming the ``bench`` extra if a reference is missing."""
    modules = {"filterpy": "filterpy", "pykalman": "pykalman", "neural-decoding": "Neural_Decoding"}
    for impl in impls:
        if impl in modules:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    __import__(modules[impl])
            except ModuleNotFoundError:
                raise ModuleNotFoundError(
                    f"benchmark impl {impl!r} needs {modules[impl]}, a benchmark-only extra: "
                    f"pip install 'bciarm[bench]'", name=modules[impl]) from None


def run_bench(n_channels: Iterable[int] = (96, 192, 1024, 4096, 10000),
              state_dims: Iterable[int] = (3, 5, 7), impls: Iterable[str] = IMPLS,
              budget_s: float = 0.25, slow_limit_ms: float = 25.0, seed: int = 0,
              progress: Callable[[str], None] | None = None,
              blas_threads: int | None = 1) -> list[dict[str, Any]]:
    """Time one step of each implementation at each size.

    Parameters
    ----------
    n_channels, state_dims : iterable of int
    impls : iterable of str
        Among :data:`IMPLS`.
    budget_s : float
        Timing budget per (impl, N, d) (at least 20 steps are timed).
    slow_limit_ms : float
        A reference whose median step exceeds this at some N >= 192 is not run
        at larger N.
    seed : int
    blas_threads : int or None
        Threads of every BLAS/OpenMP pool during the whole run (the same for
        all implementations); None leaves the pools as they are.

    Returns
    -------
    list of dict
        ``{"impl", "n_channels", "state_dim", "median_us", "p99_us"}`` per measurement.
    """
    impls = list(impls)
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        raise ValueError(f"unknown impl(s) {unknown}; known: {list(IMPLS)}")
    check_extras(impls)
    with _thread_limit(blas_threads):
        return _run(n_channels, state_dims, impls, budget_s, slow_limit_ms, seed, progress)


@contextlib.contextmanager
def _thread_limit(blas_threads: int | None) -> Iterator[None]:
    if blas_threads is None:
        yield
        return
    if blas_threads < 1:
        raise ValueError(f"blas_threads must be >= 1 or None, got {blas_threads}")
    # Import what loads its own BLAS (SciPy's, used by the kernels) first, so
    # the limit reaches every pool.
    import scipy.linalg  # noqa: F401
    with threadpool_limits(limits=blas_threads):
        yield


def threading_report() -> str:
    """One line per loaded BLAS/OpenMP pool: library, version, threads in effect now."""
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, which the kernels use)

    lines = [f"{p.get('internal_api', '?')} {p.get('version') or ''} ({p.get('prefix', '?')}): "
             f"{p.get('num_threads', '?')} thread(s)" for p in threadpool_info()]
    return "; ".join(lines) or "no BLAS/OpenMP pool found"


def _run(n_channels: Iterable[int], state_dims: Iterable[int], impls: list[str],
         budget_s: float, slow_limit_ms: float, seed: int,
         progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    results: list[dict[str, Any]] = []
    if progress is not None:
        progress(f"BLAS/OpenMP threads for every implementation: {threading_report()}")
    too_slow: set[tuple[str, int]] = set()
    for n in sorted(n_channels):
        Z = rng.standard_normal((64, n))
        for d in state_dims:
            m = _model(n, d, rng)
            for impl in impls:
                if (impl, d) in too_slow:
                    continue
                if impl == "neural-decoding":
                    times = _neural_decoding(m, d, np.vstack([Z] * 2), 32)
                else:
                    stepper = _steppers(impl, m, d)
                    assert stepper is not None
                    times = _time_steps(stepper, Z, budget_s, 20, 200_000)
                med = float(np.median(times))
                results.append({"impl": impl, "n_channels": int(n), "state_dim": int(d),
                                "median_us": med, "p99_us": float(np.percentile(times, 99))})
                if progress is not None:
                    progress(f"{impl:<16} N={n:<6} d={d}  median {med:10.1f} us")
                # References always run at N <= 192 (the acceptance ratios need them).
                if impl in REFERENCE_IMPLS and n >= 192 and med > slow_limit_ms * 1000:
                    too_slow.add((impl, d))
    return results


def ratios(results: list[dict[str, Any]], state_dim: int = 7) -> dict[str, float | None]:
    """The acceptance ratios of one run (None where a measurement is missing).

    ``steady_vs_numpy``: numpy-steady / bciarm-steady median at N = 192;
    ``full_vs_filterpy``: filterpy / bciarm-full at N = 192 (``full_nocache_vs_filterpy``:
    the same against bciarm-full-nocache);
    ``full_4096_vs_192``: bciarm-full at 4096 / at 192.
    """
    med = {(r["impl"], r["n_channels"], r["state_dim"]): r["median_us"] for r in results}

    def ratio(a: tuple, b: tuple) -> float | None:
        return med[a] / med[b] if a in med and b in med else None

    d = state_dim
    return {
        "steady_vs_numpy_192": ratio(("numpy-steady", 192, d), ("bciarm-steady", 192, d)),
        "full_vs_filterpy_192": ratio(("filterpy", 192, d), ("bciarm-full", 192, d)),
        "full_nocache_vs_filterpy_192": ratio(("filterpy", 192, d),
                                              ("bciarm-full-nocache", 192, d)),
        "full_4096_vs_192": ratio(("bciarm-full", 4096, d), ("bciarm-full", 192, d)),
        "steady_vs_numpy_1024": ratio(("numpy-steady", 1024, d), ("bciarm-steady", 1024, d)),
    }

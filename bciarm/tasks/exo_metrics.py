"""Trial records of the exoskeleton tasks and the metrics computed from them.

One :class:`ExoTrialRecord` per finished trial (reach-to-target in joint
space, or one leg of a range-of-motion exercise).  :func:`compute_exo_metrics`
summarises them:

trials
    Finished trials (success or timeout; a trial cut short by the end of a
    block is not counted).
success_rate
    Trials in which every active joint came within the tolerance of the goal
    and stayed there for the hold time, before the timeout.
mean_time_to_target_s
    Over successes: target onset to the start of the successful hold.
path_efficiency
    Over successes: joint-space straight-line distance from the start posture
    to the posture at acquisition ÷ the joint-space path length between them.
rom_violations
    Control ticks (state messages) during the trials in which any joint of the
    exoskeleton was measured outside the patient's range of motion.  Must be 0.
assist_fraction
    Σ|a| / Σ|u + a| over every tick of the trials: the share of the commanded
    joint motion that assist-as-needed supplied (``a`` the assistance, ``u``
    the user's intent).  0 = all the patient's own.
smoothness
    Mean SPARC (spectral arc length of the joint-speed profile, Balasubramanian
    et al. 2015, J NeuroEng Rehabil 12:112) over successes, from onset to the
    end of the hold.  Negative; closer to 0 is smoother (a minimum-jerk reach
    scores about -1.4, a stop-and-go one -3 or less).
rom_reached_fraction
    Mean over active joints of the span of angles reached during the trials ÷
    the span of the patient's range of motion for that joint.
rom_reached_deg
    Per active joint, ``[min, max]`` reached (degrees).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EXO_METRIC_KEYS = ("trials", "success_rate", "mean_time_to_target_s", "path_efficiency",
                   "rom_violations", "assist_fraction", "smoothness", "rom_reached_fraction",
                   "rom_reached_deg")


@dataclass(frozen=True)
class ExoTrialRecord:
    """One finished exoskeleton trial (angles in rad, intent-space speeds in rad/s).

    Attributes
    ----------
    block, mode : str
    index : int
        Trial index within the block.
    joints : tuple of str
        Active joints, in the order of the arrays below.
    start_t_s, end_t_s : float
    start_position, target : ndarray (k,)
    tolerance_rad : float
    outcome : str
        ``"success"`` or ``"timeout"``.
    time_to_target_s : float
        NaN for failures.
    path_rad, straight_rad : float
        Joint-space path to acquisition (or to the end) and the straight
        distance from the start to the acquisition posture (NaN for failures).
    reached_min, reached_max : ndarray (k,)
        Smallest and largest angle of each active joint during the trial.
    rom_lower, rom_upper : ndarray (k,)
        The patient's range of motion of the active joints.
    assist_integral, command_integral : float
        ∫|a| dt and ∫|u + a| dt over the trial (rad).
    rom_violation_ticks : int
    sparc : float
        Smoothness of the successful reach (NaN for failures).
    """

    block: str
    mode: str
    index: int
    joints: tuple[str, ...]
    start_t_s: float
    end_t_s: float
    start_position: np.ndarray
    target: np.ndarray
    tolerance_rad: float
    outcome: str
    time_to_target_s: float
    path_rad: float
    straight_rad: float
    reached_min: np.ndarray
    reached_max: np.ndarray
    rom_lower: np.ndarray
    rom_upper: np.ndarray
    assist_integral: float
    command_integral: float
    rom_violation_ticks: int
    sparc: float


def sparc(speed: Sequence[float], fs: float, pad_level: int = 4, fc: float = 10.0,
          amp_threshold: float = 0.05) -> float:
    """Spectral arc length of a speed profile (Balasubramanian et al. 2015).

    Parameters
    ----------
    speed : sequence of float
        Speed samples (any unit), evenly spaced.
    fs : float
        Sampling rate, Hz.
    pad_level, fc, amp_threshold
        Zero padding (powers of two), cut-off frequency (Hz) and amplitude
        threshold of the adaptive cut-off, as published.

    Returns
    -------
    float
        SPARC (≤ 0); NaN for fewer than 3 samples or a zero profile.
    """
    v = np.asarray(speed, dtype=float).reshape(-1)
    if v.size < 3 or not np.all(np.isfinite(v)) or not np.any(v > 0):
        return math.nan
    nfft = int(2 ** (math.ceil(math.log2(v.size)) + pad_level))
    f = np.arange(nfft) * (fs / nfft)
    mag = np.abs(np.fft.fft(v, nfft))
    mag = mag / mag.max()
    sel = f <= fc
    f, mag = f[sel], mag[sel]
    above = np.nonzero(mag >= amp_threshold)[0]
    f, mag = f[above[0]:above[-1] + 1], mag[above[0]:above[-1] + 1]
    if f.size < 2:
        return 0.0
    df = np.diff(f) / (f[-1] - f[0])
    return float(-np.sum(np.sqrt(df ** 2 + np.diff(mag) ** 2)))


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else None


def compute_exo_metrics(trials: Sequence[ExoTrialRecord]) -> dict:
    """Summary of exoskeleton trials (see the module docstring); None where undefined."""
    n = len(trials)
    ok = [t for t in trials if t.outcome == "success"]
    command = sum(t.command_integral for t in trials)
    out: dict = {
        "trials": n,
        "success_rate": len(ok) / n if n else None,
        "mean_time_to_target_s": _mean([t.time_to_target_s for t in ok]),
        "path_efficiency": _mean([t.straight_rad / t.path_rad for t in ok if t.path_rad > 1e-9]),
        "rom_violations": int(sum(t.rom_violation_ticks for t in trials)),
        "assist_fraction": (sum(t.assist_integral for t in trials) / command
                            if command > 0 else (0.0 if n else None)),
        "smoothness": _mean([t.sparc for t in ok]),
        "rom_reached_fraction": None,
        "rom_reached_deg": {},
    }
    if n:
        lo = np.min([t.reached_min for t in trials], axis=0)
        hi = np.max([t.reached_max for t in trials], axis=0)
        span = trials[0].rom_upper - trials[0].rom_lower
        out["rom_reached_fraction"] = float(np.mean(np.clip((hi - lo) / span, 0.0, 1.0)))
        out["rom_reached_deg"] = {j: [round(math.degrees(a), 1), round(math.degrees(b), 1)]
                                  for j, a, b in zip(trials[0].joints, lo, hi)}
    return out

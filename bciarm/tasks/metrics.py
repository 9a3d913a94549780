"""Trial records and the performance metrics computed from them.

One :class:`TrialRecord` is written per finished trial.  :func:`compute_metrics`
summarises a list of them with the measures used in the intracortical BCI
literature (Gilja et al. 2012, Nat Neurosci 15:1752; Pandarinath et al. 2017):

success rate
    Successful trials ÷ all finished trials.  Trials cut short by the end of
    a block are never recorded, so they do not count as failures.
mean time to target
    Over successful trials: time from target onset to the start of the
    successful hold (the final entry into the target; the hold itself is not
    included), in seconds.
path efficiency
    Over successful trials: the straight-line distance from the position at
    target onset to the position where the target was acquired (start of the
    successful hold), divided by the length of the path actually travelled
    between the two.  It is at most 1 (triangle inequality) and exactly 1 for
    a straight path, whatever the sampling.  (Dividing the distance to the
    target *centre* by the path to acquisition instead would exceed 1 for a
    straight reach, because acquisition happens at the target's edge.)
    Trials whose path has zero length (the effector was already inside the
    target at onset) are left out.
bitrate (Fitts throughput)
    Each successful trial carries an index of difficulty
    ``ID = log2((D + W) / W)`` bits, Gilja et al.'s form of the Shannon
    formulation of Fitts's law, where ``D`` is the distance from the position
    at target onset to the target centre and ``W`` the acceptance width,
    i.e. the target *diameter* (2 × target radius).  Bitrate is the sum of
    the IDs of the successful trials divided by the total time of all trials
    (bits/s), where a successful trial's time is its time to target (the hold
    is excluded, as in Gilja et al.; pass ``include_hold=True`` to count it)
    and a failed trial's time is its whole duration (its timeout).  Failures
    therefore cost time but earn no bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

METRIC_KEYS = ("trials", "success_rate", "mean_time_to_target_s", "path_efficiency",
               "bitrate_bps")


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial.

    Attributes
    ----------
    block, mode : str
        Block name and mode (``"open_loop"``/``"closed_loop"``) it ran in.
    index : int
        Trial index within the block (0-based; discarded trials leave gaps).
    target_id : int
        Outer target number (0-based), or -1 for the centre target.
    start_t_s, end_t_s : float
        Target onset and trial end (success or timeout), session clock, s.
    start_position : ndarray, shape (3,)
        Effector position (world) at target onset.
    target : ndarray, shape (3,)
        Target centre (world).
    target_radius : float
        Acceptance radius, m.
    outcome : str
        ``"success"`` or ``"timeout"``.
    time_to_target_s : float
        Onset to the start of the successful hold; NaN for failures.
    path_length_m : float
        Task-space path travelled from onset to acquisition (successes) or to
        the end of the trial (failures).
    straight_m : float
        Task-space distance from ``start_position`` to the acquisition point;
        NaN for failures.
    distance_m : float
        Task-space distance from ``start_position`` to the target centre (D).
    holds_broken : int
        Times the effector left the target during a hold (dial-in difficulty).
    """

    block: str
    mode: str
    index: int
    target_id: int
    start_t_s: float
    end_t_s: float
    start_position: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    target_radius: float
    outcome: str
    time_to_target_s: float
    path_length_m: float
    straight_m: float
    distance_m: float
    holds_broken: int = 0

    @property
    def success(self) -> bool:
        return self.outcome == "success"

    @property
    def duration_s(self) -> float:
        return self.end_t_s - self.start_t_s


def index_of_difficulty(distance_m: float, target_radius: float) -> float:
    """Fitts ID in bits, ``log2((D + W) / W)`` with ``W = 2 * target_radius``."""
    w = 2.0 * target_radius
    if w <= 0:
        raise ValueError("target_radius must be > 0")
    return math.log2((max(distance_m, 0.0) + w) / w)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _summary(trials: Sequence[TrialRecord], include_hold: bool) -> dict[str, float | int]:
    ok = [t for t in trials if t.success]
    n = len(trials)
    efficiencies = [min(t.straight_m / t.path_length_m, 1.0)
                    for t in ok if t.path_length_m > 0 and math.isfinite(t.straight_m)]
    bits = sum(index_of_difficulty(t.distance_m, t.target_radius) for t in ok)
    # Successful trials cost their time to target (plus the hold if asked);
    # failed ones their whole duration.
    total_s = sum((t.duration_s if include_hold else t.time_to_target_s) if t.success
                  else t.duration_s for t in trials)
    return {
        "trials": n,
        "success_rate": len(ok) / n if n else math.nan,
        "mean_time_to_target_s": _mean([t.time_to_target_s for t in ok]),
        "path_efficiency": _mean(efficiencies),
        "bitrate_bps": bits / total_s if total_s > 0 else (0.0 if n else math.nan),
    }


def compute_metrics(trials: Iterable[TrialRecord], *, include_hold: bool = False) -> dict:
    """Summarise finished trials (see the module docstring for definitions).

    Parameters
    ----------
    trials : iterable of TrialRecord
    include_hold : bool
        Count the successful hold in a successful trial's time for the
        bitrate (default: time to target only, as Gilja et al. 2012).

    Returns
    -------
    dict
        ``trials`` (int), ``success_rate``, ``mean_time_to_target_s``,
        ``path_efficiency``, ``bitrate_bps`` (floats; NaN where undefined,
        e.g. no successful trial), and ``per_block``: the same five keys for
        each block name, in order of first appearance.
    """
    trials = list(trials)
    out: dict = _summary(trials, include_hold)
    blocks: dict[str, list[TrialRecord]] = {}
    for t in trials:
        blocks.setdefault(t.block, []).append(t)
    out["per_block"] = {b: _summary(ts, include_hold) for b, ts in blocks.items()}
    return out

"""Goal records of the navigation task and the metrics computed from them.

One :class:`GoalRecord` per finished goal (reached or timed out).
:func:`compute_nav_metrics` summarises them:

goals
    Finished goals (a goal cut short by the end of a block is not counted).
goal_success_rate
    Reached goals ÷ finished goals.
mean_time_s
    Mean time from goal onset to arrival over reached goals.
path_length_ratio
    Mean over reached goals of the path the chair travelled ÷ the shortest
    collision-free path from where it started (grid planner + string
    pulling, :mod:`bciarm.tasks.planner`); 1 is the best possible.
collisions
    Contacts of the chair with a wall or furniture (each new contact once).
near_misses
    Episodes in which the chair came within ``near_miss_m`` (0.1 m) of a
    wall or furniture without touching it (true distance from the
    simulator; an episode ends once the clearance is back above 1.5 × that).
mean_abs_jerk
    Mean absolute jerk of the chair's forward motion, m/s³, from the
    measured forward speed resampled at 20 Hz (second difference).
stops
    Times the chair came to rest (below 0.02 m/s after moving faster than
    0.1 m/s) on the way to a goal, arrival excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Keys of the summary, in display order.
NAV_METRIC_KEYS = ("goals", "goal_success_rate", "mean_time_s", "path_length_ratio", "collisions",
                   "near_misses", "mean_abs_jerk", "stops")


@dataclass(frozen=True)
class GoalRecord:
    """One finished goal.

    Attributes
    ----------
    block, mode : str
    index : int
        Goal index in the block.
    goal : str
        Place name.
    target : ndarray (2,)
    start_t_s, end_t_s : float
    start_position : ndarray (2,)
    outcome : str
        ``"success"`` or ``"timeout"``.
    path_length_m, shortest_m : float
    collisions, near_misses, stops : int
    jerk_sum : float
        Sum of |jerk| samples (m/s³); ``jerk_n`` samples.
    jerk_n : int
    min_clearance_m : float
    """

    block: str
    mode: str
    index: int
    goal: str
    target: np.ndarray
    start_t_s: float
    end_t_s: float
    start_position: np.ndarray
    outcome: str
    path_length_m: float
    shortest_m: float
    collisions: int
    near_misses: int
    stops: int
    jerk_sum: float
    jerk_n: int
    min_clearance_m: float

    @property
    def success(self) -> bool:
        return self.outcome == "success"

    @property
    def time_s(self) -> float:
        return self.end_t_s - self.start_t_s


def compute_nav_metrics(goals: Sequence[GoalRecord]) -> dict[str, float | int | None]:
    """Summary of a list of goals (see the module docstring); None where undefined."""
    ok = [g for g in goals if g.success]
    ratios = [g.path_length_m / g.shortest_m for g in ok if g.shortest_m > 1e-6]
    jn = sum(g.jerk_n for g in goals)
    return {
        "goals": len(goals),
        "goal_success_rate": len(ok) / len(goals) if goals else 0.0,
        "mean_time_s": float(np.mean([g.time_s for g in ok])) if ok else None,
        "path_length_ratio": float(np.mean(ratios)) if ratios else None,
        "collisions": int(sum(g.collisions for g in goals)),
        "near_misses": int(sum(g.near_misses for g in goals)),
        "mean_abs_jerk": sum(g.jerk_sum for g in goals) / jn if jn else None,
        "stops": int(sum(g.stops for g in goals)),
        "min_clearance_m": (float(min(g.min_clearance_m for g in goals))
                            if goals and all(math.isfinite(g.min_clearance_m) for g in goals)
                            else None),
    }

"""Non-stationarity of a simulated population: tuning drift, dropout, baseline shifts.

Recorded motor-cortex tuning is not fixed across a session: preferred
directions wander, units are lost (electrode micromotion, impedance changes)
and whole-array baselines jump. :class:`Drift` applies these to a
:class:`~bciarm.sources.population.CosineTunedPopulation` as time advances,
so a decoder fit at calibration degrades and adaptation (ReFIT, CLDA) has work
to do. Every rate is per simulated minute; all zero (the default) means no
drift and no random draws, so a session without drift is unchanged.

Per step of ``dt`` seconds (between ``start_s`` and ``stop_s``):

* preferred directions take a random-walk step: each unit's direction gets an
  isotropic Gaussian perturbation of s.d. ``radians(direction_deg_per_min) *
  sqrt(dt / 60)`` and is renormalised (in 2-D, a rotation random walk of
  that RMS angle per minute);
* log-baselines take a random-walk step of s.d. ``baseline_rel_per_min *
  sqrt(dt / 60)``;
* each live unit drops out (goes silent for good) with probability
  ``dropout_per_min * dt / 60``;
* with probability ``shifts_per_min * dt / 60`` all baselines are multiplied
  by one factor ``exp(N(0, shift_rel))`` (a whole-array shift).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bciarm.sources.population import CosineTunedPopulation

__all__ = ["Drift", "DriftSpec"]


class DriftSpec(BaseModel):
    """Drift parameters (all rates per simulated minute; zeros: no drift)."""

    model_config = ConfigDict(extra="forbid")

    direction_deg_per_min: float = Field(0.0, ge=0.0, description="RMS preferred-direction "
                                         "random walk, degrees per sqrt(minute).")
    baseline_rel_per_min: float = Field(0.0, ge=0.0, description="S.d. of the log-baseline "
                                        "random walk per sqrt(minute).")
    dropout_per_min: float = Field(0.0, ge=0.0, le=1.0,
                                   description="Fraction of live units lost per minute.")
    shifts_per_min: float = Field(0.0, ge=0.0, description="Whole-array baseline shifts per minute.")
    shift_rel: float = Field(0.3, ge=0.0, description="S.d. of log of a baseline shift factor.")
    start_s: float = Field(0.0, ge=0.0, description="Drift starts at this simulated time, s.")
    stop_s: float | None = Field(None, gt=0.0, description="Drift stops at this simulated time, "
                                 "s (None: never); e.g. a change between two sessions.")

    @property
    def enabled(self) -> bool:
        return any(v > 0 for v in (self.direction_deg_per_min, self.baseline_rel_per_min,
                                   self.dropout_per_min, self.shifts_per_min))


class Drift:
    """Apply :class:`DriftSpec` to a population over time.

    Parameters
    ----------
    spec : DriftSpec
    rng : numpy.random.Generator
        Its own stream (drift draws never disturb the spike or user noise).

    Attributes
    ----------
    dropped : list of int
        Units lost so far, in order.
    shifts : list of tuple
        ``(t_s, factor)`` of every whole-array baseline shift.
    """

    def __init__(self, spec: DriftSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        self.dropped: list[int] = []
        self.shifts: list[tuple[float, float]] = []

    def advance(self, pop: CosineTunedPopulation, t_s: float, dt: float) -> None:
        """Drift ``pop`` by one step of ``dt`` seconds ending at ``t_s``."""
        s = self.spec
        if not s.enabled or t_s <= s.start_s or (s.stop_s is not None and t_s > s.stop_s):
            return
        frac = dt / 60.0
        n = pop.n_channels
        if s.direction_deg_per_min > 0:
            sd = np.radians(s.direction_deg_per_min) * np.sqrt(frac)
            d = pop.preferred_direction + sd * self.rng.standard_normal(pop.preferred_direction.shape)
            norms = np.linalg.norm(d, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            pop.preferred_direction = d / norms
        if s.baseline_rel_per_min > 0:
            pop.baseline_hz = pop.baseline_hz * np.exp(
                s.baseline_rel_per_min * np.sqrt(frac) * self.rng.standard_normal(n))
        if s.dropout_per_min > 0:
            lost = (self.rng.random(n) < s.dropout_per_min * frac) & pop.alive
            if lost.any():
                pop.alive = pop.alive & ~lost
                self.dropped.extend(np.flatnonzero(lost).tolist())
        if s.shifts_per_min > 0 and self.rng.random() < s.shifts_per_min * frac:
            factor = float(np.exp(s.shift_rel * self.rng.standard_normal()))
            pop.baseline_hz = pop.baseline_hz * factor
            self.shifts.append((t_s, factor))
        pop.refresh()

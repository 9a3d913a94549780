"""A simulated BCI user: sees delayed visual feedback and aims at the target.

The user forms an intended velocity from what it saw ``feedback_delay_s`` ago
(visuomotor delay, 0.1-0.2 s in people and monkeys): the effector position
and the target shown at that time.  It aims straight at the target centre
with a speed that grows with distance and saturates at a preferred speed::

    speed(d) = v_pref * tanh(gain * d / v_pref)

so far from the target the user moves at ``v_pref`` and near it the speed
falls off linearly (slope ``gain``, 1/s), reaching 0 at the centre: holds are
possible.  Motor noise is Gaussian and isotropic, with a signal-dependent
part (standard deviation ``noise_rel * speed``, Harris & Wolpert 1998) and a
constant part (``noise_abs`` m/s).

The same speed profile, without noise or delay, drives the effector in open
loop (:func:`aim_velocity`, used by :mod:`bciarm.tasks.center_out`).

**Observation (open-loop calibration).** While the task's autopilot moves the
effector the user only watches and imagines the movement. Motor-cortex
activity during observation is congruent with, but weaker than, activity
during the user's own control (Tkach, Reimer & Hatsopoulos 2007, J Neurosci
27:13241), and in people with tetraplegia decoders calibrated on watched
(open-loop) movements are worse than decoders calibrated in closed loop,
because the imagined movement follows the display with an uncertain timing
and only loosely matches it (Jarosiewicz et al. 2013, J Neural Eng
10:046012; Kim et al. 2008, J Neural Eng 5:455). :class:`ObservationSpec`
models this while :attr:`SimulatedUser.observing` is set: the imagined
velocity is the aim seen ``extra_lag_s`` later than in control, scaled by
``engagement``, with extra signal-dependent noise ``noise_rel``. All off by
default (a user who intends exactly the displayed movement).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


DEFAULT_FEEDBACK_DELAY_S = 0.15
DEFAULT_PREFERRED_SPEED = 0.15
DEFAULT_GAIN = 2.5
DEFAULT_NOISE_REL = 0.15
DEFAULT_NOISE_ABS = 0.005

# Observations are time-stamped in seconds; allow this much rounding when
# comparing an observation time with ``t - delay``.
_T_EPS = 1e-9


class ObservationSpec(BaseModel):
    """How the user's intention differs while watching open-loop calibration (see module doc).

    Defaults: no difference (intention = the aim at the displayed movement).
    """

    model_config = ConfigDict(extra="forbid")

    engagement: float = Field(1.0, gt=0.0, le=1.0, description="Fraction of the aim's speed "
                              "the watching user imagines (modulation is weaker during "
                              "observation; Tkach et al. 2007).")
    extra_lag_s: float = Field(0.0, ge=0.0, le=1.0, description="The imagined movement follows "
                               "the display this much later than the user's own control does, s.")
    noise_rel: float = Field(0.0, ge=0.0, description="Extra motor-noise s.d. while watching, "
                             "as a fraction of the imagined speed (per axis).")

    @property
    def enabled(self) -> bool:
        return self.engagement != 1.0 or self.extra_lag_s > 0 or self.noise_rel > 0


def aim_velocity(position: np.ndarray, target: np.ndarray, preferred_speed: float,
                 gain: float) -> np.ndarray:
    """Velocity from ``position`` straight toward ``target``, noise free.

    Speed is ``preferred_speed * tanh(gain * d / preferred_speed)`` with ``d``
    the distance: proportional (``gain * d``) near the target, saturating at
    ``preferred_speed`` far from it, zero at the centre.
    """
    delta = np.asarray(target, dtype=float) - np.asarray(position, dtype=float)
    d = float(np.linalg.norm(delta))
    if d < 1e-12 or preferred_speed <= 0:
        return np.zeros_like(delta)
    speed = preferred_speed * np.tanh(gain * d / preferred_speed)
    return delta * (speed / d)


class SimulatedUser:
    """A user who aims at the target from delayed feedback, with motor noise.

    Parameters
    ----------
    n_dims : int
        Task-space dimensions.
    feedback_delay_s : float
        Visual feedback delay (s); the user acts on the newest observation
        made at or before ``t - feedback_delay_s``.
    preferred_speed : float
        Saturation speed of the aiming profile (m/s).
    gain : float
        Slope of the speed profile near the target (1/s): speed ≈ gain × distance.
        Keep ``gain * (feedback delay + decoder lag)`` well below 1 or the
        closed loop overshoots and oscillates around the target.
    noise_rel : float
        Signal-dependent motor noise, standard deviation as a fraction of the
        intended speed (per axis).
    noise_abs : float
        Constant motor noise standard deviation (m/s, per axis).
    rng : numpy.random.Generator or int or None
        Source of the motor noise.
    observation : ObservationSpec, optional
        The intention while :attr:`observing` (open-loop calibration).

    Attributes
    ----------
    intended_velocity : ndarray, shape (k,)
        Last value returned by :meth:`intend`.
    observing : bool
        The user watches an autopilot (open loop) rather than controls.
    """

    def __init__(
        self,
        n_dims: int = 2,
        *,
        feedback_delay_s: float = DEFAULT_FEEDBACK_DELAY_S,
        preferred_speed: float = DEFAULT_PREFERRED_SPEED,
        gain: float = DEFAULT_GAIN,
        noise_rel: float = DEFAULT_NOISE_REL,
        noise_abs: float = DEFAULT_NOISE_ABS,
        rng: np.random.Generator | int | None = None,
        observation: ObservationSpec | None = None,
    ) -> None:
        if feedback_delay_s < 0 or preferred_speed < 0 or gain <= 0:
            raise ValueError("feedback_delay_s and preferred_speed must be >= 0, gain > 0")
        if noise_rel < 0 or noise_abs < 0:
            raise ValueError("noise_rel and noise_abs must be >= 0")
        self.n_dims = int(n_dims)
        self.feedback_delay_s = float(feedback_delay_s)
        self.preferred_speed = float(preferred_speed)
        self.gain = float(gain)
        self.noise_rel = float(noise_rel)
        self.noise_abs = float(noise_abs)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        # (t_s, position or None, target or None), oldest first.
        self._seen: deque[tuple[float, np.ndarray | None, np.ndarray | None]] = deque()
        self.intended_velocity = np.zeros(self.n_dims)
        self.observation = observation if observation is not None else ObservationSpec()
        self.observing = False

    def observe(self, t_s: float, position: np.ndarray | None,
                target: np.ndarray | None) -> None:
        """Record what is on screen at time ``t_s`` (task-space coordinates).

        ``target`` is None while no target is shown.  Observations must come
        in non-decreasing time order.
        """
        if self._seen and t_s < self._seen[-1][0] - _T_EPS:
            raise ValueError(f"observation at t={t_s} is older than the last one")
        pos = None if position is None else np.array(position, dtype=float).reshape(self.n_dims)
        tgt = None if target is None else np.array(target, dtype=float).reshape(self.n_dims)
        self._seen.append((float(t_s), pos, tgt))

    def perceived(self, t_s: float, extra_delay_s: float = 0.0
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Position and target as perceived at ``t_s`` (what was seen at ``t_s - delay``).

        Returns ``(None, None)`` before the first observation is old enough.
        Drops observations that can no longer be needed, so the buffer holds
        about ``delay / observation period`` entries. ``extra_delay_s`` looks
        further back (observation); it may shrink over time, never grow.
        """
        cutoff = t_s - self.feedback_delay_s - extra_delay_s + _T_EPS
        seen = self._seen
        # Keep the newest observation at or before the cutoff, drop older ones.
        while len(seen) >= 2 and seen[1][0] <= cutoff:
            seen.popleft()
        if not seen or seen[0][0] > cutoff:
            return None, None
        _, pos, tgt = seen[0]
        return pos, tgt

    def intend(self, t_s: float) -> np.ndarray:
        """Intended velocity (task axes, m/s) at time ``t_s``.

        Zero (without noise) until a position and a target have been seen
        ``feedback_delay_s`` ago.  Call with non-decreasing ``t_s``: older
        observations are dropped as time advances.  Both noise vectors are drawn on every
        call that has something to aim at, so the noise stream does not
        depend on the trajectory.
        """
        obs = self.observation if self.observing and self.observation.enabled else None
        pos, tgt = self.perceived(t_s, obs.extra_lag_s if obs is not None else 0.0)
        if pos is None or tgt is None:
            v = np.zeros(self.n_dims)
        else:
            v = aim_velocity(pos, tgt, self.preferred_speed, self.gain)
            noise_rel = self.noise_rel
            if obs is not None:
                v = obs.engagement * v
                noise_rel = float(np.hypot(noise_rel, obs.noise_rel))
            speed = float(np.linalg.norm(v))
            n = self.rng.standard_normal((2, self.n_dims))
            v = v + (noise_rel * speed) * n[0] + self.noise_abs * n[1]
        self.intended_velocity = v
        return v.copy()

    def reset(self) -> None:
        """Forget all observations (e.g. between sessions)."""
        self._seen.clear()
        self.intended_velocity = np.zeros(self.n_dims)

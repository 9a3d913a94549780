"""From a noisy 2-D intent to a desired command: validation, dead zone, idle handling.

The intent is ``[forward, turn]``, each a fraction of the active profile's
limit in [-1, 1] (values beyond are clipped, ``"speed"`` guard).

* **Dead zone**: each axis below ``dead_zone`` in magnitude is zero; above
  it the axis is rescaled so that the output is continuous and still reaches
  ±1 (``(|u| - dz) / (1 - dz)``).
* **Idle handling**: once the intent has stayed inside the dead zone for
  ``idle_s`` the chair is *idle*; leaving idle needs the intent's norm to
  exceed ``wake`` (a higher threshold) for ``wake_s``.  A resting user's
  decoder noise, which pokes out of the dead zone now and then, therefore
  never creeps the chair, while a deliberate command wakes it within
  ``wake_s``.
"""

from __future__ import annotations

import math

import numpy as np


def dead_zone(u: np.ndarray, dz: float) -> np.ndarray:
    """Per-axis dead zone with rescaling (continuous, reaches ±1)."""
    mag = np.maximum(np.abs(u) - dz, 0.0) / (1.0 - dz)
    return np.sign(u) * mag


class IntentShaper:
    """Dead zone and idle latch (see the module docstring).

    Parameters
    ----------
    dead_zone : float
        Per-axis dead zone, fraction of full scale.
    idle_s : float
        Time inside the dead zone after which the chair is idle, s.
    wake : float
        Norm the intent must exceed (before the dead zone) to leave idle.
    wake_s : float
        For this long, s.

    Attributes
    ----------
    idle : bool
    """

    def __init__(self, dead_zone: float = 0.12, idle_s: float = 1.0, wake: float = 0.35,
                 wake_s: float = 0.2) -> None:
        if not 0 <= dead_zone < 1:
            raise ValueError(f"dead_zone must be in [0, 1), got {dead_zone}")
        self.dead_zone = float(dead_zone)
        self.idle_s = float(idle_s)
        self.wake = float(wake)
        self.wake_s = float(wake_s)
        self.idle = True  # a chair starts at rest and needs a deliberate command
        self._quiet_since: float | None = None
        self._loud_since: float | None = None

    def reset(self) -> None:
        """Back to idle (after an e-stop, say)."""
        self.idle = True
        self._quiet_since = None
        self._loud_since = None

    def shape(self, u: np.ndarray | None, now_s: float) -> np.ndarray:
        """Desired ``[forward, turn]`` fractions for the held intent ``u`` (None: no intent)."""
        if u is None:
            self._quiet_since = self._quiet_since if self._quiet_since is not None else now_s
            self._loud_since = None
            if now_s - self._quiet_since >= self.idle_s:
                self.idle = True
            return np.zeros(2)
        out = dead_zone(u, self.dead_zone)
        if not np.any(out):
            if self._quiet_since is None:
                self._quiet_since = now_s
            if now_s - self._quiet_since >= self.idle_s:
                self.idle = True
        else:
            self._quiet_since = None
        if self.idle:
            if math.hypot(*u) > self.wake:
                self._loud_since = self._loud_since if self._loud_since is not None else now_s
                if now_s - self._loud_since >= self.wake_s:
                    self.idle = False
            else:
                self._loud_since = None
        if self.idle:
            return np.zeros(2)
        return out

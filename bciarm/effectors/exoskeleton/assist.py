"""Assist-as-needed: top up a weak intent that points toward the goal, within bounds.

Given the user's (guarded) intent ``u``, the current position ``x`` and the
task's goal ``g`` in the intent space (joint angles of the active joints, or
end-point position), with ``d = |g − x|`` and ``ĝ = (g − x)/d``:

* the user's effort toward the goal is ``s = u · ĝ``;
* the speed a reach needs there is ``v(d) = v_pref · tanh(k d / v_pref)``
  (the simulated user's own aiming profile: ``v_pref`` far away, tapering
  to 0 at the goal);
* if the intent is a real attempt (``|u| ≥ min_intent``) and points toward the
  goal (angle to ``ĝ`` at most ``max_angle_deg``) but is too weak (``s < v(d)``),
  the assistance is ``a = level · min(v(d) − s, max_speed) · ĝ``; else ``a = 0``.

So the exoskeleton never moves on its own (no intent, no help), never pushes
against the user's direction, and never adds more than ``level × max_speed``.
Its share of the command, ``|a| / |u + a|``, is the assistance level reported
every tick; a better decoder (stronger, straighter intents) needs less of it.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class AssistConfig(BaseModel):
    """Settings of :func:`assist_as_needed`.

    Attributes
    ----------
    level : float
        0 (off) .. 1 (full): scales the assistance.
    max_speed : float
        Largest assistance (norm), rad/s in joint space, m/s in end-point space.
    preferred_speed : float
        ``v_pref`` of the needed-speed profile.
    gain : float
        ``k`` of the needed-speed profile, 1/s.
    min_intent : float
        Intents weaker than this are no attempt: no assistance.
    max_angle_deg : float
        The intent must point within this angle of the goal direction.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: float = Field(1.0, ge=0, le=1)
    max_speed: float = Field(0.25, ge=0)
    preferred_speed: float = Field(0.5, gt=0)
    gain: float = Field(2.5, gt=0)
    min_intent: float = Field(0.03, ge=0)
    max_angle_deg: float = Field(60.0, gt=0, le=90)


def needed_speed(distance: float, cfg: AssistConfig) -> float:
    """``v_pref · tanh(k d / v_pref)``."""
    return cfg.preferred_speed * math.tanh(cfg.gain * max(distance, 0.0) / cfg.preferred_speed)


def assist_as_needed(intent: np.ndarray, position: np.ndarray, goal: np.ndarray | None,
                     cfg: AssistConfig, level: float | None = None) -> np.ndarray:
    """The assistance component ``a`` (same space as ``intent``); zeros when none is due.

    ``level`` overrides ``cfg.level`` (e.g. an operator's ``assist`` event).
    """
    u = np.asarray(intent, dtype=float)
    zero = np.zeros_like(u)
    lvl = cfg.level if level is None else float(level)
    if goal is None or lvl <= 0 or cfg.max_speed <= 0:
        return zero
    delta = np.asarray(goal, dtype=float) - np.asarray(position, dtype=float)
    d = float(np.linalg.norm(delta))
    speed = float(np.linalg.norm(u))
    if not (math.isfinite(d) and math.isfinite(speed)) or d < 1e-9 or speed < cfg.min_intent:
        return zero
    g_hat = delta / d
    toward = float(u @ g_hat)
    if toward < speed * math.cos(math.radians(cfg.max_angle_deg)):
        return zero  # not pointing toward the goal: the user means something else
    short = needed_speed(d, cfg) - toward
    if short <= 0:
        return zero
    return (min(lvl, 1.0) * min(short, cfg.max_speed)) * g_hat

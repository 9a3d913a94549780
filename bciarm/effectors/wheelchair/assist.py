"""Shared control: obstacle-aware speed scaling, steering assistance and a hard collision guard.

Everything works on obstacle points in the chair frame (x forward, y left,
metres), from the range sensor (plus a short memory of recent scans, so
that thin features such as a door jamb between two beams are not
forgotten), and on the chair's footprint rectangle ``x in [-rear, front],
|y| <= half_width``.

Assistance, scaled by the assistance level ``level`` in [0, 1] (0 = off):

* **speed scaling** — the forward (backward) speed is scaled down as the
  free distance ahead (behind) shrinks below ``slow_distance``;
* **repulsion** — near an obstacle (closer than ``influence``) on one side,
  a turn away from it, growing as the gap closes;
* **doorway centring** — in a narrow passage ahead (free width below
  ``passage_width``), a turn toward the middle of the gap.

* **doorway assistance** — when a turn is blocked (the chair is in a
  doorway and its corners would touch the jambs), a slow creep
  (``creep_speed`` × level) the way the user is going (either way when they
  only turn) is offered with the turn, or straight on instead of it.

All of these vanish in open space (nothing within ``influence`` /
``slow_distance``, no narrow passage), where the user's intent keeps full
authority.

**Collision guard** (always on, whatever the level): the command is scaled
down (both v and ω, so the path's curvature is kept) until the chair's
footprint, inflated by ``margin``, swept along the commanded arc for the
distance and angle it needs to stop (:func:`~bciarm.effectors.wheelchair.motion.stopping_bound`
plus one tick), gets no closer to any obstacle point already inside that
margin.  Motion that moves away from an obstacle is always allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class AssistConfig(BaseModel):
    """Settings of :class:`SharedControl` (all have working defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: float = Field(1.0, ge=0, le=1, description="Assistance level, 0 (off) to 1.")
    margin: float = Field(0.05, gt=0, description="Collision guard margin around the footprint, m.")
    slow_distance: float = Field(1.0, gt=0, description="Speed scaling starts this far, m.")
    min_speed_scale: float = Field(0.3, gt=0, le=1,
                                   description="Speed scaling never goes below this fraction.")
    influence: float = Field(0.45, gt=0, description="Repulsion acts within this distance, m.")
    repulsion_gain: float = Field(0.8, ge=0, description="Turn rate of full repulsion, rad/s.")
    passage_width: float = Field(1.25, gt=0,
                                 description="A gap ahead narrower than this is a doorway, m.")
    lookahead: float = Field(1.0, gt=0, description="Doorway search distance ahead, m.")
    centring_gain: float = Field(2.5, ge=0, description="Centring turn rate per m offset, rad/s/m.")
    samples: int = Field(10, ge=2, le=50, description="Poses checked along the stopping arc.")
    creep_speed: float = Field(0.15, ge=0, description="Forward creep offered when a turn is "
                                                        "blocked (scaled by the level), m/s.")


@dataclass(frozen=True)
class Footprint:
    """Chair footprint rectangle in the chair frame (m)."""

    front: float
    rear: float
    half_width: float

    def distance(self, pts: np.ndarray) -> np.ndarray:
        """Distance of each point (N, 2) to the rectangle (0 inside)."""
        dx = np.maximum(np.maximum(-self.rear - pts[:, 0], pts[:, 0] - self.front), 0.0)
        dy = np.maximum(np.abs(pts[:, 1]) - self.half_width, 0.0)
        return np.hypot(dx, dy)

    @property
    def radius(self) -> float:
        """Circumradius about the chair origin."""
        return math.hypot(max(self.front, self.rear), self.half_width)


@dataclass(frozen=True)
class AssistOutput:
    """Assisted command and what acted.

    Attributes
    ----------
    v, w : float
        Forward speed (m/s) and turn rate (rad/s) after assistance and guard.
    guards : tuple of str
        ``"slow"``, ``"repulsion"``, ``"centring"``, ``"obstacle"``.
    clearance : float
        Smallest footprint-to-point distance seen (m; inf with no points).
    """

    v: float
    w: float
    guards: tuple[str, ...]
    clearance: float


def arc_poses(v: float, w: float, dist: float, angle: float, n: int) -> np.ndarray:
    """Poses (n, 3) ``(x, y, θ)`` along a constant-curvature arc to ``(dist, angle)``.

    ``dist`` is travelled with the sign of ``v`` and ``angle`` with the sign of ``w``.
    """
    f = np.arange(1, n + 1) / n
    s = math.copysign(dist, v) * f
    th = math.copysign(angle, w) * f
    small = np.abs(th) < 1e-6
    safe = np.where(small, 1.0, th)
    x = np.where(small, s, s * np.sin(safe) / safe)
    y = np.where(small, 0.5 * s * th, s * (1 - np.cos(safe)) / safe)
    return np.c_[x, y, th]


class SharedControl:
    """Obstacle-aware assistance and collision guard (see the module docstring).

    Parameters
    ----------
    footprint : Footprint
    config : AssistConfig
    """

    def __init__(self, footprint: Footprint, config: AssistConfig | None = None) -> None:
        self.footprint = footprint
        self.config = config or AssistConfig()
        self.level = self.config.level

    # ------------------------------------------------------------------ helpers

    def _swept_collides(self, pts: np.ndarray, d_now: np.ndarray, v: float, w: float,
                        dist: float, angle: float) -> bool:
        """True if sweeping the footprint along the stopping arc drives into a point."""
        fp, m = self.footprint, self.config.margin
        if dist <= 0 and angle <= 0:
            return False
        close = d_now < m + dist + angle * fp.radius  # only these can be reached
        if not np.any(close):
            return False
        pts, d_now = pts[close], d_now[close]
        poses = arc_poses(v, w, dist, angle, self.config.samples)
        c, s = np.cos(poses[:, 2])[:, None], np.sin(poses[:, 2])[:, None]
        rx = pts[None, :, 0] - poses[:, 0:1]
        ry = pts[None, :, 1] - poses[:, 1:2]
        lx, ly = c * rx + s * ry, -s * rx + c * ry
        dx = np.maximum(np.maximum(-fp.rear - lx, lx - fp.front), 0.0)
        dy = np.maximum(np.abs(ly) - fp.half_width, 0.0)
        d = np.hypot(dx, dy)
        # Inside the margin and closer than now: that motion drives into it.
        return bool(np.any((d < m) & (d < d_now[None, :] - 1e-4)))

    def step(self, pts: np.ndarray, v: float, w: float, v_max: float, w_max: float,
             stop_dist, stop_angle) -> AssistOutput:
        """Assist and guard a desired command.

        Parameters
        ----------
        pts : ndarray, shape (N, 2)
            Obstacle points, chair frame.
        v, w : float
            Desired forward speed (m/s) and turn rate (rad/s).
        v_max, w_max : float
            The active profile's forward speed and turn-rate limits.
        stop_dist, stop_angle : callable
            ``stop_dist(|v|)`` and ``stop_angle(|w|)``: distance (m) and
            angle (rad) needed to stop from that speed / turn rate, one
            control tick included.
        """
        cfg, fp = self.config, self.footprint
        level = self.level
        guards: list[str] = []
        if pts.size == 0:
            return AssistOutput(v, w, (), math.inf)
        d_now = fp.distance(pts)
        clearance = float(d_now.min())
        px, py = pts[:, 0], pts[:, 1]

        if level > 0:
            # Speed scaling on the free distance ahead (behind) in the swept lane.
            lane = np.abs(py) <= fp.half_width + 0.1
            if v > 0:
                ahead = px[lane & (px > fp.front)] - fp.front
            else:
                ahead = -px[lane & (px < -fp.rear)] - fp.rear
            free = float(ahead.min()) if ahead.size else math.inf
            scale = min(1.0, max(cfg.min_speed_scale, (free - cfg.margin) / cfg.slow_distance))
            if scale < 1.0 and v != 0.0:
                v *= 1.0 - level * (1.0 - scale)
                guards.append("slow")

            moving = min(1.0, abs(v) / v_max)
            # Repulsion: turn away from the nearer side (front half of the chair).
            near = (d_now < cfg.influence) & (px > -0.2 * fp.rear)
            if moving > 0 and np.any(near):
                push = (cfg.influence - d_now) / cfg.influence
                left = float(push[near & (py > 0)].max(initial=0.0))
                right = float(push[near & (py < 0)].max(initial=0.0))
                w_rep = level * cfg.repulsion_gain * (right - left) * moving * math.copysign(1, v)
                if w_rep != 0.0:
                    w += w_rep
                    guards.append("repulsion")

            # Doorway centring: a narrow gap ahead -> steer toward its middle.
            win = (px > 0.0) & (px < fp.front + cfg.lookahead)
            lside = py[win & (py > 0)]
            rside = -py[win & (py < 0)]
            if v > 0 and lside.size and rside.size:
                gap_l, gap_r = float(lside.min()), float(rside.min())
                if gap_l + gap_r < cfg.passage_width and gap_l > 0.05 and gap_r > 0.05:
                    offset = 0.5 * (gap_l - gap_r)  # >0: more room on the left
                    w += level * cfg.centring_gain * offset * moving
                    guards.append("centring")
            w = max(-w_max, min(w_max, w))

        # Collision guard: bisection on a common scale of (v, w); if no part of
        # the commanded arc is free, fall back to rolling straight (leaving a
        # doorway before turning), then to turning on the spot.
        if not self._swept_collides(pts, d_now, v, w, stop_dist(abs(v)), stop_angle(abs(w))):
            return AssistOutput(v, w, tuple(guards), clearance)
        guards.append("obstacle")
        candidates = [(v, w), (v, 0.0), (0.0, w)]
        if level > 0 and w != 0.0:
            # Doorway assistance: a turn blocked by the jambs is often freed by
            # rolling on a little, straight out of the doorway: offer a slow
            # creep the way the user is going (either way if they only turn).
            creep = level * cfg.creep_speed
            ways = (1.0, -1.0) if abs(v) < 1e-9 else (math.copysign(1.0, v),)
            for sign in ways:
                c = sign * max(creep, abs(v))
                candidates += [(sign * creep, w), (c, 0.0)]
        for cv, cw in candidates:
            if cv == 0.0 and cw == 0.0:
                continue
            s = self._largest_scale(pts, d_now, cv, cw, stop_dist, stop_angle)
            if s > 0.0:
                return AssistOutput(s * cv, s * cw, tuple(guards), clearance)
        return AssistOutput(0.0, 0.0, tuple(guards), clearance)

    def _largest_scale(self, pts: np.ndarray, d_now: np.ndarray, v: float, w: float,
                       stop_dist, stop_angle) -> float:
        """Largest s in [0, 1] (bisection, 1/128 resolution) whose arc is free."""
        if not self._swept_collides(pts, d_now, v, w, stop_dist(abs(v)), stop_angle(abs(w))):
            return 1.0
        lo, hi = 0.0, 1.0
        for _ in range(7):
            mid = 0.5 * (lo + hi)
            if self._swept_collides(pts, d_now, mid * v, mid * w, stop_dist(abs(mid * v)),
                                    stop_angle(abs(mid * w))):
                hi = mid
            else:
                lo = mid
        return lo

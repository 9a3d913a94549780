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

**Collision guard** (always on, whatever the level): the footprint,
inflated by ``margin``, is swept along the commanded arc for the distance
and angle the chair needs to stop
(:func:`~bciarm.effectors.wheelchair.motion.stopping_bound` plus one tick);
a command is *free* when that sweep gets no closer to any obstacle point
already inside the margin (and brings none inside it).  A command that is
not free is cut back only in the components that close in on an obstacle:

1. the largest common scale of (v, ω) that is free (keeps the curvature);
2. then each component on its own is given back as far as it stays free,
   the other held (forward motion along a door jamb keeps its speed while
   the turn that would swing a corner into the jamb is vetoed);
3. the same from pure forward motion and from a pure turn, and the result
   closest to the command (relative to the profile's limits) is taken.

So turning in place away from or along a jamb and backing out of a
doorway stay possible; the guard only ever removes motion (the user's
command, possibly assisted, is scaled per component between 0 and 1), and
it never adds any: with assistance off, a chair that cannot move the way
the user asks stands still until they ask for another way.
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

        # Collision guard (module docstring).
        def free(cv: float, cw: float) -> bool:
            return not self._swept_collides(pts, d_now, cv, cw, stop_dist(abs(cv)),
                                            stop_angle(abs(cw)))

        if free(v, w):
            return AssistOutput(v, w, tuple(guards), clearance)
        guards.append("obstacle")
        gv, gw = self._cut_back(free, v, w, v_max, w_max)
        if (gv, gw) == (0.0, 0.0) and level > 0 and w != 0.0:
            # Doorway assistance: a turn blocked by the jambs is often freed by
            # rolling on a little, straight out of the doorway: offer a slow
            # creep the way the user is going (either way if they only turn).
            creep = level * cfg.creep_speed
            ways = (1.0, -1.0) if abs(v) < 1e-9 else (math.copysign(1.0, v),)
            for sign in ways:
                c = sign * max(creep, abs(v))
                for cv, cw in ((sign * creep, w), (c, 0.0)):
                    k = _largest(lambda t, cv=cv, cw=cw: free(t * cv, t * cw))
                    if k > 0.0:
                        return AssistOutput(k * cv, k * cw, tuple(guards), clearance)
        return AssistOutput(gv, gw, tuple(guards), clearance)

    @staticmethod
    def _cut_back(free, v: float, w: float, v_max: float, w_max: float) -> tuple[float, float]:
        """The free command ``(a·v, b·w)``, a and b in [0, 1], closest to ``(v, w)``.

        Greedy from three starting points (the largest common scale, pure
        forward motion, a pure turn), each component then given back on its
        own as far as it stays free; the least cut-back result wins.
        """
        s = _largest(lambda t: free(t * v, t * w))
        seeds = [(s, s)]
        if s < 1.0 and v != 0.0 and w != 0.0:
            seeds += [(_largest(lambda t: free(t * v, 0.0)), 0.0),
                      (0.0, _largest(lambda t: free(0.0, t * w)))]
        best: tuple[float, float, float] | None = None
        for a, b in seeds:
            if v != 0.0 and a < 1.0:
                a += (1.0 - a) * _largest(lambda t, a=a, b=b: free((a + (1.0 - a) * t) * v, b * w))
            if w != 0.0 and b < 1.0:
                b += (1.0 - b) * _largest(lambda t, a=a, b=b: free(a * v, (b + (1.0 - b) * t) * w))
            cost = (1.0 - a) * abs(v) / v_max + (1.0 - b) * abs(w) / w_max
            if best is None or cost < best[0] - 1e-12:
                best = (cost, a, b)
        assert best is not None
        return best[1] * v, best[2] * w


def _largest(is_free, steps: int = 7) -> float:
    """Largest t in [0, 1] with ``is_free(t)`` (bisection, 2**-steps resolution; 0 assumed free)."""
    if is_free(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if is_free(mid):
            lo = mid
        else:
            hi = mid
    return lo

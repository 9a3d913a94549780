"""Jerk-limited motion of one axis (forward speed or turn rate) and stopping figures.

:class:`JerkLimiter` moves a velocity toward a target with bounded
acceleration (``accel`` while speeding up, ``decel`` while slowing down) and
bounded jerk, so that a wheelchair never lurches: acceleration itself ramps.
It brakes so as to arrive at the target with zero acceleration (the
acceleration is kept below ``sqrt(2 * jerk * |error|)``, the largest from
which it can still be wound down to zero on arrival).

:func:`stopping_distance` simulates the limiter from a speed to rest (the
figure the watchdog and the obstacle guard rely on), and
:func:`stopping_bound` is a closed-form upper bound of it that also covers a
chair that is still accelerating when it must brake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class JerkLimiter:
    """One axis: velocity ``v`` and acceleration ``a``, limited in acceleration and jerk.

    Parameters
    ----------
    accel : float
        Largest acceleration while speeding up (|v| growing), units/s².
    decel : float
        Largest deceleration while slowing down, units/s².
    jerk : float
        Largest change of acceleration per second, units/s³.
    v, a : float
        Initial velocity and acceleration.
    """

    accel: float
    decel: float
    jerk: float
    v: float = 0.0
    a: float = 0.0

    def step(self, target: float, dt: float) -> float:
        """Advance ``dt`` seconds toward ``target``; return the new velocity."""
        e = target - self.v
        if abs(e) <= self.jerk * dt * dt and abs(self.a) <= self.jerk * dt:
            self.v, self.a = float(target), 0.0
            return self.v
        speeding_up = self.v * e > 0 or (self.v == 0.0 and self.v * target >= 0)
        limit = self.accel if speeding_up else self.decel
        if self.v * target < 0:
            # Through zero to the other side: arrive at v = 0 with no more than
            # ``accel`` (jerk-limited, the acceleration cannot drop at once).
            limit = min(limit, math.sqrt(self.accel ** 2 + 2.0 * self.jerk * abs(self.v))
                        - self.jerk * dt)
            limit = max(limit, self.accel)
        # Largest |a| from which the jerk limit still lets a reach 0 on arrival
        # (discrete: the wind-down itself moves v by a*dt/2 per tick less).
        reach = math.sqrt(2.0 * self.jerk * abs(e)) - 0.5 * self.jerk * dt
        a_des = math.copysign(max(0.0, min(limit, reach)), e)
        da = max(-self.jerk * dt, min(self.jerk * dt, a_des - self.a))
        a = self.a + da
        v = self.v + a * dt
        if (target - v) * e < 0:  # would overshoot: land on the target
            v = target
            a = (v - self.v) / dt
            if abs(a - self.a) > self.jerk * dt:  # cannot land this tick without a jerk spike
                a = self.a + math.copysign(self.jerk * dt, a - self.a)
                v = self.v + a * dt
        self.v, self.a = float(v), float(a)
        return self.v

    def clamp(self, lo: float, hi: float, dt: float) -> bool:
        """Force ``v`` into ``[lo, hi]`` (emergency braking by a guard).  True if it acted."""
        if lo <= self.v <= hi:
            return False
        # The acceleration restarts from zero: the braking step itself is
        # the guard's (an emergency); the profile resumes from here.
        self.v = float(min(max(self.v, lo), hi))
        self.a = 0.0
        return True

    def reset(self) -> None:
        self.v, self.a = 0.0, 0.0


def stopping_distance(speed: float, decel: float, jerk: float, dt: float = 0.01,
                      reaction_s: float = 0.0) -> tuple[float, float]:
    """Distance and time to stop from ``speed`` (starting at zero acceleration).

    Simulates :class:`JerkLimiter` toward 0, after ``reaction_s`` at constant
    speed (e.g. the watchdog timeout).

    Returns
    -------
    distance : float
        Units of ``speed`` × s.
    time : float
        s, reaction included.
    """
    lim = JerkLimiter(accel=decel, decel=decel, jerk=jerk, v=abs(speed))
    d, t = abs(speed) * reaction_s, reaction_s
    while lim.v > 1e-9 or abs(lim.a) > 1e-9:
        v0 = lim.v
        lim.step(0.0, dt)
        d += 0.5 * (v0 + lim.v) * dt
        t += dt
        if t > 600:  # pragma: no cover - cannot happen for positive limits
            raise RuntimeError("stopping_distance did not converge")
    return d, t


def stopping_bound(speed: float, accel_now: float, decel: float, jerk: float) -> float:
    """Closed-form upper bound of the distance needed to stop.

    From ``speed`` (>= 0) with acceleration ``accel_now`` (positive: still
    speeding up): the acceleration first ramps from ``accel_now`` to
    ``-decel`` at ``jerk``, taking ``t1 = (max(a, 0) + decel) / jerk`` during
    which the speed is at most ``v_peak = speed + max(a, 0)**2 / (2 jerk)``;
    then braking at ``decel`` takes at most ``v_peak**2 / (2 decel)``.
    """
    a = max(accel_now, 0.0)
    v_peak = abs(speed) + a * a / (2.0 * jerk)
    t1 = (a + decel) / jerk
    return v_peak * t1 + v_peak * v_peak / (2.0 * decel)

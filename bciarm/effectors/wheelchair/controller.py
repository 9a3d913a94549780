"""Wheelchair control loop (no bus): intent (forward, turn) → guarded wheel velocities.

One control tick (:meth:`WheelchairController.update`):

1. read the chair: pose, velocity, range sensor, contact;
2. intent intake: invalid (non-finite, wrong size) rejected and dropped
   (brake now); e-stop latch; **watchdog** (no valid intent for
   ``watchdog_s``: the target becomes zero, reached along the
   jerk-limited deceleration profile, not an instant lock); clip to ±1;
   dead zone and idle handling (:mod:`.intake`);
3. scale to the active profile (indoor / outdoor): forward and backward
   speed, turn rate;
4. shared control (:mod:`.assist`): speed scaling, repulsion, doorway
   centring at the assistance level, and the always-on collision guard;
5. jerk-limited profile on v and ω (:mod:`.motion`: acceleration,
   deceleration and jerk limits);
6. differential drive: ``left = (v - ω b/2) / r``, ``right = (v + ω b/2) / r``
   (wheel radius r and track b read from the URDF) → ``driver.command_velocity``
   (which clamps to the URDF wheel speed limit) → ``driver.advance``.

A collision (contact with a wall or furniture) is reported (``"collision"``
guard, counted) and treated like a stale intent: the chair brakes.  An
e-stop commands zero wheel speed at full motor torque at once (the
chair's brakes) and latches until ``resume``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bciarm.effectors.safety import EStopLatch, as_finite_vector
from bciarm.effectors.wheelchair.assist import AssistConfig, Footprint, SharedControl
from bciarm.effectors.wheelchair.intake import IntentShaper
from bciarm.effectors.wheelchair.motion import JerkLimiter, stopping_bound, stopping_distance
from bciarm.effectors.wheelchair.profiles import PROFILES, DriveProfile

#: Guard names reported in EffectorState.guards (besides those of .assist).
INVALID, ESTOP, WATCHDOG, SPEED, IDLE, COLLISION = (
    "invalid", "estop", "watchdog", "speed", "idle", "collision")


class WheelchairConfig(BaseModel):
    """Settings of :class:`WheelchairController` (all have working defaults).

    Attributes
    ----------
    tick_s : float
        Control period, s.
    profile : str
        Active speed profile (``indoor`` or ``outdoor``, or a key of ``profiles``).
    profiles : dict
        Overrides / additions: profile name -> DriveProfile fields.
    stop_within_s : float
        The stop contract of a wheelchair: within this time of the last valid
        intent the watchdog has tripped and the chair is decelerating (target
        zero).  Braking to rest then follows the profile's jerk-limited
        deceleration (:meth:`WheelchairController.documented_stop`: indoor
        ~0.5 s from top speed): an occupied chair must not be stopped at the
        rate of an arm.
    watchdog_s : float, optional
        No valid intent for this long → decelerate to rest (profile limits).
        Default: derived, ``stop_within_s - tick_s`` (a tick to notice); if
        given, it must not exceed that.
    dead_zone, idle_s, wake, wake_s : float
        Intent dead zone and idle handling (:class:`~.intake.IntentShaper`).
    assist : AssistConfig
        Shared control; ``assist.level`` 0 turns assistance off (the
        collision guard stays on).
    memory_s : float
        Range scans are remembered this long (world frame) for the guard.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_s: float = Field(0.01, gt=0)
    profile: str = "indoor"
    profiles: dict[str, DriveProfile] = Field(default_factory=dict)
    stop_within_s: float = Field(0.1, gt=0)
    watchdog_s: float | None = Field(None, gt=0)
    dead_zone: float = Field(0.12, ge=0, lt=1)
    idle_s: float = Field(1.0, gt=0)
    wake: float = Field(0.35, ge=0)
    wake_s: float = Field(0.2, ge=0)
    assist: AssistConfig = Field(default_factory=AssistConfig)
    memory_s: float = Field(2.0, ge=0)

    @property
    def watchdog_timeout_s(self) -> float:
        """The watchdog trip time in force (``watchdog_s`` or the derived one), s."""
        return self.stop_within_s - self.tick_s if self.watchdog_s is None else self.watchdog_s

    @model_validator(mode="after")
    def _trips_in_time(self) -> WheelchairConfig:
        if self.stop_within_s < 2 * self.tick_s:
            raise ValueError(f"stop_within_s {self.stop_within_s} s must be at least two ticks "
                             f"({2 * self.tick_s} s)")
        if self.watchdog_s is not None and self.watchdog_s + self.tick_s > self.stop_within_s + 1e-9:
            raise ValueError(f"watchdog_s {self.watchdog_s} s + one tick exceeds stop_within_s "
                             f"{self.stop_within_s} s: leave watchdog_s unset (derived: "
                             f"{self.stop_within_s - self.tick_s:.3f} s) or raise stop_within_s")
        return self

    def drive_profile(self, name: str | None = None) -> DriveProfile:
        name = self.profile if name is None else name
        table = {**PROFILES, **self.profiles}
        if name not in table:
            raise ValueError(f"unknown profile {name!r}; profiles are {sorted(table)}")
        return table[name]


@dataclass(frozen=True, eq=False)
class WheelchairStatus:
    """What one tick did and the chair's state after it.

    Attributes
    ----------
    t_s : float
    pose : ndarray (3,)
        x, y (m), heading (rad).
    velocity : ndarray (3,)
        World linear velocity (m/s).
    forward, turn : float
        Measured forward speed (m/s) and turn rate (rad/s).
    command : ndarray (2,)
        Commanded (v, ω) after every guard.
    wheels, wheel_velocity : ndarray (2,)
        Wheel angles and speeds (rad, rad/s), left then right.
    ranges : ndarray
        Range-sensor readings (m).
    clearance : float
        True chair-to-layout distance (m).
    estopped, idle, collision : bool
    guards : tuple of str
    """

    t_s: float
    pose: np.ndarray
    velocity: np.ndarray
    forward: float
    turn: float
    command: np.ndarray
    wheels: np.ndarray
    wheel_velocity: np.ndarray
    ranges: np.ndarray
    clearance: float
    estopped: bool
    idle: bool
    collision: bool
    guards: tuple[str, ...]


class WheelchairController:
    """Bus-free wheelchair control loop around a wheelchair driver.

    Parameters
    ----------
    driver : PyBulletWheelchairDriver or compatible
        Needs, besides the Driver contract, ``geometry()``, ``pose()``,
        ``base_velocity()``, ``ranges()``, ``clearance()``, ``in_collision()``
        and ``sensor`` (beam angles).
    config : WheelchairConfig or dict, optional
    **overrides
        WheelchairConfig fields.
    """

    def __init__(self, driver: Any, config: WheelchairConfig | dict[str, Any] | None = None,
                 **overrides: Any) -> None:
        if isinstance(config, WheelchairConfig):
            config = config.model_dump() if overrides else config
        if not isinstance(config, WheelchairConfig):
            config = WheelchairConfig(**{**(config or {}), **overrides})
        self.config: WheelchairConfig = config
        self.driver = driver
        self.profile: DriveProfile = config.drive_profile()
        self.shaper = IntentShaper(config.dead_zone, config.idle_s, config.wake, config.wake_s)
        self.estop_latch = EStopLatch()
        self.v_axis = self._limiter_v()
        self.w_axis = self._limiter_w()
        self.rejected = 0
        self.collisions = 0
        self.now_s = 0.0
        self.last: WheelchairStatus | None = None
        self.assist: SharedControl | None = None
        self.geometry: dict[str, float] = {}
        self._intent: np.ndarray | None = None
        self._intent_t = -math.inf
        self._stale = False
        self._pending_invalid = False
        self._in_contact = False
        self._memory: deque[np.ndarray] = deque()
        self._memory_t: deque[float] = deque()
        self._started = False
        self._closed = False

    def _limiter_v(self) -> JerkLimiter:
        p = self.profile
        return JerkLimiter(p.accel, p.decel, p.jerk)

    def _limiter_w(self) -> JerkLimiter:
        p = self.profile
        return JerkLimiter(p.turn_accel, p.turn_decel, p.turn_jerk)

    # ------------------------------------------------------------------ lifecycle

    @property
    def estopped(self) -> bool:
        return self.estop_latch.latched

    def start(self, now_s: float = 0.0) -> WheelchairStatus:
        """Connect the driver, read the chair's geometry, report the first state."""
        if self._started:
            assert self.last is not None
            return self.last
        self.driver.connect()
        g = self.geometry = self.driver.geometry()
        self.assist = SharedControl(Footprint(g["front"], g["rear"], g["half_width"]),
                                    self.config.assist)
        self._angles = self.driver.sensor.angles()
        self.now_s = float(now_s)
        self._started = True
        self.last = self._status(now_s, np.zeros(2), (), self.driver.ranges())
        return self.last

    def close(self) -> None:
        """Stop and release the driver.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.driver.connected:
                self.driver.stop()
        finally:
            self.driver.close()

    # ------------------------------------------------------------------ commands

    def set_profile(self, name: str) -> None:
        """Switch speed profile; the current motion continues within the new limits."""
        self.profile = self.config.drive_profile(name)
        v, a, w, aw = self.v_axis.v, self.v_axis.a, self.w_axis.v, self.w_axis.a
        self.v_axis, self.w_axis = self._limiter_v(), self._limiter_w()
        self.v_axis.v, self.v_axis.a, self.w_axis.v, self.w_axis.a = v, a, w, aw

    def set_assist(self, level: float) -> None:
        """Set the assistance level (clipped to [0, 1])."""
        if self.assist is not None and math.isfinite(level):
            self.assist.level = min(1.0, max(0.0, float(level)))

    def offer_intent(self, intent: Any, now_s: float) -> bool:
        """Hand in an intent ``[forward, turn]`` received at ``now_s``.

        Returns False if rejected (non-finite, wrong size) or ignored (e-stop).
        An invalid intent also drops the held one: garbage brakes now.
        """
        if self.estopped:
            return False
        u = as_finite_vector(intent, 2)
        if u is None:
            self.rejected += 1
            self._pending_invalid = True
            self._intent = None
            return False
        self._intent = u
        self._intent_t = float(now_s)
        self._stale = False
        return True

    def intent_fresh(self, now_s: float) -> bool:
        return (self._intent is not None
                and now_s - self._intent_t <= self.config.watchdog_timeout_s)

    def estop(self, reason: str = "") -> None:
        """Latch the e-stop: zero wheel speed at full torque now, until :meth:`resume`."""
        self.estop_latch.trigger(reason)
        self._intent = None
        self.v_axis.reset()
        self.w_axis.reset()
        if self.driver.connected:
            self.driver.stop()

    def resume(self) -> bool:
        """Clear the e-stop; motion needs a fresh, deliberate intent (idle)."""
        self._intent = None
        self._stale = False
        self.shaper.reset()
        self.v_axis.reset()
        self.w_axis.reset()
        return self.estop_latch.resume()

    # ------------------------------------------------------------------ stopping figures

    def stop_distance(self, speed: float) -> float:
        """Distance (m) the guard reserves to stop from ``speed``: bound + one tick."""
        p = self.profile
        return stopping_bound(speed, max(self.v_axis.a * math.copysign(1, self.v_axis.v or 1), 0),
                              p.decel, p.jerk) + 2 * speed * self.config.tick_s

    def stop_angle(self, rate: float) -> float:
        p = self.profile
        return stopping_bound(rate, 0.0, p.turn_decel, p.turn_jerk) + 2 * rate * self.config.tick_s

    def documented_stop(self, profile: str | None = None) -> tuple[float, float]:
        """Stopping distance (m) and time (s) after intent loss at the profile's top speed.

        Watchdog delay at top speed, then the jerk-limited deceleration.
        """
        p = self.config.drive_profile(profile)
        return stopping_distance(p.max_forward, p.decel, p.jerk, self.config.tick_s,
                                 self.config.watchdog_timeout_s)

    # ------------------------------------------------------------------ the tick

    def _obstacles(self, pose: np.ndarray, ranges: np.ndarray, now_s: float) -> np.ndarray:
        """Obstacle points in the chair frame: this scan plus remembered ones."""
        sen = self.driver.sensor
        hit = ranges < sen.max_range - 1e-6
        x, y, th = pose
        a = self._angles[hit] + th
        world = np.c_[x + ranges[hit] * np.cos(a), y + ranges[hit] * np.sin(a)]
        if self.config.memory_s > 0 and (not self._memory_t
                                         or now_s - self._memory_t[-1] >= 0.05 - 1e-9):
            self._memory.append(world)
            self._memory_t.append(now_s)
            while self._memory_t and now_s - self._memory_t[0] > self.config.memory_s:
                self._memory.popleft()
                self._memory_t.popleft()
        pts = np.vstack([world, *self._memory]) if self._memory else world
        # Static scenes repeat the same points scan after scan: keep one per 2 cm cell.
        cells = np.round(pts / 0.02).astype(np.int64)
        _, keep = np.unique(cells[:, 0] * 1_000_003 + cells[:, 1], return_index=True)
        pts = pts[keep]
        rel = pts - (x, y)
        c, s = math.cos(th), math.sin(th)
        local = np.c_[c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]]
        reach = self.assist.footprint.radius + self.stop_distance(self.profile.max_forward) + 0.5
        return local[np.hypot(local[:, 0], local[:, 1]) < reach]

    def update(self, intent: Any = None, now_s: float | None = None) -> WheelchairStatus:
        """Run one control tick (see the module docstring)."""
        self._require_started()
        cfg, p = self.config, self.profile
        dt = cfg.tick_s
        now_s = self.now_s + dt if now_s is None else float(now_s)
        self.now_s = now_s
        if intent is not None:
            self.offer_intent(intent, now_s)
        guards: list[str] = []
        if self._pending_invalid:
            guards.append(INVALID)
            self._pending_invalid = False
        pose = np.array(self.driver.pose())
        ranges = self.driver.ranges()
        contact = bool(self.driver.in_collision())
        if contact and not self._in_contact:
            self.collisions += 1
        self._in_contact = contact
        if contact:
            guards.append(COLLISION)

        if self.estopped:
            self.driver.stop()
            self.driver.advance(dt)
            self.last = self._status(now_s, np.zeros(2), (*guards, ESTOP), ranges)
            return self.last

        u: np.ndarray | None = None
        if self._intent is not None:
            if now_s - self._intent_t <= cfg.watchdog_timeout_s:
                u = self._intent
            else:
                self._intent = None
                self._stale = True
        if self._stale:
            guards.append(WATCHDOG)
        if u is not None and np.any(np.abs(u) > 1.0):
            u = np.clip(u, -1.0, 1.0)
            guards.append(SPEED)
        if contact:
            u = None  # a bump brakes like a lost intent
        shaped = self.shaper.shape(u, now_s)
        if self.shaper.idle:
            guards.append(IDLE)
        v_des = shaped[0] * (p.max_forward if shaped[0] >= 0 else p.max_backward)
        w_des = shaped[1] * p.max_turn

        pts = self._obstacles(pose, ranges, now_s)
        out = self.assist.step(pts, v_des, w_des, p.max_forward, p.max_turn,
                               self.stop_distance, self.stop_angle)
        guards.extend(out.guards)
        v = self.v_axis.step(out.v, dt)
        w = self.w_axis.step(out.w, dt)
        # The profile may not follow the guard in time (an obstacle seen late, or
        # a turn the guard vetoes while the turn rate is still ramping down, which
        # would swing a corner on): if what the limiters would do now is not free,
        # the guard brakes harder than the comfort limits (safety over comfort),
        # both the speed and the turn rate, to what it allowed.
        if "obstacle" in out.guards and (abs(v) > abs(out.v) + 1e-9 or v * out.v < 0
                                         or abs(w) > abs(out.w) + 1e-9 or w * out.w < 0):
            lim = self.assist._swept_collides(pts, self.assist.footprint.distance(pts), v, w,
                                              self.stop_distance(abs(v)), self.stop_angle(abs(w)))
            if lim:
                if out.v * v >= 0:
                    self.v_axis.clamp(min(out.v, 0.0), max(out.v, 0.0), dt)
                    v = self.v_axis.v
                self.w_axis.clamp(min(out.w, 0.0), max(out.w, 0.0), dt)
                w = self.w_axis.v
                guards.append("obstacle_brake")
        g = self.geometry
        half = 0.5 * g["track"]
        wheels = np.array([(v - w * half) / g["wheel_radius"], (v + w * half) / g["wheel_radius"]])
        self.driver.command_velocity(wheels)
        self.driver.advance(dt)
        self.last = self._status(now_s, np.array([v, w]), tuple(dict.fromkeys(guards)), ranges)
        return self.last

    def _status(self, now_s: float, command: np.ndarray, guards: tuple[str, ...],
                ranges: np.ndarray) -> WheelchairStatus:
        d = self.driver
        x, y, th = d.pose()
        vx, vy, wz = d.base_velocity()
        js = d.read()
        return WheelchairStatus(
            t_s=now_s, pose=np.array([x, y, th]), velocity=np.array([vx, vy, 0.0]),
            forward=vx * math.cos(th) + vy * math.sin(th), turn=wz, command=command,
            wheels=np.asarray(js.position, float), wheel_velocity=np.asarray(js.velocity, float),
            ranges=np.asarray(ranges, float), clearance=d.clearance(), estopped=self.estopped,
            idle=self.shaper.idle, collision=self._in_contact, guards=guards)

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("WheelchairController.start() has not been called")
        if self._closed:
            raise RuntimeError("WheelchairController is closed")

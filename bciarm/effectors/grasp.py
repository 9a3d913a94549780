"""Reach-and-grasp guards of the arm effector: gripper, wrist limits, reduced-speed zones.

Three pieces of the arm's safety chain (:class:`~bciarm.effectors.arm.ArmController`
runs them every tick, after the Cartesian guards and before the joint guards):

:class:`GripperGuard`
    Turns the gripper part of an intent -- the continuous aperture velocity
    (``grasp`` axis) and the discrete grasp/release command of a click
    decoder (:attr:`~bciarm.bus.messages.Intent.grasp`) -- into a finger
    velocity and force.  Guards: ``grip_force`` (the force never exceeds
    ``grip_force`` newtons: it is the finger motors' force cap, so a closing
    finger squeezes with exactly that), ``aperture_speed``, and the watchdog
    (a stale intent stops the fingers).  While the hand is *closed* (after a
    grasp command) it keeps squeezing whatever happens to the bus, e-stop
    included: a dead decoder must never make the hand drop a cup.  It also
    detects **drops**: an object held for a while that leaves the fingers
    without a release command (the ``drop`` guard and an event).

:class:`OrientationLimits`
    Bounds the wrist: tilt of the tool axis from its upright (home)
    direction at most ``max_tilt_deg`` and rotation about the vertical within
    ``±max_yaw_deg`` of home.  The angular velocity that would go further is
    scaled down to zero over a margin before the limit (guard ``orientation``),
    like the joint-limit margin; a pose already past a limit may only come back.

:class:`SpeedZone`
    ISO/TS 15066-style reduced speed near a person: within ``radius`` of a
    point (e.g. the mouth target of a drinking task) the end-effector speed is
    capped at ``max_speed`` (250 mm/s is the standard's reference; configure
    lower), and outside it the speed is held under a braking envelope so the
    arm enters the zone already at the reduced speed (guard ``speed_zone``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bciarm.bus.messages import GRASP_CLOSE, GRASP_NONE, GRASP_RELEASE
from bciarm.drivers.gripper import GripperLimits, GripperState
from bciarm.effectors.kinematics import quat_conjugate, quat_multiply
from bciarm.effectors.safety import clip_norm

# Guard names, as reported in EffectorState.guards.
GRIP_FORCE = "grip_force"
APERTURE_SPEED = "aperture_speed"
ORIENTATION = "orientation"
SPEED_ZONE = "speed_zone"
DROP = "drop"

#: A speed zone commands at most this fraction of its cap (see SpeedZone.allowed_speed).
ZONE_MARGIN = 0.97

#: Ticks an object must be gone from a closed hand before it counts as dropped.
DROP_DEBOUNCE_TICKS = 3

#: Hand modes (``EffectorState.extra``, see :data:`bciarm.effectors.arm.ARM_EXTRA`).
FREE, CLOSED, RELEASING = 0, 1, 2


class GripperParams(BaseModel):
    """Gripper settings of the arm effector.

    Attributes
    ----------
    grip_force : float
        Grip-force limit, N: the largest squeeze the fingers may exert.
    max_aperture_speed : float
        Aperture rate limit, m/s.
    close_speed : float
        Closing speed after a grasp command, m/s.
    open_speed : float
        Opening speed after a release command, m/s.
    release_aperture : float
        A release opens the hand to at least this aperture, m.
    drop_after_s : float
        An object counts as held (and its loss as a drop) once it was held
        this long, s (debounces contact chatter while closing).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    grip_force: float = Field(10.0, gt=0, le=200)
    max_aperture_speed: float = Field(0.1, gt=0)
    close_speed: float = Field(0.08, gt=0)
    open_speed: float = Field(0.08, gt=0)
    release_aperture: float = Field(0.07, gt=0)
    drop_after_s: float = Field(0.2, ge=0)


class WristParams(BaseModel):
    """Wrist settings: angular speed/acceleration and orientation limits.

    Attributes
    ----------
    max_angular_speed : float
        Cap on the commanded wrist angular velocity, rad/s.
    max_angular_accel : float
        Angular acceleration limit of the commanded wrist rate, rad/s².
    max_tilt_deg : float
        Largest angle between the tool axis and its home (upright) direction, deg.
    max_yaw_deg : float
        Rotation about the vertical allowed either side of home, deg.
    margin_deg : float
        Within this distance of a limit the rate toward it falls to zero, deg.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_angular_speed: float = Field(0.8, gt=0)
    max_angular_accel: float = Field(4.0, gt=0)
    max_tilt_deg: float = Field(45.0, gt=0, le=180)
    max_yaw_deg: float = Field(90.0, gt=0, le=180)
    margin_deg: float = Field(5.0, gt=0)


class SpeedZoneParams(BaseModel):
    """A reduced-speed zone around a point (world coordinates).

    Attributes
    ----------
    name : str
    centre : (x, y, z)
    radius : float
        Zone radius, m.
    max_speed : float
        Speed cap inside the zone, m/s (ISO/TS 15066 reference: 0.25).
    decel : float
        Deceleration of the braking envelope outside the zone, m/s².
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "zone"
    centre: tuple[float, float, float]
    radius: float = Field(0.15, gt=0)
    max_speed: float = Field(0.25, gt=0)
    decel: float = Field(0.5, gt=0)

    @field_validator("centre")
    @classmethod
    def _finite(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(c) for c in v):
            raise ValueError("centre must be three finite numbers (world x, y, z, m)")
        return v


# --------------------------------------------------------------------------- gripper


@dataclass(frozen=True)
class GripperCommand:
    """What the gripper guard sends: aperture rate (m/s) and force cap (N)."""

    velocity: float
    force: float
    guards: tuple[str, ...]


class GripperGuard:
    """Gripper control and guards (see the module docstring).

    Parameters
    ----------
    params : GripperParams
    limits : GripperLimits
        The hardware's; the configured force is clamped to them.
    tick_s : float
    """

    def __init__(self, params: GripperParams, limits: GripperLimits, tick_s: float) -> None:
        self.params = params
        self.limits = limits
        self.tick_s = float(tick_s)
        self.force_limit = min(params.grip_force, limits.max_force)
        self.max_speed = min(params.max_aperture_speed, limits.max_speed)
        self.mode = FREE
        self.drops = 0
        self.dropped: list[str] = []
        self._held_s = 0.0
        self._held_name = ""

    def command(self, aperture_velocity: float | None, click: int, fresh: bool,
                estopped: bool, state: GripperState) -> GripperCommand:
        """One tick: the new finger command from the latest intent and gripper reading.

        Parameters
        ----------
        aperture_velocity : float or None
            Continuous aperture velocity of the intent (m/s), None without a
            ``grasp`` axis.
        click : int
            Discrete command (``GRASP_NONE``, ``GRASP_RELEASE``, ``GRASP_CLOSE``).
        fresh : bool
            The intent is younger than the watchdog timeout.
        estopped : bool
        state : GripperState
            Reading before this tick.
        """
        p = self.params
        guards: list[str] = []
        if not estopped and fresh:
            if click == GRASP_CLOSE and self.mode != CLOSED:
                self.mode = CLOSED
            elif click == GRASP_RELEASE and self.mode == CLOSED:
                self.mode = RELEASING
        if self.mode == RELEASING and state.aperture >= min(p.release_aperture,
                                                             self.limits.max_aperture) - 1e-3:
            self.mode = FREE
        self._watch_drop(state)
        if self.mode == CLOSED:
            # Keep squeezing (also under e-stop or a stale bus): never let go by accident.
            v = -p.close_speed
        elif estopped or not fresh:
            v = 0.0
        elif self.mode == RELEASING:
            v = p.open_speed
        else:
            v = 0.0 if aperture_velocity is None or not math.isfinite(aperture_velocity) \
                else float(aperture_velocity)
        if abs(v) > self.max_speed:
            v = math.copysign(self.max_speed, v)
            guards.append(APERTURE_SPEED)
        if state.force > self.force_limit * 1.05:
            guards.append(GRIP_FORCE)  # the hardware reports more than allowed: say so
        if self._dropped_now:
            guards.append(DROP)
        return GripperCommand(v, self.force_limit, tuple(guards))

    def _watch_drop(self, state: GripperState) -> None:
        """Drop: an object held for ``drop_after_s`` leaves the closed hand.

        Contact may chatter for a tick or two while fingers settle, so the
        object must be gone for :data:`DROP_DEBOUNCE_TICKS` ticks in a row.
        """
        self._dropped_now = False
        if self.mode == CLOSED and state.holding:
            self._held_s += self.tick_s
            self._held_name = state.held or self._held_name
            self._lost_ticks = 0
            return
        if self.mode == CLOSED and self._held_s >= self.params.drop_after_s:
            self._lost_ticks += 1
            if self._lost_ticks < DROP_DEBOUNCE_TICKS:
                return
            self.drops += 1
            self.dropped.append(self._held_name)
            self._dropped_now = True
        self._held_s = 0.0
        self._lost_ticks = 0

    @property
    def dropped_now(self) -> bool:
        """The last :meth:`command` detected a drop."""
        return self._dropped_now

    _dropped_now = False
    _lost_ticks = 0


# --------------------------------------------------------------------------- wrist


def rotvec_from_quat(q: np.ndarray) -> np.ndarray:
    """Rotation vector (axis × angle, rad) of a unit quaternion (x, y, z, w)."""
    q = np.asarray(q, dtype=float)
    if q[3] < 0:
        q = -q
    s = float(np.linalg.norm(q[:3]))
    if s < 1e-12:
        return np.zeros(3)
    return q[:3] / s * (2.0 * math.atan2(s, q[3]))


def quat_from_rotvec(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation vector."""
    r = np.asarray(r, dtype=float)
    angle = float(np.linalg.norm(r))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    axis = r / angle
    return np.r_[axis * math.sin(angle / 2), math.cos(angle / 2)]


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    qv = np.r_[v, 0.0]
    return quat_multiply(quat_multiply(q, qv), quat_conjugate(q))[:3]


def relative_rotation(quat: np.ndarray, home: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) taking the home orientation to ``quat``."""
    return rotvec_from_quat(quat_multiply(np.asarray(quat, float), quat_conjugate(home)))


def tilt_and_yaw(quat: np.ndarray, home: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Tilt of the tool axis from home (rad), twist about the vertical (rad), tilt axis.

    The tool axis is the end-effector's z axis.  ``tilt`` is the angle
    between it and its home direction; the twist is the rotation about the
    world vertical of the swing-twist decomposition of the relative rotation.
    The tilt axis (unit, world) is the direction of angular velocity that
    increases the tilt (zero when upright).
    """
    rel = quat_multiply(np.asarray(quat, float), quat_conjugate(np.asarray(home, float)))
    if rel[3] < 0:
        rel = -rel
    z_home = _rotate(np.asarray(home, float), np.array([0.0, 0.0, 1.0]))
    z_now = _rotate(np.asarray(quat, float), np.array([0.0, 0.0, 1.0]))
    cross = np.cross(z_home, z_now)
    tilt = math.atan2(float(np.linalg.norm(cross)), float(np.dot(z_home, z_now)))
    n = np.linalg.norm(cross)
    axis = cross / n if n > 1e-9 else np.zeros(3)
    yaw = 2.0 * math.atan2(rel[2], rel[3])
    yaw = (yaw + math.pi) % (2 * math.pi) - math.pi
    return tilt, yaw, axis


class OrientationLimits:
    """Wrist guard: tilt and vertical-twist limits on the commanded angular velocity.

    Parameters
    ----------
    params : WristParams
    home : ndarray, shape (4,)
        Upright (home) orientation, quaternion (x, y, z, w).
    """

    def __init__(self, params: WristParams, home: np.ndarray) -> None:
        self.params = params
        self.home = np.asarray(home, dtype=float)
        self.max_tilt = math.radians(params.max_tilt_deg)
        self.max_yaw = math.radians(params.max_yaw_deg)
        self.margin = math.radians(params.margin_deg)

    def limit(self, omega: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, bool]:
        """Scale down the parts of ``omega`` that head past a limit at orientation ``quat``."""
        omega = np.asarray(omega, dtype=float).copy()
        tilt, yaw, axis = tilt_and_yaw(quat, self.home)
        acted = False
        # Tilt: the component along the tilt axis increases the tilt.
        if axis.any():
            rate = float(omega @ axis)
            if rate > 0:
                room = self.max_tilt - tilt
                scale = min(max(room / self.margin, 0.0), 1.0)
                if scale < 1.0:
                    omega -= (1.0 - scale) * rate * axis
                    acted = True
        # Twist about the vertical.
        wz = omega[2]
        room = self.max_yaw - abs(yaw)
        if wz * yaw > 0:
            scale = min(max(room / self.margin, 0.0), 1.0)
            if scale < 1.0:
                omega[2] = wz * scale
                acted = True
        return omega, acted


# --------------------------------------------------------------------------- speed zones


class SpeedZone:
    """Reduced speed near a point (see the module docstring)."""

    def __init__(self, params: SpeedZoneParams, tick_s: float) -> None:
        self.params = params
        self.centre = np.asarray(params.centre, dtype=float)
        self.tick_s = float(tick_s)

    def allowed_speed(self, x: np.ndarray) -> float:
        """Speed allowed at ``x``: ``max_speed`` inside, a braking envelope outside.

        Outside the zone the speed (any direction: a fast sideways pass must
        also slow down before it cuts through the zone) is held under
        ``sqrt(max_speed² + 2 * decel * d)``, ``d`` the distance to the zone's
        edge less one tick of travel, so the arm crosses the edge at no more
        than ``max_speed`` while braking at ``decel``.
        """
        p = self.params
        # The command aims 3 % under the cap: the measured speed lags a
        # commanded deceleration by a physics step (measured: 0.14 % over
        # without the margin), and the cap is a "never above".
        v_cap = ZONE_MARGIN * p.max_speed
        d = float(np.linalg.norm(self.centre - np.asarray(x, dtype=float))) - p.radius
        if d <= 0:
            return v_cap
        d = max(d - v_cap * self.tick_s, 0.0)
        return math.sqrt(v_cap ** 2 + 2.0 * p.decel * d)

    def limit(self, v: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """Cap the linear velocity ``v`` (m/s) of an end-effector at ``x``."""
        return clip_norm(v, self.allowed_speed(x))


def speed_zones(params: list[SpeedZoneParams] | tuple[Any, ...], tick_s: float) -> list[SpeedZone]:
    """Guards for the configured zones."""
    return [SpeedZone(z, tick_s) for z in params]


__all__ = [
    "APERTURE_SPEED",
    "CLOSED",
    "DROP",
    "FREE",
    "GRASP_NONE",
    "GRIP_FORCE",
    "ORIENTATION",
    "RELEASING",
    "SPEED_ZONE",
    "GripperCommand",
    "GripperGuard",
    "GripperParams",
    "OrientationLimits",
    "SpeedZone",
    "SpeedZoneParams",
    "WristParams",
    "quat_from_rotvec",
    "relative_rotation",
    "rotvec_from_quat",
    "speed_zones",
    "tilt_and_yaw",
]

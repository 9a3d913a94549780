"""The safety chain: guards between a movement intent and a device command.

Pure NumPy, no device or bus, so every guard is unit-testable and shared by
all effectors (arm, exoskeleton, wheelchair).  Two stages:

:class:`CartesianSafety` (task space, runs on the intent)
    ``invalid`` (non-finite / wrong size intent: rejected, counted, treated as
    no intent) → ``estop`` latch (zero at once) → ``watchdog`` (no valid intent
    for ``watchdog_s``: target zero) → ``speed`` clamp → ``workspace`` box
    (braking envelope: never heads for a wall faster than it can stop before
    it, and never crosses it in the next tick) → ``accel`` limit (so the
    watchdog and every other change brake at ``max_accel``, not instantly).

:class:`JointSafety` (joint space, runs on the joint velocity command)
    ``joint_invalid`` → ``estop`` → ``joint_limit`` margin (velocity toward a
    limit scaled down linearly to zero inside the margin) → ``joint_speed``
    clamp → ``joint_accel`` limit → ``joint_limit`` hard stop (never past a
    limit in the next tick).

Each ``step`` returns the command and the names of the guards that acted, so
an effector can report them (``EffectorState.guards``).  Guards hold whatever
comes in: NaN, Inf, 1e308, wrong sizes.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Guard names, as reported in EffectorState.guards.
INVALID = "invalid"
ESTOP = "estop"
WATCHDOG = "watchdog"
SPEED = "speed"
WORKSPACE = "workspace"
ACCEL = "accel"
JOINT_INVALID = "joint_invalid"
JOINT_LIMIT = "joint_limit"
JOINT_SPEED = "joint_speed"
JOINT_ACCEL = "joint_accel"


# --------------------------------------------------------------------------- helpers


def as_finite_vector(values: Any, n: int) -> np.ndarray | None:
    """``values`` as a float vector of ``n`` finite entries, or None if it is not one."""
    if type(values) is np.ndarray and values.shape == (n,) and values.dtype == np.float64:
        # Fast path for the common case (a control tick calls this several times).
        return values.copy() if np.isfinite(values).all() else None
    try:
        a = np.array(values, dtype=float)
    except (TypeError, ValueError, OverflowError):
        return None
    if a.ndim > 1 or (a.ndim == 0 and n != 1):
        return None
    a = a.reshape(-1)
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        return None
    return a


def clip_norm(v: np.ndarray, max_norm: float) -> tuple[np.ndarray, bool]:
    """Scale ``v`` down to Euclidean norm ``max_norm``, keeping its direction.

    Overflow-safe: works for entries up to the float maximum (``math.hypot``
    does not overflow on ``[1e308, 1e308]``; if even the norm is infinite we
    normalise by the largest entry first).  Scalar math on purpose: this runs
    several times per control tick on 3- to 7-vectors, where NumPy's call
    overhead dominates.

    Returns
    -------
    v : ndarray
        The clipped vector (a new array).
    clipped : bool
        True if it had to be scaled.
    """
    v = np.asarray(v, dtype=float)
    length = math.hypot(*v.ravel().tolist())
    if length <= max_norm:  # NaN compares False and is scaled below
        return v.copy(), False
    if length == 0.0:
        return np.zeros_like(v), False
    if math.isinf(length):
        big = float(np.max(np.abs(v)))
        unit = v / big
        return unit * (max_norm / math.hypot(*unit.ravel().tolist())), True
    return v * (max_norm / length), True


def braking_speed(distance: np.ndarray, decel: float, dt: float) -> np.ndarray:
    """Largest speed from which braking at ``decel`` stops within ``distance``.

    Discrete-time, exact for a command held for ``dt`` and reduced by
    ``decel*dt`` each tick: from speed ``v`` the distance covered while braking
    is ``dt * sum_i max(v - i*decel*dt, 0)``.  Keeping the speed toward a wall
    at or under this envelope guarantees the wall is never crossed (it
    includes the next tick: ``v <= distance/dt``).  Non-positive distances
    give 0.
    """
    d = np.maximum(np.asarray(distance, dtype=float), 0.0)
    u = decel * dt
    # Largest whole number of braking ticks n with dt*u*n(n+1)/2 <= d.
    n = np.floor((-1.0 + np.sqrt(1.0 + 8.0 * d / (dt * u))) / 2.0)
    n = np.maximum(n, 0.0)
    return d / (dt * (n + 1.0)) + u * n / 2.0


# --------------------------------------------------------------------------- stop contract


def braking_time_s(top_speed: float, decel: float, tick_s: float) -> float:
    """Time to brake from ``top_speed`` at ``decel``, in whole ticks (at least one), s."""
    ticks = math.ceil(top_speed / (decel * tick_s) - 1e-9)
    return max(ticks, 1) * tick_s


def watchdog_in_force_s(watchdog_s: float | None, stop_within_s: float, tick_s: float,
                        braking_s: float) -> float:
    """The watchdog trip time in force: ``watchdog_s``, or what the stop contract leaves
    once a tick to notice and the braking are taken off ``stop_within_s``, s."""
    if watchdog_s is not None:
        return float(watchdog_s)
    return stop_within_s - tick_s - braking_s


def check_stop_contract(*, stopping: str, top_speed: float, decel: float, accel: float,
                        unit: str, tick_s: float, stop_within_s: float,
                        watchdog_s: float | None, fix: str, digits: int = 1) -> None:
    """Raise ``ValueError`` (a config error naming the fix) if a device braking at
    ``decel`` from ``top_speed`` cannot meet ``stop_within_s``: the watchdog trips,
    a tick may pass before it is noticed, then the brake ramp runs in whole ticks.

    ``stopping`` names what is stopped, e.g. "the arm from max_speed 0.25 m/s";
    ``unit`` is the deceleration's unit ("" for none); ``fix`` qualifies the
    suggested deceleration (e.g. "if the device can brake that hard").
    """
    u = f" {unit}" if unit else ""
    if decel < accel:
        raise ValueError(f"max_decel ({decel}{u}) must be at least max_accel ({accel}{u})")
    braking_s = braking_time_s(top_speed, decel, tick_s)
    need = tick_s + braking_s  # worst case: the trip is noticed a tick late, then the brake
    if watchdog_s is None and stop_within_s - need < 2 * tick_s - 1e-12:
        lowest = top_speed / max(stop_within_s - 3 * tick_s, 1e-9)
        raise ValueError(
            f"max_decel {decel}{u} cannot stop {stopping} within stop_within_s "
            f"{stop_within_s} s (braking {braking_s:.3f} s + a tick to notice + at least 2 "
            f"ticks of watchdog): raise max_decel to >= {lowest:.{digits}f} {fix}, lower "
            f"max_speed, or raise stop_within_s")
    if watchdog_s is not None and watchdog_s + need > stop_within_s + 1e-9:
        raise ValueError(
            f"watchdog_s {watchdog_s} s + braking {braking_s:.3f} s + one tick exceeds "
            f"stop_within_s {stop_within_s} s: leave watchdog_s unset (it is then derived: "
            f"{stop_within_s - need:.3f} s) or raise stop_within_s")


# --------------------------------------------------------------------------- e-stop


class EStopLatch:
    """An e-stop that stays latched until an explicit :meth:`resume`.

    Attributes
    ----------
    latched : bool
    count : int
        How many times it was triggered.
    reason : str
        Reason given with the latest trigger.
    """

    def __init__(self) -> None:
        self.latched = False
        self.count = 0
        self.reason = ""

    def trigger(self, reason: str = "") -> None:
        """Latch (again).  Idempotent."""
        self.latched = True
        self.count += 1
        self.reason = reason

    def resume(self) -> bool:
        """Clear the latch.  Returns True if it was latched."""
        was = self.latched
        self.latched = False
        return was


# --------------------------------------------------------------------------- task space


@dataclass(frozen=True, eq=False)
class SafetyOutput:
    """A guarded command and the guards that acted on it.

    Attributes
    ----------
    velocity : ndarray
        Command to send (task space for CartesianSafety, joints for JointSafety).
    guards : tuple of str
        Names of guards that changed the command this step.
    """

    velocity: np.ndarray
    guards: tuple[str, ...]


class CartesianSafety:
    """Task-space guards: intent validation, e-stop, watchdog, speed, workspace, acceleration.

    Parameters
    ----------
    max_speed : float
        Largest commanded speed (norm), m/s.
    max_accel : float
        Largest change of commanded velocity per second (norm), m/s²; also the
        deceleration used when the watchdog or the workspace brakes.
    watchdog_s : float
        An intent older than this is stale: the target velocity becomes 0.
    tick_s : float
        Nominal control period, s (used for the one-tick-ahead prediction,
        and as the step length of the first call).
    dim : int
        Dimension of the task space (3 for Cartesian position).
    axes : sequence of int, optional
        Task-space axes an intent drives, in intent order (default all).  An
        intent must have ``len(axes)`` entries.
    workspace : (lower, upper), optional
        Box the position must stay in (``dim`` entries each).
    max_decel : float, optional
        Deceleration of a stop for want of a valid intent (watchdog, garbage),
        m/s²; default ``max_accel``.  Normal slowing down keeps ``max_accel``.

    Attributes
    ----------
    rejected : int
        Invalid intents seen (non-finite or wrong size).
    estop : EStopLatch
    braking : bool
        The last step was a stop for want of a valid intent (at ``max_decel``).
    """

    def __init__(self, max_speed: float, max_accel: float, watchdog_s: float = 0.1,
                 tick_s: float = 0.01, dim: int = 3, axes: Sequence[int] | None = None,
                 workspace: tuple[Any, Any] | None = None,
                 max_decel: float | None = None) -> None:
        max_decel = max_accel if max_decel is None else max_decel
        for name, value in (("max_speed", max_speed), ("max_accel", max_accel),
                            ("watchdog_s", watchdog_s), ("tick_s", tick_s),
                            ("max_decel", max_decel)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")
        self.max_speed = float(max_speed)
        self.max_accel = float(max_accel)
        self.max_decel = max(float(max_decel), self.max_accel)
        self.braking = False
        self.watchdog_s = float(watchdog_s)
        self.tick_s = float(tick_s)
        self.dim = int(dim)
        self.axes = tuple(range(self.dim)) if axes is None else tuple(int(a) for a in axes)
        if not self.axes or len(set(self.axes)) != len(self.axes) or not all(
                0 <= a < self.dim for a in self.axes):
            raise ValueError(f"axes must be distinct indices below {self.dim}, got {axes!r}")
        if workspace is not None:
            lower = np.asarray(workspace[0], dtype=float).reshape(-1)
            upper = np.asarray(workspace[1], dtype=float).reshape(-1)
            if lower.shape != (self.dim,) or upper.shape != (self.dim,) or np.any(upper <= lower):
                raise ValueError(f"workspace must be (lower, upper) with {self.dim} entries each "
                                 f"and upper > lower, got {workspace!r}")
            self.workspace: tuple[np.ndarray, np.ndarray] | None = (lower, upper)
        else:
            self.workspace = None
        # The envelope brakes each axis at max_accel/sqrt(dim): braking on all
        # axes at once then still fits in the max_accel ball, so the envelope
        # and the acceleration limit can always both be met.
        self._wall_decel = self.max_accel / np.sqrt(self.dim)
        self.estop = EStopLatch()
        self.rejected = 0
        self._intent: np.ndarray | None = None
        self._intent_t = -np.inf
        self._stale = False
        self._pending_invalid = False
        self._last_t: float | None = None
        self.velocity = np.zeros(self.dim)

    @property
    def intent_dim(self) -> int:
        """Number of entries an intent must have."""
        return len(self.axes)

    def offer(self, intent: Any, now_s: float) -> bool:
        """Hand in an intent (one entry per axis) received at ``now_s``.

        Returns
        -------
        bool
            False if it was rejected: non-finite, wrong size, or the e-stop is
            latched (intents are ignored while latched).  An invalid intent
            also drops the one held before, so garbage brakes the device now
            rather than after the watchdog delay.
        """
        if self.estop.latched:
            return False
        v = as_finite_vector(intent, self.intent_dim)
        if v is None:
            self.rejected += 1
            self._pending_invalid = True
            self._intent = None
            return False
        self._intent = v
        self._intent_t = float(now_s)
        self._stale = False
        return True

    def intent_fresh(self, now_s: float) -> bool:
        """True if a valid intent younger than ``watchdog_s`` is held."""
        return self._intent is not None and now_s - self._intent_t <= self.watchdog_s

    @property
    def stop_deadline_s(self) -> float:
        """When a stop for want of intent reaches zero at the latest: the last valid
        intent + ``watchdog_s`` + the braking time from ``max_speed`` at ``max_decel``
        (-inf before any intent)."""
        return self._intent_t + self.watchdog_s + self.max_speed / self.max_decel

    def stop_ramp(self, now_s: float) -> float:
        """Largest speed a stop for want of intent may command at ``now_s``, m/s:
        ``max_speed`` until the watchdog is due, then falling at ``max_decel`` to zero
        at :attr:`stop_deadline_s`."""
        left = self.stop_deadline_s - float(now_s)
        return 0.0 if math.isnan(left) else min(self.max_speed, max(0.0, self.max_decel * left))

    def trigger_estop(self, reason: str = "") -> None:
        """Latch the e-stop: the next step commands zero, with no deceleration ramp."""
        self.estop.trigger(reason)
        self.velocity = np.zeros(self.dim)
        self._intent = None

    def resume(self) -> bool:
        """Clear the e-stop.  The old intent is gone: motion needs a fresh intent."""
        self._intent = None
        self._stale = False
        self.velocity = np.zeros(self.dim)
        return self.estop.resume()

    def step(self, now_s: float, position: Any = None) -> SafetyOutput:
        """Compute the guarded velocity command for the tick at ``now_s``.

        Parameters
        ----------
        now_s : float
            Current time, s (simulated or monotonic).
        position : array_like, optional
            Current position (``dim`` entries), for the workspace guard.  A
            non-finite position counts as unknown: the device is braked.
        """
        gap = self.tick_s if self._last_t is None else now_s - self._last_t
        self._last_t = float(now_s)
        # Irregular ticks: a long gap must not license a big velocity jump.
        dt = min(max(gap, 1e-6), 2.0 * self.tick_s) if math.isfinite(gap) else self.tick_s
        guards: list[str] = []
        if self._pending_invalid:
            guards.append(INVALID)
            self._pending_invalid = False

        if self.estop.latched:
            self.velocity = np.zeros(self.dim)
            self.braking = False
            return SafetyOutput(self.velocity.copy(), (*guards, ESTOP))

        target = np.zeros(self.dim)
        if self._intent is not None:
            if now_s - self._intent_t <= self.watchdog_s:
                target[list(self.axes)] = self._intent
            else:
                self._intent = None
                self._stale = True
        if self._stale:
            guards.append(WATCHDOG)

        target, clipped = clip_norm(target, self.max_speed)
        if clipped:
            guards.append(SPEED)

        lo = np.full(self.dim, -np.inf)
        hi = np.full(self.dim, np.inf)
        if self.workspace is not None:
            pos = as_finite_vector(position, self.dim) if position is not None else None
            if pos is None:
                # Unknown position: treat every wall as touching -> brake.
                lo = np.zeros(self.dim)
                hi = np.zeros(self.dim)
            else:
                lower, upper = self.workspace
                hi = braking_speed(upper - pos, self._wall_decel, self.tick_s)
                lo = -braking_speed(pos - lower, self._wall_decel, self.tick_s)
            bounded = np.clip(target, lo, hi)
            if np.any(bounded != target):
                guards.append(WORKSPACE)
            target = bounded

        # No valid intent (stale, garbage, none yet): a stop, at the braking deceleration.
        # Braking, a late tick may slow down by what the time since the last one allows.
        self.braking = self._intent is None and bool(np.any(self.velocity != 0))
        if self.braking:
            dt = min(max(gap, dt), 1.0) if math.isfinite(gap) else dt
        v, limited, walled = self._accel_limit(self.velocity, target, lo, hi, dt,
                                               self.max_decel if self.braking else self.max_accel)
        if limited:
            guards.append(ACCEL)
        if walled and WORKSPACE not in guards:
            guards.append(WORKSPACE)
        if self.braking:
            # The stop is anchored at the last valid intent, not at the tick that noticed
            # it was missing: the speed never exceeds the braking ramp that starts at
            # max_speed when the watchdog is due and falls at max_decel, so however late
            # this process gets the CPU, it commands what the stop should have reached by now.
            cap = self.stop_ramp(now_s)
            if cap < float(np.linalg.norm(v)):
                v, _ = clip_norm(v, cap)
                if ACCEL not in guards:
                    guards.append(ACCEL)
        if not np.all(np.isfinite(v)):  # cannot happen; belt and braces
            v = np.zeros(self.dim)
        self.velocity = v
        return SafetyOutput(v.copy(), tuple(guards))

    def _accel_limit(self, prev: np.ndarray, target: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, dt: float, accel: float) -> tuple[np.ndarray, bool, bool]:
        """Move from ``prev`` toward ``target`` by at most ``accel*dt`` inside [lo, hi].

        ``start`` = prev pulled into the box; the segment start→target lies
        in the box (both ends do), so walking along it as far as the
        acceleration ball allows keeps both constraints.
        """
        r = accel * dt
        start = np.clip(prev, lo, hi)
        walled = bool(np.any(start != prev))
        if np.linalg.norm(target - prev) <= r:
            return target.copy(), False, walled
        w = start - prev
        if np.linalg.norm(w) >= r:
            # The wall demands more than max_accel (measured position ran ahead
            # of the prediction): the workspace wins over smoothness.
            return start, True, True
        u = target - start
        # Largest s in [0, 1] with |w + s u| = r.
        a, b, c = u @ u, 2.0 * (w @ u), w @ w - r * r
        s = (-b + np.sqrt(max(b * b - 4.0 * a * c, 0.0))) / (2.0 * a) if a > 0 else 0.0
        s = float(np.clip(s, 0.0, 1.0))
        return start + s * u, True, walled


# --------------------------------------------------------------------------- joint space


class JointSafety:
    """Joint-space guards: joint-limit margin, velocity clamp, acceleration limit, hard limit.

    Parameters
    ----------
    lower, upper : array_like
        Joint position limits, rad.
    max_velocity : array_like
        Joint speed limits actually enforced, rad/s (callers pass
        ``min(URDF limit * factor, configured)``).
    max_accel : float or array_like
        Joint acceleration limits, rad/s².
    margin : float
        Inside this distance (rad) of a limit the velocity toward it is
        scaled by ``distance / margin`` (zero at the limit).
    tick_s : float
        Nominal control period, s.
    max_decel : float or array_like, optional
        Joint deceleration limits while the task-space layer brakes for a stop
        (``step(..., braking=True)``), rad/s²; default ``max_accel``.

    Attributes
    ----------
    rejected : int
        Invalid joint commands replaced by zero.
    estop : EStopLatch
    """

    def __init__(self, lower: Any, upper: Any, max_velocity: Any, max_accel: Any = 10.0,
                 margin: float = 0.1, tick_s: float = 0.01, max_decel: Any = None) -> None:
        self.lower = np.asarray(lower, dtype=float).reshape(-1)
        self.n = self.lower.size
        self.upper = np.broadcast_to(np.asarray(upper, dtype=float), (self.n,)).copy()
        self.max_velocity = np.broadcast_to(np.asarray(max_velocity, float), (self.n,)).copy()
        self.max_accel = np.broadcast_to(np.asarray(max_accel, float), (self.n,)).copy()
        self.max_decel = np.maximum(self.max_accel, np.broadcast_to(
            np.asarray(self.max_accel if max_decel is None else max_decel, float), (self.n,)))
        if not (np.all(np.isfinite(self.max_velocity)) and np.all(self.max_velocity > 0)):
            raise ValueError(f"max_velocity must be positive, got {max_velocity!r}")
        if not (np.all(np.isfinite(self.max_accel)) and np.all(self.max_accel > 0)):
            raise ValueError(f"max_accel must be positive, got {max_accel!r}")
        if np.any(self.upper <= self.lower):
            raise ValueError("joint upper limits must be above lower limits")
        if not (np.isfinite(margin) and margin > 0):
            raise ValueError(f"margin must be positive, got {margin!r}")
        self.margin = float(margin)
        self.tick_s = float(tick_s)
        self.estop = EStopLatch()
        self.rejected = 0
        self.velocity = np.zeros(self.n)
        self._last_t: float | None = None

    def trigger_estop(self, reason: str = "") -> None:
        """Latch: every step commands zero until :meth:`resume`."""
        self.estop.trigger(reason)
        self.velocity = np.zeros(self.n)

    def resume(self) -> bool:
        self.velocity = np.zeros(self.n)
        return self.estop.resume()

    def step(self, qdot: Any, q: Any, now_s: float, braking: bool = False) -> SafetyOutput:
        """Guard a joint velocity command at joint positions ``q``.

        A non-finite or wrong-size ``qdot`` or ``q`` gives zero velocity.
        ``braking``: the task-space layer is stopping the device; the
        acceleration limit is then ``max_decel``.
        """
        gap = self.tick_s if self._last_t is None else now_s - self._last_t
        self._last_t = float(now_s)
        dt = min(max(gap, 1e-6), 2.0 * self.tick_s) if math.isfinite(gap) else self.tick_s
        if self.estop.latched:
            self.velocity = np.zeros(self.n)
            return SafetyOutput(self.velocity.copy(), (ESTOP,))
        # Braking after a late tick, the joints may slow down by what the elapsed time
        # allows (at max_decel), so they follow the task-space stop.
        dt_acc = min(max(gap, dt), 1.0) if braking and math.isfinite(gap) else dt
        guards: list[str] = []
        v = as_finite_vector(qdot, self.n)
        pos = as_finite_vector(q, self.n)
        pos_known = pos is not None
        if v is None or not pos_known:
            # Not knowing what to do or where the joints are: brake (within
            # the acceleration limit, like the watchdog).
            self.rejected += 1
            v = np.zeros(self.n)
            guards.append(JOINT_INVALID)
        if not pos_known:
            pos = (self.lower + self.upper) / 2.0  # margins then leave the zero target alone

        # Margin: scale velocity toward a near limit smoothly down to zero.
        up_room = self.upper - pos
        down_room = pos - self.lower
        scale = np.where(v > 0, np.clip(up_room / self.margin, 0.0, 1.0),
                         np.clip(down_room / self.margin, 0.0, 1.0))
        if np.any(scale < 1.0) and np.any(v[scale < 1.0] != 0):
            guards.append(JOINT_LIMIT)
        v = v * scale

        # Speed: uniform scaling keeps the direction (the end-effector path).
        ratio = np.max(np.abs(v) / self.max_velocity)
        if ratio > 1.0:
            v = v / ratio
            guards.append(JOINT_SPEED)

        # Acceleration: a uniform step toward the target, for the same reason.
        dv = v - self.velocity
        need = np.max(np.abs(dv) / ((self.max_decel if braking else self.max_accel) * dt_acc))
        if need > 1.0:
            v = self.velocity + dv / need
            guards.append(JOINT_ACCEL)

        # Hard limit: never command past a limit within the next tick (the
        # next tick may come late: assume the longer of the last gap and tick_s).
        if pos_known:
            horizon = max(dt, self.tick_s)
            hard = np.clip(v, -np.maximum(down_room, 0.0) / horizon,
                           np.maximum(up_room, 0.0) / horizon)
            if np.any(hard != v) and JOINT_LIMIT not in guards:
                guards.append(JOINT_LIMIT)
            v = hard
        v = np.clip(v, -self.max_velocity, self.max_velocity)
        self.velocity = v
        return SafetyOutput(v.copy(), tuple(guards))

"""The Franka Hand (parallel gripper of a Panda/FR3) through franky's ``Gripper``.

:class:`FrankaHand` gives :class:`~bciarm.drivers.franka.FrankaDriver` the
gripper methods of :mod:`bciarm.drivers.gripper` (``gripper_limits``,
``read_gripper``, ``command_gripper``), so the arm effector's
:class:`~bciarm.effectors.grasp.GripperGuard` drives the Hand exactly as it
drives the simulated Panda fingers.

The Hand is not a velocity device: libfranka offers *actions* -- ``move``
(to a width at a speed), ``grasp`` (close to a width at a speed; an object
met on the way is squeezed with a force) and ``stop`` -- each a blocking TCP
request answered when the action ends.  The aperture rate ``v`` the guard
asks for every tick becomes a *chunk*: an action to where the fingers would
be ``lookahead_s`` (0.3 s) from now at that rate, at that rate:

========================  ===================================================
guard asks                the Hand does
========================  ===================================================
``v > 0``                 ``move`` to ``width + v * lookahead_s``
``v < 0``                 ``grasp`` to ``width + v * lookahead_s`` with the
                          force cap (the force-limited way to close: on an
                          object it stops and squeezes with that force)
``v == 0``                ``stop`` -- unless a grasp holds an object: that
                          grasp keeps squeezing (see Safety)
========================  ===================================================

A new action is sent when the direction or the force changes, when the
running chunk would overshoot what is asked now by more than
``overshoot_tol`` (1 cm: the intent slowed down), or when a chunk has ended
and the intent still goes on -- at most one per ``min_interval_s`` (0.1 s)
of the same kind.  A steady intent thus streams chunk after chunk without
cutting any short, and a closed-loop aperture converges (measured on
franky-sim: two or three actions per aperture goal, none cut short).

Never blocking the 7-D loop
    Every action runs in its own (daemon) thread with franky's *blocking*
    call, which releases the GIL: :meth:`FrankaHand.command` only records
    what to do and starts the thread.  (franky 2.0's ``*_async`` calls are
    not used: measured here, a second ``move_async``/``stop_async`` issued
    while one is running blocks its caller until the first ends.)  The
    Hand's state (width, max width) is read by a reader thread every
    ``read_period_s``; :meth:`FrankaHand.read` returns the latest reading and
    raises :class:`~bciarm.drivers.base.DriverError` if none arrived for
    ``state_timeout_s`` (a Hand that cannot be read is a fault).

Force
    The force of every grasp is clamped to ``min(force asked, max_force)``
    where ``max_force`` is the driver's setting (default 70 N, the Hand's
    continuous force; libfranka's hard limit is 140 N).  The session's cap
    (``gripper.grip_force`` of the arm) is applied before that by the guard.
    The Hand has no force sensor on the FCI: :class:`GripperState` ``force``
    reports the commanded grasp force while an object is held, else 0.

Holding
    An object is held when the last action is a grasp whose fingers closed
    and stopped (aperture rate below ``stall_speed``) at least
    ``hold_margin`` short of the grasp's width and wider than
    ``empty_width``: something is between them.  The rule is the driver's
    own (libfranka's ``is_grasped`` needs the object's width in advance); a
    held object that slips out lets the squeezing fingers close on to the
    grasp's width: no longer held, and the guard's drop detection sees it.

Safety
    When the guard asks for zero (e-stop, a stale intent, garbage) the Hand
    stops; the driver's ``stop()`` (every e-stopped tick) ends a running
    ``move``.  But a grasp that holds an object is never stopped or opened
    by any of them: on the Hand a ``stop`` ends the grasp's squeeze, and
    dropping a cup of hot tea is a hazard of its own.  A hand closed by a
    grasp command (the guard's CLOSED mode) keeps closing / squeezing with
    the force cap through e-stop and bus loss, as the guard asks; only a
    release opens it.  Arm errors and their recovery leave the Hand alone,
    and closing the driver sends the Hand nothing.  If this process dies
    mid-action the Hand finishes that action, one chunk: at most
    ``0.1 m/s * lookahead_s`` = 3 cm of travel (a ``grasp`` with the force cap).

franky-sim 1.0.4 never answers an action that a newer one (or ``stop``)
superseded (libfranka's protocol has an ``aborted`` answer for it); the
thread of such an action stays blocked (polling its socket) for the life of
the process.  The count is kept in :attr:`FrankaHand.unanswered`; the chunk
rules keep it to the cut-short cases (a stop or reversal mid-chunk).  Sent
at 100 Hz, such cut-short actions broke franky-sim's gripper connection
(libfranka ``TCP send bytes: I/O error``), which is why actions are chunks
and spaced.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import math
import threading
import time
from typing import Any, Callable

from bciarm.drivers.base import DriverError
from bciarm.drivers.gripper import GripperLimits, GripperState

log = logging.getLogger("bciarm.drivers.franka")


def _keep_for_life_of_process(gripper: Any) -> None:
    """Never free ``gripper``: a thread is blocked in one of its calls for good.

    franky-sim never answers a superseded action, so that call's thread polls
    the Gripper's socket until the process ends.  If interpreter shutdown
    freed the Gripper (module teardown runs the garbage collector), the
    blocked call would return into a finalizing interpreter, whose daemon
    thread is then ended by a forced unwind through libfranka's ``noexcept``
    frames: libstdc++ aborts the process ("terminate called without an
    active exception", exit -6) after it did its work.  One extra reference
    the collector cannot see keeps the connection open until ``exit``.
    """
    if id(gripper) not in _KEPT:
        _KEPT.add(id(gripper))
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(gripper))


_KEPT: set[int] = set()

#: Every thread that calls into franky (the state reader, one per action).
_FRANKY_THREADS: list[threading.Thread] = []


def exit_if_calls_pending(code: Any) -> None:
    """End the process now, with ``code``, if a thread is still inside a franky call.

    Such a call (an action franky-sim never answers, or one still running)
    would return into a finalizing interpreter, which ends its thread by a
    forced unwind through libfranka's ``noexcept`` frames: libstdc++ aborts
    the process ("terminate called without an active exception", exit -6)
    after all its work was done.  So the command line flushes its output and
    leaves with its own exit status instead (``bciarm.cli.run``); the Hand
    keeps doing what it was last told, as it would if the process died.
    """
    if not any(t.is_alive() for t in _FRANKY_THREADS):
        return
    import os
    import sys

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - closed stream: nothing left to flush
            pass
    os._exit(status)

#: Largest speed libfranka accepts per finger, m/s (the Hand's 50 mm/s; franky-sim's limit).
FINGER_SPEED_LIMIT = 0.05
#: libfranka's hard grasp-force limit, N (franky-sim clamps to it too).
HAND_FORCE_LIMIT = 140.0
#: Aperture rates below this (m/s) count as zero (no action is sent for them).
DEADBAND = 1e-3

#: Slowest aperture rate sent, m/s (slower asks still move, at this rate).
MIN_RATE = 0.01
#: A refused action is sent again at most this often, s.
RETRY_S = 0.5

OPEN, GRASP, STOP = "open", "grasp", "stop"


@dataclasses.dataclass
class HandAction:
    """One action sent to the Hand.

    Attributes
    ----------
    kind : str
        ``"open"`` (move), ``"grasp"`` or ``"stop"``.
    rate : float
        Aperture rate asked, m/s (positive).
    force : float
        Grasp force sent, N (0 for move and stop).
    width : float
        Target width sent, m.
    sent_t : float
        ``time.monotonic()`` when sent.
    done : bool
        The Hand answered.
    result : bool or None
        Its answer (libfranka's success flag).
    error : str
        The exception, if the call raised.
    """

    kind: str
    rate: float = 0.0
    force: float = 0.0
    width: float = 0.0
    sent_t: float = 0.0
    done: bool = False
    result: bool | None = None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class _Reading:
    width: float
    max_width: float
    rate: float
    t_device: float
    t_local: float


class FrankaHand:
    """The Franka Hand over franky's ``Gripper`` (see the module docstring).

    Parameters
    ----------
    host : str
        The robot's FCI address (the Hand is reached through the robot).
    max_force : float
        Largest grasp force the driver sends, N (at most 140).
    homing : bool
        Home the Hand on connect (fingers open fully and come back; needed
        once after power-on or a finger change so the Hand knows its width).
    empty_width : float
        Apertures at or below this (m) mean "closed on nothing".
    stall_speed : float
        Aperture rates below this (m/s) mean the fingers have stopped.
    hold_margin : float
        A grasp that stalls at least this much (m) wider than its target
        width has an object between the fingers.
    lookahead_s : float
        Each action is a chunk: to where the fingers would be this long
        from now at the asked rate.
    overshoot_tol : float
        A running chunk is cut short (a new action) only if it would go this
        much (m) further than the intent now asks.
    chunk_min : float
        A finished chunk is followed by the next only if that moves at least this much, m.
    min_interval_s : float
        At most one action of the same kind per this interval, s.
    read_period_s : float
        Period of the state reader thread, s.
    state_timeout_s : float
        :meth:`read` raises DriverError when no state arrived for this long.
    connect : callable, optional
        ``connect(host) -> franky.Gripper`` (tests); default franky's.

    Attributes
    ----------
    actions : list of HandAction
        Every action sent, in order.
    unanswered : int
        Actions superseded before the Hand answered them.
    errors : list of (float, str)
        ``(time.monotonic(), "ExceptionType: message")`` of failed calls.
    """

    def __init__(self, host: str, max_force: float = 70.0, homing: bool = False,
                 empty_width: float = 0.005, stall_speed: float = 0.003,
                 hold_margin: float = 0.002, lookahead_s: float = 0.3,
                 overshoot_tol: float = 0.01, chunk_min: float = 0.002,
                 min_interval_s: float = 0.1, read_period_s: float = 0.004,
                 state_timeout_s: float = 1.0,
                 connect: Callable[[str], Any] | None = None) -> None:
        if not 0.0 < float(max_force) <= HAND_FORCE_LIMIT:
            raise ValueError(f"gripper_max_force must be in (0, {HAND_FORCE_LIMIT}] N (the "
                             f"Franka Hand's limit), got {max_force!r}")
        self.host = host
        self.max_force = float(max_force)
        self.homing = bool(homing)
        self.empty_width = float(empty_width)
        self.stall_speed = float(stall_speed)
        self.hold_margin = float(hold_margin)
        self.lookahead_s = float(lookahead_s)
        self.overshoot_tol = float(overshoot_tol)
        self.chunk_min = float(chunk_min)
        self.min_interval_s = float(min_interval_s)
        self.read_period_s = float(read_period_s)
        self.state_timeout_s = float(state_timeout_s)
        self._connect_fn = connect
        self.actions: list[HandAction] = []
        self.unanswered = 0
        self.errors: list[tuple[float, str]] = []
        self._g: Any = None
        self._lock = threading.Lock()
        self._reading: _Reading | None = None
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None
        self._threads: list[tuple[HandAction, threading.Thread]] = []
        #: Longest wait in :meth:`close` for running actions to be answered, s.
        self.close_wait_s = 3.0
        self._limits: GripperLimits | None = None
        self._held_action: HandAction | None = None
        self._closing_seen_t = -math.inf

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Connect to the Hand, home it if asked, start the reader.

        Raises
        ------
        DriverError
            No Hand answers at ``host``, or it does not know its width (not homed).
        """
        if self._connect_fn is None:
            import franky

            self._connect_fn = franky.Gripper
        try:
            self._g = self._connect_fn(self.host)
            if self.homing:
                self._g.homing()
            state = self._g.state
        except Exception as exc:  # noqa: BLE001 - franky raises its own types
            self._g = None
            raise DriverError(
                f"FrankaDriver: no Franka Hand answers at {self.host} ({type(exc).__name__}: "
                f"{exc}); check the Hand is attached and enabled in Desk, or set "
                "gripper: false in the driver params for an arm without a Hand") from exc
        max_width = float(state.max_width)
        if not max_width > 0.0:
            raise DriverError(f"FrankaDriver: the Franka Hand at {self.host} reports max width "
                              f"{max_width} m: it is not homed. Home it in Desk or set "
                              "gripper_homing: true in the driver params")
        self._limits = GripperLimits(min_aperture=0.0, max_aperture=max_width,
                                     max_speed=2.0 * FINGER_SPEED_LIMIT,
                                     max_force=self.max_force)
        now = time.monotonic()
        self._reading = _Reading(float(state.width), max_width, 0.0,
                                 float(state.time.to_sec()), now)
        self._closed.clear()
        self._reader = threading.Thread(target=self._read_loop, name="franka-hand-state",
                                        daemon=True)
        _FRANKY_THREADS.append(self._reader)
        self._reader.start()

    def close(self) -> None:
        """Stop the reader and let go of the connection; a held grasp keeps squeezing."""
        self._closed.set()
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        self._reader = None
        # Let the actions the Hand will answer (a chunk, <= lookahead_s of travel) come back
        # first: a franky call that returns while the interpreter shuts down is ended by a
        # forced unwind through libfranka's noexcept frames, and libstdc++ aborts the
        # process (exit -6) after its work is done.  Superseded ones never return (franky-sim).
        deadline = time.monotonic() + self.close_wait_s
        for action, thread in self._threads:
            if action.error != "superseded":
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = [(a, t) for a, t in self._threads if t.is_alive()]
        # Threads blocked on an unanswered action keep their own reference.
        self._g = None

    # ------------------------------------------------------------------ state

    def _read_loop(self) -> None:
        prev: _Reading | None = self._reading
        while not self._closed.is_set():
            g = self._g
            if g is None:
                return
            try:
                s = g.state
                w, t = float(s.width), float(s.time.to_sec())
                rate = prev.rate if prev is not None else 0.0
                if prev is not None and t - prev.t_device >= 0.004:
                    # One pole low pass over the finite difference (the width is quantised).
                    raw = (w - prev.width) / (t - prev.t_device)
                    rate = 0.5 * rate + 0.5 * raw
                if prev is None or t - prev.t_device >= 0.004:
                    prev = _Reading(w, float(s.max_width), rate, t, time.monotonic())
                    if rate < -self.stall_speed:
                        self._closing_seen_t = prev.t_local
                    with self._lock:
                        self._reading = prev
            except Exception as exc:  # noqa: BLE001 - reported by read() through staleness
                self.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                self._closed.wait(0.1)
            self._closed.wait(self.read_period_s)

    @property
    def limits(self) -> GripperLimits:
        if self._limits is None:
            raise DriverError("FrankaDriver: the Franka Hand is not connected")
        return self._limits

    @property
    def current(self) -> HandAction | None:
        """The last action sent (None before the first)."""
        return self.actions[-1] if self.actions else None

    def read(self) -> GripperState:
        """The latest reading: aperture, rate, force (see Force) and holding."""
        with self._lock:
            r = self._reading
        if r is None:
            raise DriverError("FrankaDriver: the Franka Hand is not connected")
        age = time.monotonic() - r.t_local
        if age > self.state_timeout_s:
            last = self.errors[-1][1] if self.errors else "no error reported"
            raise DriverError(f"FrankaDriver: no state from the Franka Hand at {self.host} for "
                              f"{age:.2f} s (last error: {last})")
        holding = self._holding(r)
        cur = self.current
        force = cur.force if holding and cur is not None else 0.0
        return GripperState(aperture=r.width, velocity=r.rate, force=force, holding=holding)

    def _holding(self, r: _Reading) -> bool:
        """Held: the grasp's fingers stalled short of its width and wider than ``empty_width``.

        Once stalled on an object the grasp counts as holding until the
        width falls to ``empty_width`` (the object slipped out) or another
        action is sent, so a squeeze's jitter is no drop.
        """
        cur = self.current
        if cur is None or cur.kind != GRASP or r.width <= self.empty_width \
                or r.width < cur.width + self.hold_margin:
            return False
        # Stalled *after closing* (a grasp just sent has not moved yet), or answered.
        closed = self._closing_seen_t >= cur.sent_t or (cur.done and cur.result is True)
        if closed and abs(r.rate) < self.stall_speed:
            self._held_action = cur
        return self._held_action is cur

    # ------------------------------------------------------------------ commands

    def command(self, velocity: float, max_force: float) -> HandAction | None:
        """Aperture rate ``velocity`` (m/s, + opens) with force cap ``max_force`` (N).

        Never blocks: sends a new action (in its own thread) only when it
        changes what the Hand does.  Non-finite velocity means 0; a
        non-finite force means the driver's ``max_force``.

        Returns
        -------
        HandAction or None
            The action sent, or None if the running one goes on.
        """
        lim = self.limits
        v = float(velocity) if math.isfinite(velocity) else 0.0
        f = float(max_force) if math.isfinite(max_force) else self.max_force
        v = max(-lim.max_speed, min(lim.max_speed, v))
        f = max(0.0, min(f, self.max_force))
        cur = self.current
        if abs(v) < DEADBAND:
            return self.halt()
        kind = OPEN if v > 0 else GRASP
        rate = max(abs(v), MIN_RATE)
        now = time.monotonic()
        if cur is not None and cur.error not in ("", "superseded") and now - cur.sent_t < RETRY_S:
            return None  # the Hand refused it: retry at a calm pace, not every tick
        with self._lock:
            r = self._reading
        assert r is not None
        # A chunk: where the fingers would be lookahead_s from now at this rate.
        target = min(max(r.width + v * self.lookahead_s, lim.min_aperture), lim.max_aperture)
        if cur is None or cur.kind != kind or cur.error not in ("", "superseded") \
                or (kind == GRASP and abs(cur.force - f) > 0.01 * max(f, 1.0)):
            send = True                                  # new direction, force or a retry
        elif kind == GRASP and self._holding(r):
            send = False                                 # closed on an object: keep squeezing
        elif not cur.done:
            # Running the same way: cut it short only if it overshoots what is asked now
            # (the intent slowed down a lot); else let it finish (no preemption).
            send = (cur.width - target) * math.copysign(1.0, v) > self.overshoot_tol
        else:
            # Finished its chunk: the next one if the intent still goes further.
            send = (target - cur.width) * math.copysign(1.0, v) > self.chunk_min
        if not send or (cur is not None and cur.kind == kind
                        and now - cur.sent_t < self.min_interval_s):
            return None
        return self._send(HandAction(kind, rate, f if kind == GRASP else 0.0, target))

    def halt(self) -> HandAction | None:
        """Stop the fingers -- except a grasp holding an object, which keeps squeezing.

        Returns the stop action sent, or None (nothing running, or a held grasp).
        """
        cur = self.current
        if cur is None or cur.kind == STOP:
            return None
        if cur.kind == GRASP:
            with self._lock:
                r = self._reading
            if r is not None and self._holding(r):
                return None
        if cur.done and cur.kind == OPEN:
            return None  # the move is over: nothing moves
        return self._send(HandAction(STOP))

    def stop_moves(self) -> HandAction | None:
        """The driver's ``stop()``: end a running ``move``; grasps are left to the guard.

        The arm effector calls ``stop()`` every tick while e-stopped, right
        after the guard's command; a grasp the guard keeps (a closed hand)
        must not be cut short by it.
        """
        cur = self.current
        if cur is not None and cur.kind == OPEN and not cur.done:
            return self._send(HandAction(STOP))
        return None

    def _send(self, action: HandAction) -> HandAction:
        g = self._g
        if g is None:
            raise DriverError("FrankaDriver: the Franka Hand is not connected")
        for old in self.actions[-3:]:
            if not old.done and old.kind != STOP:
                old.done = True  # superseded: its answer, if any, no longer matters
                old.error = "superseded"
                self.unanswered += 1
                _keep_for_life_of_process(g)
        action.sent_t = time.monotonic()
        self.actions.append(action)
        # libfranka's speed is per finger (franky-sim limits each finger to it).
        if action.kind == OPEN:
            call = lambda: g.move(action.width, action.rate / 2.0)  # noqa: E731
        elif action.kind == GRASP:
            # Close to the chunk's width at the rate; an object on the way stops
            # the fingers and is squeezed with the force.  Epsilons: the grasp
            # "succeeds" wherever it settles (holding is judged from the width).
            call = lambda: g.grasp(action.width, action.rate / 2.0, action.force,  # noqa: E731
                                   epsilon_inner=action.width,
                                   epsilon_outer=self.limits.max_aperture)
        else:
            call = g.stop

        def run() -> None:
            try:
                result = bool(call())
            except Exception as exc:  # noqa: BLE001 - recorded; the guard sees the width
                what = f"{type(exc).__name__}: {exc}"
                if action.error == "superseded":
                    # A cut-short action franky-sim never answered, ended by a closed
                    # connection (the driver or the simulator went away): nothing to report.
                    log.debug("FrankaDriver: superseded Hand %s ended (%s)", action.kind, what)
                    return
                self.errors.append((time.monotonic(), what))
                log.warning("FrankaDriver: Franka Hand %s failed (%s)", action.kind, what)
                action.error = what
                action.done = True
                return
            if action.error != "superseded":
                action.result = result
            action.done = True

        thread = threading.Thread(target=run, name=f"franka-hand-{action.kind}", daemon=True)
        self._threads = [(a, t) for a, t in self._threads if t.is_alive()] + [(action, thread)]
        _FRANKY_THREADS[:] = [t for t in _FRANKY_THREADS if t.is_alive()] + [thread]
        thread.start()
        return action

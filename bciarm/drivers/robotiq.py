"""Robotiq 2F-85 / 2F-140 grippers over the Robotiq URCap's ASCII socket (TCP port 63352).

:class:`RobotiqGripper` gives :class:`~bciarm.drivers.ur.URDriver` the
gripper methods of :mod:`bciarm.drivers.gripper` when the driver is set up
with ``gripper: robotiq``.  ur-rtde's Python API has no gripper (its C++
``RobotiqGripper`` is not bound), so this is a small stdlib-socket client of
the same protocol the Robotiq URCap serves on the robot controller:

* ``SET VAR value [VAR value ...]`` -> ``ack`` (``ACT`` activate, ``GTO`` go
  to, ``POS`` requested position, ``SPE`` speed, ``FOR`` force; all 0..255);
* ``GET VAR`` -> ``VAR value`` (``POS`` finger position, ``OBJ`` object
  detection, ``STA`` activation status, ``FLT`` fault code, ``PRE`` echo of
  the requested position).  While the robot is e-stopped the URCap answers
  ``VAR ?``.

Position 0 is open, 255 closed; the width is linear in the position between
``pos_open`` (the stroke) and ``pos_closed`` (0 m).  The defaults 0 and 255
are nominal: a real 2F-85 stops short of both ends (e.g. about 3 open and
about 230 closed), so measure the positions of the fully open and fully
closed (empty) fingers and set ``gripper_pos_open`` / ``gripper_pos_closed``.  ``SPE`` and ``FOR`` 0..255 span the model's speed and
force ranges (2F-85: 20-150 mm/s, 20-235 N; 2F-140: 30-250 mm/s, 10-125 N).

Velocity to positions
    The gripper is a position device: each move is ``SET POS n SPE s FOR f
    GTO 1`` and the fingers run there at the speed.  The aperture rate ``v``
    the grip guard asks for becomes a position target ``lookahead_s``
    (0.2 s) ahead of the fingers at the speed ``|v|``; it is re-sent when
    the target moves by a count or the speed / force changes, so a steady
    intent keeps the fingers moving at ``v`` and a zero intent stops them
    within one lookahead.  Robotiq has no "stop" command: stopping is
    ``SET POS <current position>``.

Never blocking the control loop
    One worker thread owns the socket: it sends the newest pending command
    (older ones are superseded, never queued) and polls ``POS``, ``OBJ``,
    ``STA`` and ``FLT`` every ``poll_period_s``; :meth:`RobotiqGripper.read`
    returns the cached state.  A socket that dies, times out or answers
    garbage, or a state older than ``state_timeout_s``, makes
    :meth:`RobotiqGripper.read` raise :class:`~bciarm.drivers.base.DriverError`
    with the reason (the UR driver then stops the arm).

Force
    The force sent is ``min(force asked, max_force)`` (``gripper_max_force``,
    at most the model's largest), rounded *down* to a ``FOR`` count so the
    fingers never squeeze harder than the cap -- except below the model's
    smallest force, which the gripper cannot go under (``FOR 0``; a warning
    says so once).  :class:`GripperState` ``force`` is that commanded force
    while an object is held (the gripper reports no force), else 0.

Holding
    ``OBJ`` 1 (stopped on an object while opening) or 2 (while closing)
    means an object is held; ``OBJ`` 0 is moving, 3 arrived at the target
    (nothing in the way: an object that slipped out lets the fingers close
    on, so the guard's drop detection sees it).

Safety
    A zero rate (e-stop, stale intent, garbage) re-targets the current
    position, stopping moving fingers -- but a grasp that holds an object is
    never re-targeted or opened: on a Robotiq a new position request ends
    the squeeze, and a dropped cup of hot tea is a hazard of its own.  The
    driver's ``stop()`` (every e-stopped tick) stops an opening move;
    closing is left to the guard, which keeps a closed hand closing /
    squeezing through e-stop and bus loss.  Faults and closing the driver
    send the gripper nothing (the URCap keeps its last command: a held
    object stays held).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import socket
import threading
import time

from bciarm.drivers.base import DriverError
from bciarm.drivers.gripper import GripperLimits, GripperState

log = logging.getLogger("bciarm.drivers.robotiq")

#: The Robotiq URCap's ASCII socket on the robot controller.
URCAP_PORT = 63352
#: ``OBJ`` values (Robotiq gOBJ).
OBJ_MOVING, OBJ_OPENING_CONTACT, OBJ_CLOSING_CONTACT, OBJ_AT_POSITION = 0, 1, 2, 3
#: ``STA`` values (Robotiq gSTA).
STA_RESET, STA_ACTIVATING, STA_ACTIVE = 0, 1, 3
#: Aperture rates below this (m/s) count as zero.
DEADBAND = 1e-3
#: ``FLT`` codes (Robotiq gFLT) and what they mean.
FAULTS = {5: "action delayed: activation (reactivation) must complete first",
          7: "the activation bit must be set before moving",
          8: "maximum operating temperature exceeded",
          9: "no communication for at least 1 s",
          10: "under minimum operating voltage",
          11: "automatic release in progress",
          12: "internal processor fault",
          13: "activation fault, check for interference",
          14: "overcurrent triggered",
          15: "automatic release completed"}


@dataclasses.dataclass(frozen=True)
class RobotiqModel:
    """Stroke (m), aperture speed range (m/s) and grip force range (N) of a 2F gripper."""

    stroke: float
    speed: tuple[float, float]
    force: tuple[float, float]


#: Robotiq's data sheets.
MODELS = {"2F-85": RobotiqModel(0.085, (0.020, 0.150), (20.0, 235.0)),
          "2F-140": RobotiqModel(0.140, (0.030, 0.250), (10.0, 125.0))}


class RobotiqProtocolError(DriverError):
    """The gripper's socket answered something the protocol does not allow."""


@dataclasses.dataclass(frozen=True)
class _Reading:
    pos: int
    obj: int
    sta: int
    flt: int
    t: float          # time.monotonic() when read
    width: float
    rate: float


@dataclasses.dataclass(frozen=True)
class RobotiqCommand:
    """One move sent: ``SET POS pos SPE spe FOR force_count GTO 1``."""

    pos: int
    spe: int
    force_count: int
    force: float      # N the force count stands for
    closing: bool
    t: float = 0.0


_GET = re.compile(r"^([A-Z]{3}) (-?\d+|\?)$")


class RobotiqGripper:
    """A Robotiq 2F gripper through the URCap socket (see the module docstring).

    Parameters
    ----------
    host : str
        The robot controller's address (the URCap serves the socket there).
    port : int
        The URCap's port (63352).
    model : str
        ``"2F-85"`` or ``"2F-140"``.
    max_force : float, optional
        Largest grip force sent, N (default: the model's largest).
    lookahead_s : float
        Position targets are this far ahead of the fingers at the asked rate.
    poll_period_s : float
        Period of the worker's state polling, s.
    state_timeout_s : float
        :meth:`read` raises DriverError when no full state arrived for this long.
    io_timeout_s : float
        A request not answered within this is a dead socket.
    activate_timeout_s : float
        Activation must reach ``STA 3`` within this.
    pos_open, pos_closed : int
        Position counts of the fully open and fully closed (empty) fingers.
    """

    def __init__(self, host: str, port: int = URCAP_PORT, model: str = "2F-85",
                 max_force: float | None = None, lookahead_s: float = 0.2,
                 poll_period_s: float = 0.01, state_timeout_s: float = 0.5,
                 io_timeout_s: float = 0.5, activate_timeout_s: float = 5.0,
                 pos_open: int = 0, pos_closed: int = 255) -> None:
        if model not in MODELS:
            raise ValueError(f"gripper_model must be one of {sorted(MODELS)}, got {model!r}")
        self.spec = MODELS[model]
        fmin, fmax = self.spec.force
        if max_force is None:
            max_force = fmax
        if not (math.isfinite(float(max_force)) and fmin <= float(max_force) <= fmax):
            raise ValueError(f"gripper_max_force must be within the {model}'s grip force range "
                             f"[{fmin:g}, {fmax:g}] N, got {max_force!r}")
        if not 0 <= int(pos_open) < int(pos_closed) <= 255:
            raise ValueError(f"gripper_pos_open / gripper_pos_closed must satisfy 0 <= open < "
                             f"closed <= 255, got {pos_open!r} / {pos_closed!r}")
        self.pos_open, self.pos_closed = int(pos_open), int(pos_closed)
        if not 0 < int(port) < 65536:
            raise ValueError(f"gripper_port must be a TCP port (1..65535), got {port!r}")
        self.host = host
        self.port = int(port)
        self.model = model
        self.max_force = float(max_force)
        self.lookahead_s = float(lookahead_s)
        self.poll_period_s = float(poll_period_s)
        self.state_timeout_s = float(state_timeout_s)
        self.io_timeout_s = float(io_timeout_s)
        self.activate_timeout_s = float(activate_timeout_s)
        #: Every move sent, in order.
        self.commands: list[RobotiqCommand] = []
        #: ``(time.monotonic(), reason)`` of every error the worker met.
        self.errors: list[tuple[float, str]] = []
        self._sock: socket.socket | None = None
        self._buf = b""
        self._lock = threading.Lock()
        self._pending: RobotiqCommand | None = None
        self._reading: _Reading | None = None
        self._dead = ""
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._warned_min_force = False
        self._limits = GripperLimits(min_aperture=0.0, max_aperture=self.spec.stroke,
                                     max_speed=self.spec.speed[1], max_force=self.max_force)

    # ------------------------------------------------------------------ protocol

    def _request(self, line: str) -> str:
        """Send one line, return its one-line reply (with or without a newline)."""
        sock = self._sock
        if sock is None:
            raise DriverError("RobotiqGripper: not connected")
        expect_ack = line.startswith("SET")
        try:
            sock.sendall(line.encode("ascii") + b"\n")
            deadline = time.monotonic() + self.io_timeout_s
            while True:
                if b"\n" in self._buf:
                    raw, self._buf = self._buf.split(b"\n", 1)
                    break
                text = self._buf.decode("ascii", "replace").strip()
                # The URCap answers without a newline: a complete reply ends it too.
                if text and ((expect_ack and text == "ack") or _GET.match(text)):
                    raw, self._buf = self._buf, b""
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {line!r} within {self.io_timeout_s} s")
                sock.settimeout(left)
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionError("the gripper closed the connection")
                self._buf += chunk
                if len(self._buf) > 4096:
                    raise RobotiqProtocolError(f"RobotiqGripper at {self.host}:{self.port}: "
                                               f"reply to {line!r} too long (no line end)")
        except OSError as exc:
            raise DriverError(f"RobotiqGripper at {self.host}:{self.port}: socket failed on "
                              f"{line!r} ({type(exc).__name__}: {exc})") from exc
        return raw.decode("ascii", "replace").strip()

    def _set(self, **values: int) -> None:
        line = "SET " + " ".join(f"{k} {int(v)}" for k, v in values.items())
        reply = self._request(line)
        if reply != "ack":
            raise RobotiqProtocolError(f"RobotiqGripper at {self.host}:{self.port}: {line!r} "
                                       f"answered {reply!r}, expected 'ack'")

    def _get(self, var: str) -> int | None:
        """The value of ``var``; None if the URCap answers ``?`` (robot e-stopped)."""
        reply = self._request(f"GET {var}")
        m = _GET.match(reply)
        if m is None or m.group(1) != var:
            raise RobotiqProtocolError(f"RobotiqGripper at {self.host}:{self.port}: 'GET {var}' "
                                       f"answered {reply!r}, expected '{var} <0..255>'")
        if m.group(2) == "?":
            return None
        value = int(m.group(2))
        if not 0 <= value <= 255:
            raise RobotiqProtocolError(f"RobotiqGripper at {self.host}:{self.port}: 'GET {var}' "
                                       f"answered {value}, outside 0..255")
        return value

    # ------------------------------------------------------------------ mapping

    def width_of(self, pos: int) -> float:
        """Aperture (m) of position count ``pos`` (``pos_open`` .. ``pos_closed``)."""
        frac = (self.pos_closed - pos) / (self.pos_closed - self.pos_open)
        return self.spec.stroke * min(1.0, max(0.0, frac))

    def pos_of(self, width: float) -> int:
        """Position count of aperture ``width`` (m), clamped to ``pos_open`` .. ``pos_closed``."""
        frac = min(1.0, max(0.0, width / self.spec.stroke))
        return int(round(self.pos_closed - frac * (self.pos_closed - self.pos_open)))

    def speed_count(self, speed: float) -> int:
        """``SPE`` count for an aperture speed (m/s), clamped to 0..255."""
        lo, hi = self.spec.speed
        return int(min(255, max(0, round((abs(speed) - lo) / (hi - lo) * 255.0))))

    def force_count(self, force: float) -> tuple[int, float]:
        """``FOR`` count for at most ``force`` N (rounded down) and the force it stands for."""
        lo, hi = self.spec.force
        f = min(max(force, 0.0), self.max_force)
        n = int(min(255, max(0, math.floor((f - lo) / (hi - lo) * 255.0 + 1e-9))))
        if f < lo and not self._warned_min_force:
            self._warned_min_force = True
            log.warning("RobotiqGripper: grip force cap %.1f N is below the %s's smallest "
                        "force %.0f N; it squeezes with %.0f N", f, self.model, lo, lo)
        return n, lo + (hi - lo) * n / 255.0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Connect, activate the gripper if it is not active, start the worker.

        Raises
        ------
        DriverError
            Nothing answers, the gripper reports a fault or does not activate.
        """
        where = f"{self.host}:{self.port}"
        try:
            self._sock = socket.create_connection((self.host, self.port),
                                                  timeout=self.io_timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self._sock = None
            raise DriverError(
                f"URDriver: no Robotiq gripper answers at {where} ({type(exc).__name__}: {exc});"
                " check the Robotiq URCap is installed and the gripper enabled on the pendant, "
                "gripper_host / gripper_port, or remove `gripper: robotiq` from the driver "
                "params") from exc
        self._buf = b""
        try:
            if self._get("STA") != STA_ACTIVE:
                # Activation (the fingers may move through their stroke to calibrate).
                self._set(ACT=1)
                deadline = time.monotonic() + self.activate_timeout_s
                while self._get("STA") != STA_ACTIVE:
                    if time.monotonic() > deadline:
                        raise DriverError(f"RobotiqGripper at {where}: not active (STA 3) "
                                          f"{self.activate_timeout_s} s after SET ACT 1")
                    time.sleep(0.01)
            self._set(GTO=1)
            self._reading = self._poll(None)
            if self._reading.flt:
                raise DriverError(self._fault_text(self._reading.flt))
        except BaseException:
            self._sock.close()
            self._sock = None
            raise
        self._closed.clear()
        self._worker = threading.Thread(target=self._work, name="robotiq-gripper", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Stop the worker, close the socket; the gripper keeps its last command."""
        self._closed.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=1.0)
        self._worker = None
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    # ------------------------------------------------------------------ worker

    def _fault_text(self, flt: int) -> str:
        return (f"RobotiqGripper at {self.host}:{self.port}: fault {flt} "
                f"({FAULTS.get(flt, 'unknown fault code')})")

    def _poll(self, prev: _Reading | None) -> _Reading:
        values = {v: self._get(v) for v in ("POS", "OBJ", "STA", "FLT")}
        now = time.monotonic()
        if any(x is None for x in values.values()):
            # The URCap answers "?" while the robot is e-stopped: keep the old reading's
            # time (it goes stale, read() says why) but never fail the worker.
            self._note("the gripper answers '?' (robot emergency stop?)")
            if prev is None:
                raise DriverError(f"RobotiqGripper at {self.host}:{self.port}: the gripper "
                                  "answers '?' (robot emergency stop?)")
            return prev
        pos = int(values["POS"])  # type: ignore[arg-type]
        width = self.width_of(pos)
        rate = 0.0
        if prev is not None and now > prev.t:
            raw = (width - prev.width) / (now - prev.t)
            rate = 0.5 * prev.rate + 0.5 * raw  # the count is quantised: smooth a little
        return _Reading(pos, int(values["OBJ"]), int(values["STA"]),  # type: ignore[arg-type]
                        int(values["FLT"]), now, width, rate)  # type: ignore[arg-type]

    def _note(self, why: str) -> None:
        if not self.errors or self.errors[-1][1] != why:
            self.errors.append((time.monotonic(), why))

    def _work(self) -> None:
        while not self._closed.is_set():
            try:
                with self._lock:
                    cmd, self._pending = self._pending, None
                if cmd is not None:
                    self._set(POS=cmd.pos, SPE=cmd.spe, FOR=cmd.force_count, GTO=1)
                reading = self._poll(self._reading)
                with self._lock:
                    self._reading = reading
            except DriverError as exc:
                if self._closed.is_set():
                    return
                with self._lock:
                    self._dead = str(exc)
                self.errors.append((time.monotonic(), str(exc)))
                log.error("%s", exc)
                return
            self._wake.wait(self.poll_period_s)
            self._wake.clear()

    # ------------------------------------------------------------------ gripper API

    @property
    def limits(self) -> GripperLimits:
        return self._limits

    @property
    def current(self) -> RobotiqCommand | None:
        """The last move asked (None before the first)."""
        return self.commands[-1] if self.commands else None

    def _latest(self) -> _Reading:
        with self._lock:
            r, dead = self._reading, self._dead
        if dead:
            raise DriverError(dead)
        if r is None:
            raise DriverError("RobotiqGripper: not connected")
        if r.flt:
            raise DriverError(self._fault_text(r.flt))
        age = time.monotonic() - r.t
        if age > self.state_timeout_s:
            last = self.errors[-1][1] if self.errors else "no error reported"
            raise DriverError(f"RobotiqGripper at {self.host}:{self.port}: no state for "
                              f"{age:.2f} s (last: {last})")
        return r

    def read(self) -> GripperState:
        """The latest state (never blocks); DriverError on a fault or a dead socket."""
        r = self._latest()
        holding = r.obj in (OBJ_OPENING_CONTACT, OBJ_CLOSING_CONTACT)
        cur = self.current
        force = cur.force if holding and cur is not None else 0.0
        return GripperState(aperture=r.width, velocity=r.rate, force=force, holding=holding)

    def _holding(self, r: _Reading) -> bool:
        return r.obj in (OBJ_OPENING_CONTACT, OBJ_CLOSING_CONTACT)

    def command(self, velocity: float, max_force: float) -> RobotiqCommand | None:
        """Aperture rate ``velocity`` (m/s, + opens) with force cap ``max_force`` (N).

        Never blocks: the move is handed to the worker.  Non-finite velocity
        means 0; a non-finite force means the driver's ``max_force``.

        Returns
        -------
        RobotiqCommand or None
            The move handed over, or None if the running one goes on.
        """
        r = self._latest()
        v = float(velocity) if math.isfinite(velocity) else 0.0
        f = float(max_force) if math.isfinite(max_force) else self.max_force
        v = max(-self._limits.max_speed, min(self._limits.max_speed, v))
        if abs(v) < DEADBAND:
            return self.halt()
        closing = v < 0
        cur = self.current
        if closing and self._holding(r) and cur is not None and cur.closing:
            return None  # closed on an object: keep squeezing as asked
        target = self.pos_of(r.width + v * self.lookahead_s)
        if closing:
            target = max(target, r.pos + 1)   # always a count ahead: slow asks still move
        else:
            target = min(target, r.pos - 1)
        target = min(self.pos_closed, max(self.pos_open, target))
        n_force, force = self.force_count(f)
        cmd = RobotiqCommand(target, self.speed_count(v), n_force, force, closing)
        if cur is not None and (cur.pos, cur.spe, cur.force_count, cur.closing) == \
                (cmd.pos, cmd.spe, cmd.force_count, cmd.closing):
            return None
        return self._hand_over(cmd)

    def halt(self) -> RobotiqCommand | None:
        """Stop the fingers (``SET POS <current>``) -- unless they hold an object."""
        r = self._latest()
        cur = self.current
        if cur is None or self._holding(r) or cur.pos == r.pos:
            return None  # nothing asked, a held grasp (keeps squeezing), or already there
        return self._hand_over(dataclasses.replace(cur, pos=r.pos))

    def stop_moves(self) -> RobotiqCommand | None:
        """The driver's ``stop()``: stop an opening move; closing is left to the guard."""
        r = self._latest()
        cur = self.current
        if cur is not None and not cur.closing and cur.pos != r.pos and not self._holding(r):
            return self._hand_over(dataclasses.replace(cur, pos=r.pos))
        return None

    def _hand_over(self, cmd: RobotiqCommand) -> RobotiqCommand:
        cmd = dataclasses.replace(cmd, t=time.monotonic())
        with self._lock:
            self._pending = cmd  # a newer command supersedes one not yet sent
        self.commands.append(cmd)
        self._wake.set()
        return cmd

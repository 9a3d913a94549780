"""A TEST DOUBLE of a Robotiq 2F gripper behind the Robotiq URCap's ASCII socket.

No offline peer of the URCap exists (it runs inside the UR controller), so
:class:`~bciarm.drivers.robotiq.RobotiqGripper` is tested against this
stand-in: a TCP server on 127.0.0.1 that speaks the protocol
(``SET VAR value ...`` -> ``ack``; ``GET VAR`` -> ``VAR value``) and
simulates the fingers on the wall clock (integrated lazily at every
request, so no thread moves them):

* ``SET ACT 1`` activates: ``STA`` 1 for ``activation_s``, then 3; moving
  before that sets ``FLT 7``;
* with ``GTO 1`` the position runs toward ``POS`` at the ``SPE`` speed of
  the model (counts/s from its speed range and stroke); closing on an
  object of :attr:`RobotiqDouble.object_width` stops there with ``OBJ 2``,
  reaching the target gives ``OBJ 3``, moving ``OBJ 0``;
* :meth:`RobotiqDouble.fault`, :meth:`RobotiqDouble.kill` (closes every
  connection and stops answering: a dead socket) and
  :attr:`RobotiqDouble.garbage` (answers nonsense) inject failures;
  :attr:`RobotiqDouble.estopped` answers ``VAR ?`` as the URCap does while
  the robot is e-stopped.

Every ``SET`` line is recorded in :attr:`RobotiqDouble.sets` with
``time.monotonic()``.  It is **not** a physics model: the force is not
simulated (only recorded as the ``FOR`` count).
"""

from __future__ import annotations

import socket
import threading
import time

from bciarm.drivers.robotiq import MODELS


class RobotiqDouble:
    """One simulated gripper serving the URCap protocol; use as a context manager.

    Parameters
    ----------
    model : str
        ``"2F-85"`` or ``"2F-140"`` (stroke and speed range).
    object_width : float or None
        Width (m) of an object between the fingers; None for none.
    activation_s : float
        Time from ``SET ACT 1`` to ``STA 3``.
    pos0 : int
        Starting finger position (0 open).
    """

    def __init__(self, model: str = "2F-85", object_width: float | None = None,
                 activation_s: float = 0.05, pos0: int = 0) -> None:
        self.spec = MODELS[model]
        self.object_width = object_width
        self.activation_s = float(activation_s)
        self.vars = {"ACT": 0, "GTO": 0, "ATR": 0, "ADR": 0, "FOR": 0, "SPE": 0, "POS": 0,
                     "PRE": 0, "OBJ": 3, "STA": 0, "FLT": 0}
        self.position = float(pos0)
        self.garbage = False
        self.estopped = False
        self.sets: list[tuple[float, str]] = []
        self.gets = 0
        self._activated_at: float | None = None
        self._t = time.monotonic()
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(4)
        self.port = self._server.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._dead = False
        threading.Thread(target=self._accept, name="robotiq-double", daemon=True).start()

    # ------------------------------------------------------------------ server

    def _accept(self) -> None:
        while not self._dead:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while not self._dead:
                try:
                    chunk = conn.recv(1024)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    reply = self.handle(line.decode("ascii", "replace").strip())
                    if self._dead:
                        return
                    try:
                        conn.sendall(reply.encode("ascii") + b"\n")
                    except OSError:
                        return

    def handle(self, line: str) -> str:
        """The reply to one request line."""
        with self._lock:
            self._advance()
            if self.garbage:
                return "?!garbage"
            words = line.split()
            if len(words) >= 3 and words[0] == "SET" and len(words) % 2 == 1:
                pairs = list(zip(words[1::2], words[2::2]))
                if not all(n in self.vars and v.isdigit() for n, v in pairs):
                    return "?"  # the real URCap's answer to what it does not understand varies
                self.sets.append((time.monotonic(), line))
                for name, value in pairs:
                    self._set(name, int(value))
                return "ack"
            if len(words) == 2 and words[0] == "GET" and words[1] in self.vars:
                self.gets += 1
                if self.estopped:
                    return f"{words[1]} ?"
                value = round(self.position) if words[1] == "POS" else self.vars[words[1]]
                return f"{words[1]} {value}"
            return "?"

    def _set(self, name: str, value: int) -> None:
        value = max(0, min(255, value))
        if name == "ACT":
            if value == 1 and self.vars["ACT"] == 0:
                self._activated_at = time.monotonic()
                self.vars["STA"] = 1
            elif value == 0:
                self.vars["STA"] = 0
                self.vars["FLT"] = 0
            self.vars["ACT"] = value
        elif name == "POS":
            self.vars["POS"] = self.vars["PRE"] = value
            self.vars["OBJ"] = 0
        else:
            self.vars[name] = value
        if name == "GTO" and value == 1 and self.vars["STA"] != 3:
            self.vars["FLT"] = 7  # the activation bit must be set before moving

    # ------------------------------------------------------------------ simulation

    def counts_per_s(self) -> float:
        """Finger speed of the current ``SPE`` count, position counts per second."""
        lo, hi = self.spec.speed
        speed = lo + (hi - lo) * self.vars["SPE"] / 255.0
        return speed / self.spec.stroke * 255.0

    def object_pos(self) -> float | None:
        if self.object_width is None:
            return None
        return (1.0 - self.object_width / self.spec.stroke) * 255.0

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._t = now - self._t, now
        v = self.vars
        if v["STA"] == 1 and self._activated_at is not None \
                and now - self._activated_at >= self.activation_s:
            v["STA"] = 3
        if v["STA"] != 3 or v["GTO"] != 1 or v["FLT"] or self.estopped:
            return
        target = float(v["POS"])
        step = self.counts_per_s() * dt
        obj = self.object_pos()
        if target > self.position:  # closing
            new = min(target, self.position + step)
            if obj is not None and self.position <= obj + 1e-9 and new >= obj:
                self.position, v["OBJ"] = obj, 2
                return
            self.position = new
        elif target < self.position:
            self.position = max(target, self.position - step)
        if v["OBJ"] == 2 and obj is not None and abs(self.position - obj) < 1e-6 \
                and target > obj:
            return  # still squeezing the object
        v["OBJ"] = 3 if self.position == target else 0

    # ------------------------------------------------------------------ test controls

    @property
    def width(self) -> float:
        """Current aperture, m."""
        with self._lock:
            self._advance()
            return self.spec.stroke * (1.0 - self.position / 255.0)

    @property
    def moving(self) -> bool:
        with self._lock:
            self._advance()
            return self.vars["OBJ"] == 0

    def fault(self, code: int) -> None:
        """Raise gripper fault ``code`` (the fingers stop)."""
        with self._lock:
            self._advance()
            self.vars["FLT"] = int(code)

    def remove_object(self) -> None:
        """The object slips out: closing fingers go on to their target."""
        with self._lock:
            self._advance()
            self.object_width = None
            if self.vars["OBJ"] == 2:
                self.vars["OBJ"] = 0

    def kill(self) -> None:
        """Close every connection and the listener: a dead socket."""
        self._dead = True
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # unblocks accept(): nothing listens any more
        except OSError:
            pass
        self._server.close()

    close = kill

    def __enter__(self) -> RobotiqDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

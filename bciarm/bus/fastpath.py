"""Same-host fast path for data frames: AF_UNIX ``SOCK_SEQPACKET`` between group processes.

Why: one ZeroMQ hop costs about three thread hand-offs (the sender's I/O
thread, the kernel, the receiver's I/O thread) before the receiving Python
code runs.  Between two processes on one machine a Unix socket lets the
kernel wake the blocked receiver directly: a ping-pong measured one-way
p50 ≈ 12 µs against ≈ 67 µs for pyzmq ``ipc://`` PAIR.  The frames are the
same ``[topic, msgpack]`` pairs and go through the same validation and
sequence checks on receipt as those off ZeroMQ.

Design

* Every group process spawned by the supervisor *listens* on
  ``<fast dir>/<group>.sock`` (the directory is ``0700``: only the session's
  user can connect) next to its ZeroMQ data PUB.
* A subscriber *connects* to each same-host peer's socket instead of
  connecting its ZeroMQ SUB there, and sends a hello with its topic
  prefixes; the publisher then sends it the matching frames (filtering at
  the publisher, like ZeroMQ PUB/SUB).  One connection per publisher →
  subscriber pair.
* ``SOCK_SEQPACKET``: message boundaries kept, in order, reliable, and —
  unlike an unconnected ``SOCK_DGRAM`` receiver, capped at
  ``net.unix.max_dgram_qlen`` (10) datagrams — bounded only by the socket
  buffer (raised to :data:`SOCKET_BUFFER`; ~2000 frames of 2 KiB).
* Sends never block (``MSG_DONTWAIT``): a full buffer drops the frame and
  counts it, exactly like a ZeroMQ high-water mark.
* A frame longer than :data:`CHUNK` bytes travels as several packets
  (first/last flags); the receiver reassembles them, so any frame arrives,
  in order per publisher.  A frame cut by a full buffer is discarded whole
  by the receiver (and counted as dropped by the sender).
* A peer that goes away (EOF, reset) is closed and re-connected every
  :data:`RETRY_NS` until it is back: a restarted peer rebinds the same path.
* Everything is file descriptors registered in the group's one ``epoll``:
  the loop stays single-threaded with one blocking wait.

ZeroMQ stays for peers on other hosts, the supervisor's own messages, the
observer feed, the recorder (it keeps ZeroMQ's deep queues: it must get
every message and may stall on the disk), control, and CURVE sessions.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("bciarm.fastpath")

#: Send/receive buffer asked for on every fast-path socket (bytes; the kernel may cap it).
SOCKET_BUFFER = 4 * 1024 * 1024
#: Largest packet; longer frames are split into several (bytes).
CHUNK = 64 * 1024
#: How often a missing peer is re-connected (ns).
RETRY_NS = 20_000_000
#: A frame being reassembled may not grow beyond this (bytes): the bus bound, twice.
MAX_REASSEMBLY = 16 * 1024 * 1024

_FIRST = 1
_LAST = 2
_HELLO = 0
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
_MAX_PATH = 100  # sun_path holds 108 bytes


def socket_dir(session_dir: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> Path:
    """The directory of a session's fast-path sockets, created ``0700``.

    ``<session>/runtime/fast`` if the socket paths fit ``sun_path`` (108 bytes);
    else a short directory named by a hash of the session path under ``base``
    or, if that is long too, ``/tmp/bciarm-<uid>``: every process of the
    session finds the same one.
    """
    d = Path(session_dir) / "runtime" / "fast"
    if len(str(d)) + 40 > _MAX_PATH:
        name = "fast-" + hashlib.sha1(str(Path(session_dir).resolve()).encode()).hexdigest()[:12]
        for b in ([Path(base)] if base else []) + [Path(f"/tmp/bciarm-{os.getuid()}")]:
            d = b / name
            if len(str(d)) + 40 <= _MAX_PATH:
                break
        d.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if d.stat().st_uid != os.getuid():  # e.g. planted in /tmp by another user
        raise PermissionError(f"fast-path socket directory {d} belongs to another user; remove "
                              "it or set realtime.local_fast_path: false")
    os.chmod(d, 0o700)  # mkdir's mode is masked by the umask; an existing dir keeps its own
    return d


def remove_socket_dir(directory: str | os.PathLike[str] | None) -> None:
    """Remove a session's socket files and their directory (at the end of the session;
    a process killed with -9 leaves its socket file behind)."""
    if directory is None:
        return
    d = Path(directory)
    for f in d.glob("*.sock"):
        try:
            f.unlink()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:  # not empty (not ours to remove) or already gone
        pass


def _same_user(s: socket.socket) -> bool:
    """The process at the other end runs as our user (SO_PEERCRED: pid, uid, gid)."""
    try:
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return True
    return struct.unpack("3i", cred)[1] == os.getuid()


def socket_path(directory: str | os.PathLike[str], group: str) -> str:
    """Where ``group`` listens (group names are config keys: safe as file names)."""
    return str(Path(directory) / f"{group}.sock")


def _tune(s: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:  # pragma: no cover - capped by the kernel, not refused
            pass
    s.setblocking(False)


def _gone(exc: OSError) -> bool:
    return exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF)


class _Out:
    """One subscriber connected to us: its socket and topic prefixes."""

    __slots__ = ("fd", "group", "prefixes", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.prefixes: tuple[bytes, ...] | None = None  # None until the hello came
        self.group = "?"


class _In:
    """One publisher we are connected to."""

    __slots__ = ("fd", "group", "parts", "path", "size", "sock")

    def __init__(self, sock: socket.socket, group: str, path: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.group = group
        self.path = path
        self.parts: list[bytes] = []
        self.size = 0


class FastPath:
    """Both ends of the fast path of one group process.

    Parameters
    ----------
    group : str
        This process's group (sent in the hello, for logs).
    bind : str or None
        Socket path to listen on (None: subscribe only).
    prefixes : list of bytes
        Topic prefixes this process reads (``b""``: everything).
    register, unregister : callable
        Add/remove a file descriptor to/from the process's epoll (readable).
    reject : callable, optional
        Called with a reason for a packet that is no frame at all (bad
        framing); what is inside a frame is the caller's to validate.
    """

    def __init__(self, group: str, bind: str | None, prefixes: list[bytes],
                 register: Callable[[int], None], unregister: Callable[[int], None],
                 reject: Callable[[str], None] = lambda why: None) -> None:
        self.group = group
        self._bad = reject
        self.prefixes = list(prefixes)
        self._register = register
        self._unregister = unregister
        self.outs: list[_Out] = []
        self._out_by_fd: dict[int, _Out] = {}
        self.ins: dict[int, _In] = {}
        self.peers: dict[str, str] = {}  # group -> path
        self._connected: dict[str, _In] = {}
        self._route: dict[bytes, list[_Out]] = {}
        self._next_retry = 0
        #: frames a full buffer made us drop (the caller adds them to the sender's counter)
        self.dropped = 0
        self.listener: socket.socket | None = None
        self._buf = bytearray(CHUNK + 512)
        self._mv = memoryview(self._buf)
        self.listen_fd = -1
        if bind:
            try:
                os.unlink(bind)  # a previous incarnation's socket file
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.bind(bind)
            os.chmod(bind, 0o600)
            s.listen(64)
            s.setblocking(False)
            self.listener, self.listen_fd = s, s.fileno()
            self.path = bind
            self._ino = os.stat(bind).st_ino
            register(self.listen_fd)

    # ----------------------------------------------------------------- subscriber side

    def set_peer(self, group: str, path: str) -> None:
        """Read ``group``'s frames from its socket at ``path`` (connected now or on retry)."""
        if self.peers.get(group) == path:
            return
        old = self._connected.pop(group, None)
        if old is not None:
            self._close_in(old)
        self.peers[group] = path
        self._try_connect(group, path)

    def has_peer(self, group: str) -> bool:
        return group in self.peers

    def retry(self, now_ns: int) -> None:
        """Re-connect the peers we have no connection to (cheap: a failing connect)."""
        if now_ns < self._next_retry or len(self._connected) == len(self.peers):
            return
        self._next_retry = now_ns + RETRY_NS
        for g, path in self.peers.items():
            if g not in self._connected:
                self._try_connect(g, path)

    def _try_connect(self, group: str, path: str) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _tune(s)  # non-blocking from here: a full listen backlog must not stall our loop
        try:
            s.connect(path)
        except OSError:  # not up (yet): ENOENT, ECONNREFUSED, EAGAIN (backlog full)
            s.close()
            return
        hello = json.dumps({"group": self.group,
                            "prefixes": [p.decode() for p in self.prefixes]}).encode()
        try:
            s.send(bytes((_HELLO,)) + hello, _SEND_FLAGS)
        except OSError:
            s.close()
            return
        conn = _In(s, group, path)
        self.ins[conn.fd] = conn
        self._connected[group] = conn
        self._register(conn.fd)
        log.info("[%s] fast path to %s connected", self.group, group)

    def _close_in(self, conn: _In) -> None:
        self.ins.pop(conn.fd, None)
        if self._connected.get(conn.group) is conn:
            del self._connected[conn.group]
        self._unregister(conn.fd)
        conn.sock.close()

    def receive(self, fd: int, handle: Callable[[bytes, Any], None], max_n: int = 1000) -> int:
        """Read what publisher ``fd`` sent (up to ``max_n`` frames); hand each
        ``(topic, payload)`` to ``handle``.  Returns the number of frames."""
        conn = self.ins[fd]
        # Into one reusable buffer (no 64 KiB allocation per packet); what is handed on
        # is copied out first, so the handler may even read the fast path again.
        buf, mv = self._buf, self._mv
        recv_into = conn.sock.recv_into
        n = 0
        while n < max_n:
            try:
                size = recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if not _gone(exc):
                    log.warning("[%s] fast path from %s: %s", self.group, conn.group, exc)
                self._close_in(conn)
                break
            if not size:  # the publisher went away: re-connect on retry
                log.info("[%s] fast path from %s closed", self.group, conn.group)
                self._close_in(conn)
                break
            flags = buf[0]
            if flags == 3:  # a whole frame in one packet (the usual case)
                if size < 2 or 2 + buf[1] > size:
                    self._bad("fast path packet shorter than its topic")
                    continue
                if conn.parts:  # a cut-off longer frame before it: gone
                    conn.parts, conn.size = [], 0
                end = 2 + buf[1]
                n += 1
                handle(bytes(mv[2:end]), bytes(mv[end:size]))
                continue
            data = bytes(mv[:size])
            if flags & _FIRST and (len(data) < 2 or 2 + data[1] > len(data)):
                self._bad("fast path packet shorter than its topic")
                continue
            if flags > 3:
                self._bad(f"fast path packet with flags {flags}")
                continue
            if flags & _FIRST:
                conn.parts = [data]
                conn.size = len(data)
            elif conn.parts:
                conn.parts.append(data[1:])
                conn.size += len(data) - 1
            else:
                continue  # the rest of a frame whose start was dropped
            if conn.size > MAX_REASSEMBLY:
                conn.parts, conn.size = [], 0
                self._bad(f"fast path frame longer than {MAX_REASSEMBLY} bytes")
                continue
            if flags & _LAST:
                first = conn.parts[0]
                end = 2 + first[1]
                topic = first[2:end]
                payload = b"".join([first[end:], *conn.parts[1:]])
                conn.parts, conn.size = [], 0
                n += 1
                handle(topic, payload)
        return n

    # ----------------------------------------------------------------- publisher side

    def accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # pragma: no cover - EMFILE and such
                log.warning("[%s] fast path accept: %s", self.group, exc)
                return
            if not _same_user(s):  # the directory's mode should already make this impossible
                log.warning("[%s] fast path: a process of another user connected; closed",
                            self.group)
                s.close()
                continue
            _tune(s)
            out = _Out(s)
            self._out_by_fd[out.fd] = out
            self._register(out.fd)

    def _out_event(self, out: _Out) -> None:
        """A subscriber's hello, or its going away."""
        while True:
            try:
                data = out.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_out(out)
                return
            if data[0] == _HELLO and out.prefixes is None:
                try:
                    hello = json.loads(data[1:])
                    out.prefixes = tuple(str(p).encode() for p in hello["prefixes"])
                    out.group = str(hello.get("group", "?"))[:64]
                except (ValueError, KeyError, TypeError):
                    log.warning("[%s] fast path: bad hello, closing", self.group)
                    self._close_out(out)
                    return
                self.outs.append(out)
                self._route.clear()
                log.info("[%s] fast path: %s subscribed to %s", self.group, out.group,
                         out.prefixes)

    def _close_out(self, out: _Out) -> None:
        self._out_by_fd.pop(out.fd, None)
        if out in self.outs:
            self.outs.remove(out)
            self._route.clear()
        self._unregister(out.fd)
        out.sock.close()

    def handles(self, fd: int) -> bool:
        return fd == self.listen_fd or fd in self.ins or fd in self._out_by_fd

    def event(self, fd: int, handle: Callable[[bytes, Any], None]) -> int:
        """Serve a readable fd of ours; returns the number of data frames handled."""
        if fd in self.ins:
            return self.receive(fd, handle)
        if fd == self.listen_fd:
            self.accept()
        else:
            out = self._out_by_fd.get(fd)
            if out is not None:
                self._out_event(out)
        return 0

    def send(self, topic_b: bytes, payload: bytes) -> int:
        """Send a frame to every subscriber whose prefixes match; returns the number of
        subscribers it was dropped for (full buffer)."""
        route = self._route.get(topic_b)
        if route is None:
            route = [o for o in self.outs if o.prefixes and any(topic_b.startswith(p)
                                                                 for p in o.prefixes)]
            if len(self._route) < 4096:
                self._route[topic_b] = route
        if not route:
            return 0
        dropped = 0
        tl = bytes((3, len(topic_b)))
        if len(payload) + len(topic_b) + 2 <= CHUNK:
            bufs = [tl, topic_b, payload]
            for out in route:
                try:
                    out.sock.sendmsg(bufs, (), _SEND_FLAGS)
                except OSError as exc:
                    dropped += self._send_failed(out, exc)
            return dropped
        view = memoryview(payload)
        first_len = CHUNK - 2 - len(topic_b)
        for out in list(route):
            try:
                out.sock.sendmsg([bytes((_FIRST, len(topic_b))), topic_b, view[:first_len]], (),
                                 _SEND_FLAGS)
                pos = first_len
                while pos < len(view):
                    part = view[pos:pos + CHUNK - 1]
                    pos += len(part)
                    out.sock.sendmsg([bytes((_LAST if pos >= len(view) else 0,)), part], (),
                                     _SEND_FLAGS)
            except OSError as exc:
                # (a partial frame is discarded by the receiver at the next first packet)
                dropped += self._send_failed(out, exc)
        return dropped

    def _send_failed(self, out: _Out, exc: OSError) -> int:
        """Drops a failed send counts: a full buffer (EAGAIN) is one; a gone peer is closed."""
        if _gone(exc):
            self._close_out(out)
            return 0
        return 1

    def fds(self) -> list[int]:
        return [*([self.listen_fd] if self.listener else []), *self.ins, *self._out_by_fd]

    def close(self) -> None:
        for conn in list(self.ins.values()):
            self._close_in(conn)
        for out in list(self._out_by_fd.values()):
            self._close_out(out)
        if self.listener is not None:
            self._unregister(self.listen_fd)
            self.listener.close()
            self.listener = None
            try:  # unless a new incarnation bound the path meanwhile
                if os.stat(self.path).st_ino == self._ino:
                    os.unlink(self.path)
            except OSError:
                pass

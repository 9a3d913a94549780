"""Real-time runtime: one OS process per node or group, a ZeroMQ bus, wall clock.

Each group process (``python -m bciarm.bus.realtime SPEC.json``) builds its
nodes from the session's resolved ``config.yaml`` and opens

* a **data** PUB socket it *binds* (``data_bind``; multipart
  ``[topic, msgpack]``, the same codec as inline) and a SUB socket that
  *connects straight to every peer's data socket* (``peers``: the other
  groups and the supervisor).  Data take one hop, publisher → subscriber;
  ZeroMQ filters by topic at the publisher, so a group only receives what
  its nodes read,
* an **observer** PUB connected to the broker's XSUB: the broker (XSUB/XPUB
  proxy) is the one place to subscribe to *every* topic (monitors, tools).
  A publisher sends there only what some observer subscribed to,
* a DEALER socket to the supervisor's ROUTER (the control channel: states,
  heartbeats, the peer directory, commands; JSON, never pickle),
* an effector process: the **e-stop line**, a PULL socket it binds
  (``estop_bind``) that operator tools push ``estop`` events to directly
  (:func:`bciarm.commands.realtime.send_estop`), so an e-stop reaches the
  effector in one hop, not behind the supervisor's loop.

The loop is single-threaded: wait on one ``epoll`` (the fast-path sockets and
every ZeroMQ socket's ``ZMQ_FD``) until the next tick is due (a blocking wait,
no busy wait), hand every frame through the same validation as the inline
runtime (plus a per-publisher sequence check), tick the nodes that are due on
``time.monotonic_ns``.  A wake-up for a fast-path frame costs one ``epoll_wait``
and one ``recv`` -- no ``zmq_poll`` pass over the ZeroMQ sockets (see
:meth:`GroupRunner._zmq_ready` for how their edge-triggered descriptors are
kept honest).  Sockets are created inside the process that uses them; the spec
passed in is plain JSON.

Node states: ``STARTING`` (building nodes, binding, connecting) → ``READY``
(a heartbeat of every peer came in over the direct path: our subscriptions
are in place) → ``RUNNING`` (the supervisor said go; ticks run) →
``STOPPING`` → exit.  A callback that raises is counted (``errors``) and
logged; the process reports ``FAULT`` only if it cannot start.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from bciarm.bus import codec
from bciarm.bus.fastpath import FastPath
from bciarm.bus.messages import Event, Header, Heartbeat, Message
from bciarm.bus.node import Node
from bciarm.bus.security import serve_curve

log = logging.getLogger("bciarm.realtime")

NS_PER_S = 1_000_000_000
STATES = ("STARTING", "READY", "RUNNING", "STOPPING", "FAULT")
#: Frames on the bus larger than this are rejected by the nodes (bytes); the
#: broker drops a publisher whose message exceeds twice this (ZMQ_MAXMSGSIZE).
MAX_BUS_FRAME = codec.MAX_FRAME_BYTES
#: An e-stop on the direct line older than this is stale (queued across a restart) and
#: rejected; the supervisor's control channel carries every e-stop as well.
ESTOP_LINE_MAX_AGE_NS = 500_000_000
#: The group loop asks every ZeroMQ socket for ZMQ_EVENTS at least this often, besides
#: when a socket's descriptor fires or the loop touched it (ns).
ZMQ_RECHECK_NS = 5_000_000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (tests and the supervisor use random ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """Linux: get SIGKILL when the supervisor dies, so no orphan keeps a device moving."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - not Linux
        pass
    if os.getppid() == 1:  # parent already gone
        os._exit(1)


def set_realtime_priority(priority: int) -> bool:
    """Run this process (and the threads it starts after, ZeroMQ's I/O threads
    included) under ``SCHED_FIFO`` at ``priority`` (1–99); 0 leaves it alone.

    Where the OS refuses (not root, no ``RLIMIT_RTPRIO``), log it and carry on
    with normal scheduling.  The loops block in ``poll`` (no busy waiting), and
    the kernel's RT throttling keeps a runaway from locking a core.
    """
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
        return True
    except (OSError, AttributeError) as exc:
        log.warning("SCHED_FIFO priority %d not allowed here (%s): normal scheduling",
                    priority, exc)
        return False


def sub_prefixes(patterns: tuple[str, ...]) -> list[bytes]:
    """ZMQ SUB prefixes for node input patterns (``*`` → everything)."""
    out: set[bytes] = set()
    for p in patterns:
        if p == "*":
            return [b""]
        out.add((p.removesuffix("*")).encode())
    return sorted(out)


def bind_data(sock: zmq.Socket, endpoint: str | None, control: str) -> str:
    """Bind a process's data socket; return the endpoint peers connect to.

    ``endpoint`` is the one the supervisor assigned (a fixed port, so that
    subscribers reconnect by themselves after a restart).  If it is taken, or
    none was given (a group started by hand on another host), bind a free port
    on the address that routes to the supervisor's ``control`` endpoint; the
    supervisor learns it from our state messages and tells the peers.
    """
    if endpoint:
        try:
            sock.bind(endpoint)
            return connect_address(endpoint, control)
        except zmq.ZMQError as exc:
            log.warning("data endpoint %s unavailable (%s): binding a free port", endpoint, exc)
    host = control.split("://", 1)[1].rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # no packet is sent: this only picks the route
        local = probe.getsockname()[0]
    sock.bind(f"tcp://{local}:*")
    return sock.get(zmq.LAST_ENDPOINT).decode()


def connect_address(endpoint: str, control: str) -> str:
    """The address peers connect to for a bound ``endpoint`` (wildcard hosts resolved)."""
    host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
    if host in ("0.0.0.0", "*"):
        host = control.split("://", 1)[1].rsplit(":", 1)[0]
        if host in ("0.0.0.0", "*"):
            host = "127.0.0.1"
    return f"tcp://{host}:{port}"


def node_rng(seed: int, name: str, incarnation: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(incarnation)])


def configure_curve(sock: zmq.Socket, security: dict[str, Any] | None) -> None:
    """Make ``sock`` a CURVE client if the spec asks for it."""
    if not security or security.get("mode") != "curve":
        return
    from bciarm.bus.security import load_client_keys

    pub, sec, server_pub = load_client_keys(security)
    sock.curve_publickey = pub
    sock.curve_secretkey = sec
    sock.curve_serverkey = server_pub


class SeqTracker:
    """Per (topic, src) sequence check: duplicates and out-of-order frames are rejected.

    A publisher that restarted (seq went back *and* its clock went forward)
    is accepted and tracked afresh.
    """

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], tuple[int, int]] = {}
        #: messages lost on the way (gaps in a publisher's sequence), since the last read
        self.gap = 0

    def check(self, topic: str, h: Header) -> str | None:
        key = (topic, h.src)
        prev = self.last.get(key)
        self.gap = 0
        if prev is not None and h.seq <= prev[0]:
            if h.t_ns <= prev[1]:
                return "duplicate_seq" if h.seq == prev[0] else "out_of_order"
            log.info("%s on %s restarted (seq %d after %d)", h.src, topic, h.seq, prev[0])
        elif prev is not None:
            self.gap = h.seq - prev[0] - 1
        self.last[key] = (h.seq, h.t_ns)
        return None


class LatencyWindow:
    """Rolling loop latencies (µs) for heartbeat percentiles."""

    def __init__(self, n: int = 2000) -> None:
        self.samples: deque[float] = deque(maxlen=n)

    def add(self, us: float) -> None:
        self.samples.append(us)

    def percentiles(self) -> tuple[float, float]:
        if not self.samples:
            return 0.0, 0.0
        a = np.fromiter(self.samples, float)
        p50, p99 = np.percentile(a, [50, 99])
        return float(p50), float(p99)


@dataclass
class _Ctx:
    runner: GroupRunner
    node: Node
    rng: np.random.Generator
    log: logging.Logger
    session_dir: Path | None

    def __post_init__(self) -> None:
        # what nodes call per message: straight into the runner (no Python frame between)
        self.publish = functools.partial(self.runner.publish, self.node)  # type: ignore[method-assign]
        self.now_ns = time.monotonic_ns  # type: ignore[method-assign]

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def publish(self, topic: str, msg: Message) -> None:
        self.runner.publish(self.node, topic, msg)


@dataclass
class _Slot:
    node: Node
    period_ns: int = 0
    next_ns: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)


def build_node(cfg: Any, name: str, record_flush: int | None = None,
               classes: dict[str, Any] | None = None) -> Node:
    """Instantiate graph node ``name`` (or the recorder) exactly as the inline session does.

    ``classes`` maps a node name to ``{"cls": "module:Class", "params": {...}}`` for nodes
    outside any graph config (the bus benchmark's).
    """
    from bciarm.config import node_class, node_params
    from bciarm.record import Recorder

    if classes and name in classes:
        import importlib

        mod, _, cls_name = classes[name]["cls"].partition(":")
        cls = getattr(importlib.import_module(mod), cls_name)
        return cls(name, **classes[name].get("params", {}))

    if name == "recorder" and name not in cfg.nodes:
        return Recorder("recorder", flush_every=record_flush or cfg.record.flush_every)
    return node_class(cfg.nodes[name])(name, **node_params(cfg, name))


def repair_log(path: Path) -> int:
    """Cut a torn tail (a recorder killed mid-write) so appends stay readable.

    Returns the number of bytes removed.
    """
    from bciarm.record import LogReader

    if not path.exists() or path.stat().st_size == 0:
        return 0
    reader = LogReader(path)
    for _ in reader:
        pass
    size = path.stat().st_size
    if reader.valid_bytes < size:
        with path.open("r+b") as f:
            f.truncate(reader.valid_bytes)
        return size - reader.valid_bytes
    return 0


#: Measured end-effector speed below which an effector counts as stopped (m/s).
STILL_M_S = 0.005


def at_rest(node: Node) -> bool:
    """True if an effector node is commanding zero and its measured speed is below
    :data:`STILL_M_S` (or it has no status yet)."""
    ctl = getattr(node, "controller", None)
    last = getattr(ctl, "last", None)
    if last is None:
        return True
    cmd = np.asarray(getattr(last, "command", np.zeros(1)), float)
    v = np.asarray(getattr(last, "velocity", np.zeros(1)), float)
    return bool(np.all(cmd == 0) and np.linalg.norm(v) < STILL_M_S)


class GroupRunner:
    """One process of the real-time runtime: a group of nodes on the bus.

    Parameters
    ----------
    spec : dict
        ``group``, ``nodes`` (names, graph order), ``config`` (path to the
        resolved config.yaml), ``session_dir``, ``data_bind`` (this process's
        data endpoint), ``peers`` (``[{"group", "endpoint", "nodes"}]``: the
        data endpoints to subscribe to; peers with ``nodes`` are awaited
        before READY), ``xsub`` (the broker's observer feed), ``control``,
        ``hb_s``, ``seed``, ``incarnation``, ``replay`` (events to hand the
        nodes after start: the session's sticky state), ``hold``,
        ``security``.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.group = spec["group"]
        self.hb_ns = round(float(spec.get("hb_s", 0.1)) * NS_PER_S)
        self.state = "STARTING"
        self.seq = SeqTracker()
        self.rejected: Counter[str] = Counter()
        self.slots: list[_Slot] = []
        self.nodes: list[Node] = []
        self._stop = False
        self._drain_effectors = False
        self.hold = bool(spec.get("hold", False))
        self._readers: dict[str, list[Node]] = {}
        self._stateful: list[Node] = []
        self._saved_version: dict[str, Any] = {}
        self.node_group: dict[str, str] = {}
        self.awaited: set[str] = set()
        self.peers_seen: set[str] = set()
        self._t_start = time.monotonic_ns()
        self.obs: zmq.Socket | None = None
        #: topic prefixes some observer subscribed to on the broker
        self.observed: set[bytes] = set()
        self.auth: Any = None
        self._local: deque = deque()
        self.bus_rx_ns = 0
        self._in_local = False
        self.names: set[str] = set()
        self.local_topics = False
        self.fast: FastPath | None = None
        #: prefixes ZeroMQ subscribers of our data socket want, and per-topic answers
        self.zmq_wanted: set[bytes] = set()
        self._zmq_route: dict[bytes, bool] = {}
        self._writers: list[Node] = []
        self.ctx = zmq.Context()
        self.estop_in: zmq.Socket | None = None

    # ------------------------------------------------------------------ sockets

    def _sockets(self) -> None:
        sec = self.spec.get("security")
        # Reconnect fast after a peer or broker restart (default: 100 ms).
        self.ctx.setsockopt(zmq.RECONNECT_IVL, 20)
        self.ctx.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        # The data socket: bound here, subscribers connect straight to it.
        # An XPUB: it tells us which prefixes ZeroMQ subscribers want, so a message no one
        # reads over ZeroMQ (same-host peers read the fast path) costs no send.
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.linger = 0
        self.pub.sndhwm = 10000
        servers = [self.pub]
        if self.spec.get("estop_bind"):
            self.estop_in = self.ctx.socket(zmq.PULL)
            self.estop_in.linger = 0
            self.estop_in.setsockopt(zmq.MAXMSGSIZE, 4096)
            servers.append(self.estop_in)
        self.auth = serve_curve(self.ctx, servers, sec)
        self.data_ep = bind_data(self.pub, self.spec.get("data_bind"), self.spec["control"])
        if self.estop_in is not None:
            self.estop_in.bind(self.spec["estop_bind"])
        # The observer feed: the same messages to the broker, for whoever subscribes there.
        # An XPUB, so that we learn what observers want and skip the send (≈ 6 µs of CPU
        # per message) when nobody watches that topic.
        self.obs = None
        if self.spec.get("xsub"):
            self.obs = self.ctx.socket(zmq.XPUB)
            self.obs.linger = 0
            self.obs.sndhwm = 10000
            configure_curve(self.obs, sec)
            self.obs.connect(self.spec["xsub"])
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.rcvhwm = 10000
        # A peer sending more than twice the frame bound is cut off before it is read in.
        self.sub.setsockopt(zmq.MAXMSGSIZE, 2 * MAX_BUS_FRAME)
        configure_curve(self.sub, sec)
        prefixes: set[bytes] = set()
        for n in self.nodes:
            prefixes.update(sub_prefixes(tuple(n.inputs)))
        self._want_hb = not any(b"hb.".startswith(p) for p in prefixes)
        for p in sorted(prefixes):
            self.sub.setsockopt(zmq.SUBSCRIBE, p)
        if self._want_hb:  # peers' heartbeats, until READY (proof the direct path works)
            self.sub.setsockopt(zmq.SUBSCRIBE, b"hb.")
        self.ctl = self.ctx.socket(zmq.DEALER)
        self.ctl.linger = 0
        self.ctl.identity = f"{self.group}:{os.getpid()}".encode()
        self.ctl.connect(self.spec["control"])
        # One epoll over plain file descriptors: the fast path's sockets and each ZeroMQ
        # socket's ZMQ_FD.  zmq_poll would cost two poll(2) passes and a ZMQ_EVENTS query
        # per ZeroMQ socket on every wake-up -- on the data path, where a fast-path frame
        # needs none of them.  ZMQ_FD signals edges: a socket is asked for its ZMQ_EVENTS
        # when its descriptor fires and, before blocking, after anything touched it
        # (``_zdirty``); its handler then reads until ZMQ_EVENTS shows no input.
        self._ep = select.epoll()
        self._zsocks = [s for s in (self.estop_in, self.ctl, self.sub, self.obs, self.pub)
                        if s is not None]
        self._zfd = {s.get(zmq.FD): s for s in self._zsocks}
        self._fds = list(self._zfd)
        for fd in self._fds:
            self._ep.register(fd, select.EPOLLIN)
        self._zdirty = True
        self._zcheck_next = 0
        if self.spec.get("fast_bind"):
            # Same-host peers: data over Unix sockets (bciarm.bus.fastpath), not ZeroMQ.
            self.fast = FastPath(self.group, self.spec["fast_bind"],
                                 sorted(prefixes | ({b"hb."} if self._want_hb else set())),
                                 self._fd_on, self._fd_off,
                                 lambda why: self._reject("", "garbage", why))
        self.peer_eps: dict[str, str] = {}
        self.set_peers(self.spec.get("peers", []))

    def _fd_on(self, fd: int) -> None:
        self._ep.register(fd, select.EPOLLIN)
        self._fds.append(fd)

    def _fd_off(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (KeyError, OSError, ValueError):  # not registered, or already closed
            pass
        if fd in self._fds:
            self._fds.remove(fd)

    def _zmq_ready(self, now: int) -> list[zmq.Socket]:
        """ZeroMQ sockets with input waiting, if anything touched them since the last
        look (a send, a receive, a connect can take in the ZMQ_FD signal) or the last
        look is :data:`ZMQ_RECHECK_NS` old (a safety net, as cheap as it is rare); else none."""
        if not self._zdirty and now < self._zcheck_next:
            return []
        self._zdirty = False
        self._zcheck_next = now + ZMQ_RECHECK_NS
        return [z for z in self._zsocks if z.get(zmq.EVENTS) & zmq.POLLIN]

    def _obs_subscriptions(self) -> None:
        """Observers (un)subscribed through the broker: ``\x01topic`` / ``\x00topic``."""
        while self.obs.get(zmq.EVENTS) & zmq.POLLIN:
            msg = self.obs.recv(zmq.NOBLOCK)
            if msg[:1] == b"\x01":
                self.observed.add(bytes(msg[1:]))
            elif msg[:1] == b"\x00":
                self.observed.discard(bytes(msg[1:]))

    def _data_subscriptions(self) -> None:
        """ZeroMQ subscribers of our data socket (un)subscribed (XPUB: counted per prefix)."""
        while self.pub.get(zmq.EVENTS) & zmq.POLLIN:
            msg = self.pub.recv(zmq.NOBLOCK)
            if msg[:1] == b"\x01":
                self.zmq_wanted.add(bytes(msg[1:]))
            elif msg[:1] == b"\x00":
                self.zmq_wanted.discard(bytes(msg[1:]))
            self._zmq_route.clear()

    def _zmq_reads(self, topic_b: bytes) -> bool:
        """Some ZeroMQ subscriber reads ``topic_b`` (memoised per topic until a change)."""
        got = self._zmq_route.get(topic_b)
        if got is None:
            got = any(topic_b.startswith(p) for p in self.zmq_wanted)
            if len(self._zmq_route) < 4096:
                self._zmq_route[topic_b] = got
        return got

    def _observed(self, topic_b: bytes) -> bool:
        return any(topic_b.startswith(p) for p in self.observed)

    def set_peers(self, peers: list[dict[str, Any]]) -> None:
        """(Re)connect the SUB to the peers' data endpoints (the supervisor's directory)."""
        self._zdirty = True
        for peer in peers:
            g, ep = peer["group"], peer.get("endpoint")
            if g == self.group:
                continue
            for node in peer.get("nodes", ()):
                self.node_group[node] = g
            if peer.get("nodes"):
                self.awaited.add(g)
            if self.fast is not None and peer.get("fast"):
                old = self.peer_eps.pop(g, None)
                if old:  # it was on ZeroMQ: one transport per peer, or frames come twice
                    try:
                        self.sub.disconnect(old)
                    except zmq.ZMQError:
                        pass
                self.fast.set_peer(g, peer["fast"])
                continue
            if not ep or self.peer_eps.get(g) == ep:
                continue
            old = self.peer_eps.get(g)
            if old:
                try:
                    self.sub.disconnect(old)
                except zmq.ZMQError:
                    pass
            self.sub.connect(ep)
            self.peer_eps[g] = ep

    def send_ctl(self, **msg: Any) -> None:
        msg.setdefault("group", self.group)
        msg.setdefault("pid", os.getpid())
        self._zdirty = True
        try:
            self.ctl.send(json.dumps(msg, default=_json_default).encode(), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def set_state(self, state: str, **extra: Any) -> None:
        self.state = state
        self.send_ctl(t="state", state=state, t_ns=time.monotonic_ns(),
                      data=getattr(self, "data_ep", None), **extra)

    def _check_ready(self, now: int) -> bool:
        """Every awaited peer was heard on the direct path (or, after a restart, a peer
        stays silent for a second: it is down itself and will reconnect by itself)."""
        if self.awaited <= self.peers_seen:
            return True
        if int(self.spec.get("incarnation", 0)) > 0 and now - self._t_start > NS_PER_S:
            log.warning("[%s] READY without hearing %s", self.group,
                        sorted(self.awaited - self.peers_seen))
            return True
        return False

    # ------------------------------------------------------------------ bus

    def publish(self, sender: Node, topic: str, msg: Message) -> None:
        try:
            topic_b, payload = codec.encode(topic, msg)
        except codec.CodecError as exc:
            self._reject(topic, exc.reason, str(exc))
            return
        # Same-host peers first: theirs is the latency-critical copy; ZeroMQ (other hosts,
        # the recorder) and observers after.
        fast = self.fast
        if fast is not None and fast.outs:
            sender.counters.dropped += fast.send(topic_b, payload)
        if self._zmq_reads(topic_b):
            self._zdirty = True
            try:
                self.pub.send_multipart([topic_b, payload], zmq.NOBLOCK, copy=len(payload) < 65536)
            except zmq.Again:
                sender.counters.dropped += 1
        if self.observed and self._observed(topic_b):
            self._zdirty = True
            try:  # observers only: a slow or absent broker never holds the data path up
                self.obs.send_multipart([topic_b, payload], zmq.NOBLOCK,
                                        copy=len(payload) < 65536)
            except zmq.Again:
                pass
        if self.local_topics and any(n is not sender and n.subscribes_to(topic)
                                     for n in self.nodes):
            # Nodes of one group get each other's messages in process (FIFO,
            # after the current callback, like inline), not through a socket.
            self._local.append((topic, msg, payload))
            self._drain_local()

    def _drain_local(self) -> None:
        if self._in_local:
            return
        self._in_local = True
        try:
            while self._local:
                topic, msg, payload = self._local.popleft()
                self.deliver(topic, msg, payload, skip_src=msg.header.src)
        finally:
            self._in_local = False

    def _reject(self, topic: str, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        n = self.rejected[reason]
        if n <= 20 or n % 1000 == 0:  # a flood of bad frames must not become a flood of logs
            log.warning("[%s] rejected frame on %r: %s (%d so far with this reason)",
                        self.group, topic[:40], detail[:200], n)
        hit = [n for n in self.nodes if n.subscribes_to(topic)] or self.nodes  # not memoised: junk topics
        for n in hit:
            n.counters.rejected += 1
            n.counters.rejected_by_reason[reason] += 1
            try:
                n.on_rejected(topic, reason, detail)
            except Exception:  # noqa: BLE001 - a node's bug must not stop the process
                n.counters.errors += 1

    def handle_frame(self, parts: list[bytes]) -> None:
        """Validate one multipart frame off the bus and deliver it."""
        if len(parts) != 2:
            topic = parts[0].decode("utf-8", "replace") if parts else ""
            self._reject(topic, "garbage", f"frame has {len(parts)} parts, expected 2")
            return
        self.handle_data(*parts)

    def handle_data(self, topic_b: bytes, payload: Any) -> None:
        """Validate one ``(topic, payload)`` off the bus (ZeroMQ or the fast path) and
        deliver it."""
        if len(payload) > MAX_BUS_FRAME:
            self._reject(bytes(topic_b).decode("utf-8", "replace"), "oversized",
                         f"{len(payload)} bytes > {MAX_BUS_FRAME}")
            return
        try:
            topic, msg = codec.decode(topic_b, payload)
        except codec.CodecError as exc:
            self._reject(bytes(topic_b).decode("utf-8", "replace"), exc.reason, str(exc))
            return
        h = msg.header
        if self.state == "STARTING" and topic.startswith("hb."):
            g = self.node_group.get(h.src)
            if g is not None:
                self.peers_seen.add(g)
        if self.local_topics and h.src in self.names:
            return  # our own group's message: already delivered in process
        seq = self.seq
        why = seq.check(topic, h)
        if why is not None:
            self._reject(topic, why, f"seq {h.seq} from {h.src}")
            return
        if seq.gap > 0:
            # PUB/SUB drop silently (high-water marks, a broker restart): seq gaps show it
            for n in self.nodes:
                if n.subscribes_to(topic):
                    n.counters.dropped += seq.gap
        self.deliver(topic, msg, payload)

    def readers(self, topic: str) -> list[Node]:
        """The group's nodes that read ``topic`` (memoised: inputs are fixed once started)."""
        got = self._readers.get(topic)
        if got is None:
            got = [s.node for s in self.slots if s.node.subscribes_to(topic)]
            if len(self._readers) < 4096:  # bounded: topics come off the wire
                self._readers[topic] = got
        return got

    def deliver(self, topic: str, msg: Message, payload: bytes | None = None,
                skip_src: str | None = None) -> None:
        readers = self._readers.get(topic)
        if readers is None:
            readers = self.readers(topic)
        held = (self._drain_effectors or self.hold) and topic == "intent"
        for n in readers:
            if n.name == skip_src:
                continue
            if held and _is_effector(n):
                continue  # stopping, or held by the supervisor: no new motion
            n.counters.received += 1
            try:
                if n.raw_inputs:
                    if payload is None:
                        payload = codec.encode(topic, msg)[1]
                    n.on_frame(topic, payload, msg)
                else:
                    n.on_message(topic, msg)
            except Exception:
                n.counters.errors += 1
                log.exception("[%s] %s failed on %s", self.group, n.name, topic)

    # ------------------------------------------------------------------ control

    def direct_estop(self) -> None:
        """Take e-stops off the e-stop line and latch the effectors now.

        Only fresh, well-formed ``estop`` events are taken (a resume always goes
        through the supervisor); anything else is rejected and counted."""
        while self.estop_in.get(zmq.EVENTS) & zmq.POLLIN:
            parts = self.estop_in.recv_multipart(zmq.NOBLOCK)
            try:
                if len(parts) != 2:
                    raise codec.CodecError("garbage", f"{len(parts)} parts, expected 2")
                topic, msg = codec.decode(*parts)
            except codec.CodecError as exc:
                self._reject("estop-line", exc.reason, str(exc))
                continue
            if topic != "event" or msg.kind != "estop":
                self._reject("estop-line", "not_estop", f"{topic} {getattr(msg, 'kind', '')}")
            elif time.monotonic_ns() - msg.header.t_ns > ESTOP_LINE_MAX_AGE_NS:
                self._reject("estop-line", "stale", f"e-stop sent {msg.header.t_ns} ns")
            else:
                self.deliver("event", msg)
                self._tick_effectors_now()

    def _tick_effectors_now(self) -> None:
        """Bring the effectors' next tick forward to now (this loop pass): the latched
        stop is applied and published without waiting (and being woken) for the tick."""
        now = time.monotonic_ns()
        for s in self.slots:
            if s.period_ns and _is_effector(s.node):
                s.next_ns = min(s.next_ns, now)

    def handle_ctl(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        t = msg.get("t")
        if t == "go" and self.state == "READY":
            now = time.monotonic_ns()
            for s in self.slots:
                s.next_ns = now + s.period_ns
            self.set_state("RUNNING")
        elif t == "peers":
            self.set_peers(msg.get("peers", []))
        elif t == "hold":
            # The supervisor holds the effectors while the bus is not whole (broker
            # down): intents are withheld, the effector's own watchdog stops it.
            self.hold = bool(msg.get("on"))
            log.warning("[%s] hold %s (%s)", self.group, "on" if self.hold else "off",
                        msg.get("reason", ""))
        elif t == "stop":
            self._drain_effectors = bool(msg.get("drain"))
            self._stop = True
        elif t == "event":
            # Safety events also travel on the control channel (they must get
            # through with the broker down); delivered locally, not seq-checked.
            ev = Event(Header(0, time.monotonic_ns(), "supervisor"), msg["kind"], msg.get("data", {}))
            self.deliver("event", ev)
            if ev.kind == "estop":
                self._tick_effectors_now()
        elif t == "sync":
            self._drain_sub(max_n=100000)
            self._drain_fast(max_n=100000)
            for n in self.nodes:
                sync = getattr(n, "sync", None)
                if callable(sync):
                    sync()
            self.send_ctl(t="reply", id=msg.get("id"), ok=True)
        elif t == "query":
            out = {}
            for n in self.nodes:
                val = getattr(n, msg.get("attr", ""), None)
                if val is not None:
                    out[n.name] = _to_jsonable(val)
            self.send_ctl(t="reply", id=msg.get("id"), data=out)

    def heartbeat(self, now: int) -> None:
        nodes = {}
        for s in self.slots:
            n = s.node
            p50, p99 = s.latency.percentiles()
            counters = n.counters.as_dict()
            counters["rejected_by_reason"] = dict(n.counters.rejected_by_reason)
            nodes[n.name] = {"state": self.state, "counters": counters,
                             "latency_p50_us": p50, "latency_p99_us": p99}
            try:
                hb = Heartbeat(n.header(f"hb.{n.name}"), n.name, self.state,
                               {k: v for k, v in n.counters.as_dict().items()}, p50, p99)
                topic_b, payload = codec.encode(f"hb.{n.name}", hb)
                if self.local_topics:
                    self._local.append((f"hb.{n.name}", hb, payload))
                if self.fast is not None and self.fast.outs:
                    self.fast.send(topic_b, payload)
                if self._zmq_reads(topic_b):
                    self.pub.send_multipart([topic_b, payload], zmq.NOBLOCK)
                if self.observed and self._observed(topic_b):
                    self.obs.send_multipart([topic_b, payload], zmq.NOBLOCK)
            except (zmq.Again, codec.CodecError):
                pass
        self._drain_local()
        self.send_ctl(t="hb", state=self.state, t_ns=now, nodes=nodes,
                      rejected=dict(self.rejected), bus_rx_ns=self.bus_rx_ns)

    # ------------------------------------------------------------------ loop

    def _drain_sub(self, max_n: int = 1000) -> int:
        n = 0
        sub = self.sub
        # Ask the socket rather than provoke zmq.Again: an exception per batch costs more.
        while n < max_n and sub.get(zmq.EVENTS) & zmq.POLLIN:
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            self.handle_frame(parts)
        if n:
            self._after_batch()
        return n

    def _drain_fast(self, max_n: int = 1000) -> int:
        n = 0
        if self.fast is not None:
            for fd in list(self.fast.ins):
                n += self.fast.receive(fd, self.handle_data, max_n)
            if n:
                self._after_batch()
        return n

    def _after_batch(self) -> None:
        self.bus_rx_ns = time.monotonic_ns()
        for node in self._writers:
            w = node.writer  # type: ignore[attr-defined]
            if w is not None and not w.closed:
                w.flush()  # the recorder hands every batch to the OS: kill -9 loses nothing written

    def _state_path(self, node: Node) -> Path | None:
        d = self.spec.get("session_dir")
        return Path(d) / "runtime" / f"{node.name}.state.json" if d else None

    def restore_state(self, node: Node) -> None:
        """A restarted node takes back what its previous incarnation saved (a task's trials)."""
        path = self._state_path(node)
        if path is None or not path.exists():
            return
        try:
            node.restore_snapshot(json.loads(path.read_text()))  # type: ignore[attr-defined]
            self._saved_version[node.name] = node.state_version  # type: ignore[attr-defined]
            log.warning("[%s] %s: state restored from %s", self.group, node.name, path.name)
        except (OSError, ValueError, TypeError) as exc:
            log.error("[%s] %s: could not restore %s: %s", self.group, node.name, path, exc)

    def save_states(self) -> None:
        """Save the state of nodes whose ``state_version`` moved (atomic replace)."""
        for node in self._stateful:
            version = node.state_version  # type: ignore[attr-defined]
            if version == self._saved_version[node.name]:
                continue
            path = self._state_path(node)
            if path is None:
                return
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(node.state_snapshot(), default=_json_default))  # type: ignore[attr-defined]
            tmp.replace(path)
            self._saved_version[node.name] = version

    def start_nodes(self) -> None:
        from bciarm.config import load_config

        if self.spec.get("config"):
            cfg, _ = load_config(self.spec["config"])
            seed = cfg.seed
        else:
            cfg, seed = None, 0
        session_dir = Path(self.spec["session_dir"]) if self.spec.get("session_dir") else None
        if "recorder" in self.spec["nodes"] and session_dir is not None:
            from bciarm.record import LOG_NAME

            cut = repair_log(session_dir / LOG_NAME)
            if cut:
                log.warning("recorder: cut a torn tail of %d bytes before appending", cut)
        inc = int(self.spec.get("incarnation", 0))
        for name in self.spec["nodes"]:
            node = build_node(cfg, name, self.spec.get("record_flush"), self.spec.get("classes"))
            node.bind(_Ctx(self, node, node_rng(seed, name, inc),
                           logging.getLogger(f"bciarm.node.{name}"), session_dir))
            self.nodes.append(node)
            period = round(node.tick_s * NS_PER_S) if node.tick_s else 0
            self.slots.append(_Slot(node, period))
        self.names = {n.name for n in self.nodes}
        self._writers = [n for n in self.nodes if hasattr(n, "writer")]  # the recorder
        self.local_topics = len(self.nodes) > 1
        self._sockets()
        self.set_state("STARTING")
        for node in self.nodes:
            node.on_start()
        self._stateful = [n for n in self.nodes if callable(getattr(n, "state_snapshot", None))]
        self._saved_version = {n.name: None for n in self._stateful}
        for node in self._stateful:
            self.restore_state(node)
        for ev in self.spec.get("replay", []):
            self.deliver("event", Event(Header(0, time.monotonic_ns(), "supervisor"),
                                        ev["kind"], ev.get("data", {})))

    def run(self) -> int:
        try:
            self.start_nodes()
        except Exception as exc:
            log.exception("[%s] failed to start", self.group)
            try:
                self.set_state("FAULT", error=str(exc)[:500])
                time.sleep(0.1)
            except Exception:  # noqa: BLE001, S110 - best effort while failing anyway
                pass
            return 2
        # Everything built so far lives for the whole run: keep it out of the collector's
        # way (full collections stay short), and collect young objects less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)
        hb_next = time.monotonic_ns()
        deadline_stop: int | None = None
        while True:
            now = time.monotonic_ns()
            if now >= hb_next:
                self.heartbeat(now)
                hb_next = now + self.hb_ns
                if self.state == "STARTING":
                    if self._check_ready(now):
                        if self._want_hb:
                            self.sub.setsockopt(zmq.UNSUBSCRIBE, b"hb.")
                        self.set_state("READY")
                    else:  # beat often until every peer heard us and we heard them
                        hb_next = now + min(self.hb_ns, 20_000_000)
            if self._stop:
                if deadline_stop is None:
                    self.set_state("STOPPING")
                    deadline_stop = now + 2 * NS_PER_S
                if not self._drain_effectors or all(at_rest(n) for n in self.nodes) \
                        or now > deadline_stop:
                    break
            due = [s.next_ns for s in self.slots if s.period_ns and self.state in ("RUNNING",
                                                                                   "STOPPING")]
            wake = min([hb_next, *due])
            ready = self._zmq_ready(now)
            timeout_ms = (wake - time.monotonic_ns()) / 1e6 if not ready else 0.0
            if timeout_ms >= 1.0:
                # (epoll rounds up to whole milliseconds: ask for the whole ones left)
                evs = self._ep.poll((int(timeout_ms) - 0.5) / 1e3)
            elif timeout_ms > 0:
                # the last millisecond: select has microsecond resolution, so the tick is
                # not late, and a message arriving meanwhile (an e-stop) is not left waiting
                evs = [(fd, 0) for fd in select.select(self._fds, [], [], timeout_ms / 1e3)[0]]
            else:
                evs = self._ep.poll(0)
            fast = self.fast
            data_fds = []
            zfd = self._zfd
            for fd, _ in evs:
                z = zfd.get(fd)
                if z is None:
                    data_fds.append(fd)
                elif z not in ready and z.get(zmq.EVENTS) & zmq.POLLIN:
                    ready.append(z)
            if ready:
                self._zdirty = True  # handled below: ask again before blocking
                if self.estop_in is not None and self.estop_in in ready:
                    self.direct_estop()
                if self.ctl in ready:
                    while True:
                        try:
                            self.handle_ctl(self.ctl.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
            if fast is not None:
                got = 0
                for fd in data_fds:
                    got += fast.event(fd, self.handle_data)
                if got:
                    self._after_batch()
                fast.retry(time.monotonic_ns())
            if ready:
                if self.sub in ready:
                    self._drain_sub()
                if self.obs is not None and self.obs in ready:
                    self._obs_subscriptions()
                if self.pub in ready:
                    self._data_subscriptions()
            if self._stateful:
                self.save_states()
            if self.state in ("RUNNING", "STOPPING"):
                now = time.monotonic_ns()
                for s in self.slots:
                    if s.period_ns and now >= s.next_ns:
                        try:
                            s.node.on_tick(now)
                        except Exception:
                            s.node.counters.errors += 1
                            log.exception("[%s] %s failed in on_tick", self.group, s.node.name)
                        s.latency.add((time.monotonic_ns() - s.next_ns) / 1e3)
                        s.next_ns += s.period_ns
                        if s.next_ns <= now:  # fell behind by a whole period: skip, don't burst
                            s.next_ns = now + s.period_ns
        for node in reversed(self.nodes):
            try:
                node.on_stop()
            except Exception:
                log.exception("[%s] %s failed in on_stop", self.group, node.name)
        self.heartbeat(time.monotonic_ns())
        self.send_ctl(t="state", state="STOPPED", t_ns=time.monotonic_ns())
        time.sleep(0.05)  # let the last control message out (LINGER is 0)
        if self.auth is not None:
            self.auth.stop()
        if self.fast is not None:
            self.fast.close()
        self.ctx.destroy(linger=0)
        return 0


def _is_effector(node: Node) -> bool:
    return hasattr(node, "controller")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Counter):
        return dict(o)
    raise TypeError(type(o).__name__)


def _to_jsonable(val: Any) -> Any:
    import dataclasses

    if isinstance(val, list):
        return [_to_jsonable(v) for v in val]
    if dataclasses.is_dataclass(val):
        return {k: _to_jsonable(v) for k, v in dataclasses.asdict(val).items()}
    if isinstance(val, np.ndarray):
        return val.tolist()
    if isinstance(val, (np.floating, np.integer)):
        return val.item()
    return val


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bciarm.bus.realtime SPEC.json | --standby", file=sys.stderr)
        return 2
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor orders the shutdown
    if argv[0] == "--standby":
        # A warm spare: imports done, waiting for the spec path of a process to replace.
        # Restarts then cost a connect, not an interpreter start.
        for mod in ("bciarm.config", "bciarm.record", "bciarm.decoders.node",
                    "bciarm.effectors.arm", "bciarm.sources.simulated", "bciarm.tasks.center_out"):
            try:
                __import__(mod)
            except ImportError:  # pragma: no cover
                pass
        line = sys.stdin.readline().strip()
        if not line:
            return 0
        argv = [line]
    spec = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=spec.get("log_level", logging.WARNING),
                        format=f"%(levelname)s [{spec['group']}] %(name)s: %(message)s")
    from bciarm.bus import sched  # before any thread starts: threads inherit it

    sched_in_force = sched.apply(int(spec.get("priority", 0)), int(spec.get("nice", 0)),
                                 bool(spec.get("effector", False)))
    log.info("[%s] scheduling %s", spec["group"], sched_in_force)
    runner = GroupRunner(spec)
    signal.signal(signal.SIGTERM, lambda *_: setattr(runner, "_stop", True))
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())

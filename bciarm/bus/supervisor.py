"""Supervisor of the real-time runtime: broker, node processes, control, faults.

The supervisor (the ``bciarm run --mode realtime`` process)

* runs the broker (:mod:`bciarm.bus.broker`, the observer feed) as a child on
  fixed endpoints,
* starts one process per node, or per ``group`` of the graph YAML, plus the
  recorder (:mod:`bciarm.bus.realtime`), each from a JSON spec file,
* is the directory of the direct data path: it assigns every process a data
  endpoint (a fixed port, kept across restarts) and hands each the list of
  its peers; a process started by hand elsewhere reports the endpoint it
  bound and the supervisor passes it on,
* owns the control channel (ROUTER; node processes connect a DEALER) over
  which nodes report their state and heartbeat, and the operator channel (REP)
  that ``bciarm status | stop | estop | resume`` talk to,
* detects a dead process at once (``waitpid``) and a hung one after three
  missed heartbeats, kills it (SIGKILL) and starts it again with the same
  parameters, replaying the session's sticky events (current block, last
  ``decoder_update`` — so a decoder reloads its last saved file — and the
  e-stop latch).  A dead broker is restarted on the same endpoints; the nodes'
  sockets reconnect by themselves.  Data keep flowing meanwhile (they do not
  cross the broker) but the session is not observable, so the supervisor
  *holds* the effectors (intents withheld; each effector's watchdog stops it)
  until its own heartbeat comes back through the new broker.  Every fault and
  restart is published as an ``event`` of kind ``fault`` (``data.action``:
  ``detected`` / ``restarted``), so it lands in the recording.

Everything the supervisor publishes on the bus comes from the ``protocol``
node, as in the inline session.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from bciarm.bus import codec
from bciarm.bus.fastpath import remove_socket_dir, socket_dir, socket_path
from bciarm.bus.messages import Event, Heartbeat, Message, TaskState
from bciarm.bus.node import Node, NodeParams
from bciarm.bus.realtime import NS_PER_S, configure_curve, connect_address, free_port
from bciarm.bus.security import serve_curve

log = logging.getLogger("bciarm.supervisor")

#: A process silent this many heartbeat periods is hung.  Below 3, so that with delivery and
#: our own polling a hang is detected within 3 periods of the process's last heartbeat.
HUNG_PERIODS = 2.5
#: More restarts of one process than this within the window: a crash loop.  The supervisor
#: gives up on it, e-stops every effector and ends the session in order.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0

#: Operator settings published as events: command -> (data key, upper bound; lower is 0).
#: The decoder node applies ``gain`` and (arm) ``assist``; the wheelchair applies ``assist``.
OPERATOR_SETTINGS = {"assist": ("level", 1.0), "gain": ("gain", 3.0)}

#: Event kinds that describe the session's current state; a restarted node gets them again.
STICKY = ("block_start", "block_end", "decoder_update", "assist", "gain")


def runtime_dir() -> Path:
    """Where ``current.json`` (the running session) lives: ``$BCIARM_RUNTIME_DIR`` or
    ``/tmp/bciarm-<uid>``."""
    env = os.environ.get("BCIARM_RUNTIME_DIR")
    return Path(env) if env else Path(f"/tmp/bciarm-{os.getuid()}")


class SessionStopped(Exception):
    """An operator (``bciarm stop``, Ctrl-C) asked the session to end."""


@dataclass
class Proc:
    group: str
    nodes: list[str]
    kind: str  # "effector" | "recorder" | "other" | "broker"
    popen: subprocess.Popen | None = None
    state: str = "STARTING"
    ident: bytes | None = None
    last_hb_ns: int = 0
    spawned_ns: int = 0
    incarnation: int = 0
    restarts: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    stopping: bool = False
    remote: bool = False
    fault_ns: int = 0
    bus_rx_ns: int = 0
    restart_ns: list[int] = field(default_factory=list)
    data_bind: str | None = None
    data: str | None = None  # where peers connect to its data socket
    estop: str | None = None  # an effector process's e-stop line (local, fixed port)


class _ProtocolCtx:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.rng = None
        self.log = logging.getLogger("bciarm.node.protocol")
        self.session_dir = sup.session_dir

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def publish(self, topic: str, msg: Message) -> None:
        self.sup._bus_publish(topic, msg)


class ProtocolVoice(Node):
    Params = NodeParams
    outputs = ("event",)


class Supervisor:
    """Start, watch and stop the processes of one real-time session.

    Parameters
    ----------
    config : GraphConfig
    session_dir : Path
        Holds ``config.yaml`` (the resolved config every process loads),
        the process specs, logs and ``runtime.json``.
    """

    def __init__(self, config: Any, session_dir: Path, *, log_level: int = logging.WARNING,
                 startup_timeout_s: float = 60.0) -> None:
        self.cfg = config
        self.session_dir = Path(session_dir)
        self.rt = config.realtime
        self.hb_ns = round(self.rt.heartbeat_s * NS_PER_S)
        self.log_level = log_level
        self.startup_timeout_ns = round(startup_timeout_s * NS_PER_S)
        bind = self.rt.bind
        host = "127.0.0.1" if bind in ("0.0.0.0", "*") else bind
        self.endpoints = {
            "xsub_bind": f"tcp://{bind}:{self.rt.xsub_port or free_port(host)}",
            "xpub_bind": f"tcp://{bind}:{self.rt.xpub_port or free_port(host)}",
            "control_bind": f"tcp://{bind}:{free_port(host)}",
            "operator": f"tcp://127.0.0.1:{free_port()}",
        }
        for k in ("xsub", "xpub", "control"):
            self.endpoints[k] = self.endpoints[f"{k}_bind"].replace("0.0.0.0", host).replace("*", host)
        self.endpoints["data_bind"] = f"tcp://{bind}:{free_port(host)}"
        self.endpoints["data"] = connect_address(self.endpoints["data_bind"],
                                                 self.endpoints["control"])
        from bciarm.bus.security import security_spec

        self.security = security_spec(config.security, self.rt.keys_dir)
        # Same-host data over Unix sockets (bciarm.bus.fastpath).  Off with CURVE: a Unix
        # socket is guarded by file permissions (the session's user), not by keys.
        self.fast_dir = (socket_dir(self.session_dir, runtime_dir())
                         if self.rt.local_fast_path and self.security is None else None)
        self.procs: dict[str, Proc] = {}
        groups: dict[str, list[str]] = {}
        for name, spec in config.nodes.items():
            groups.setdefault(spec.group or name, []).append(name)
        if config.record.enabled:
            groups["recorder"] = ["recorder"] + groups.get("recorder", [])
        for g, names in groups.items():
            kinds = {config.nodes[n].kind for n in names if n in config.nodes}
            kind = "effector" if "effector" in kinds else ("recorder" if g == "recorder" else "other")
            p = self.procs[g] = Proc(g, names, kind, remote=g in self.rt.remote)
            if not p.remote:  # a remote group binds on its own host and tells us
                p.data_bind = f"tcp://{bind}:{free_port(host)}"
                p.data = connect_address(p.data_bind, self.endpoints["control"])
            self._estop_line(p)
        self.broker = Proc("broker", [], "broker")
        self.sticky: dict[str, dict[str, Any]] = {}
        self.estopped = False
        self.paused = False  # operator `pause`: wait at the next block boundary until `start`
        self.stop_requested = False
        self.events: list[dict[str, Any]] = []  # faults and restarts, for the report
        self.task_msgs: list[TaskState] = []
        self._bus_seen_after_broker = True
        self._hello_back = False
        self._broker_down_ns = 0
        self._hb_next_ns = 0
        self._hb_seen: set[str] = set()
        self._req = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.voice = ProtocolVoice("protocol")
        self.ctx = zmq.Context()
        self.started = False
        self._last_check_ns = 0
        self.spare: subprocess.Popen | None = None
        self.auth: Any = None

    # ------------------------------------------------------------------ processes

    @staticmethod
    def _estop_line(p: Proc) -> None:
        """Give a local effector process its e-stop line: a fixed loopback port that operator
        tools push e-stops to directly (``runtime.json`` lists them; the latch bookkeeping
        stays here)."""
        if p.kind == "effector" and not p.remote:
            p.estop = f"tcp://127.0.0.1:{free_port()}"

    def _spec_path(self, name: str) -> Path:
        d = self.session_dir / "runtime"
        d.mkdir(exist_ok=True)
        return d / f"{name}.json"

    def _popen(self, name: str, module: str, spec: dict[str, Any] | None) -> subprocess.Popen:
        if spec is None:
            arg, stdin, logname = "--standby", subprocess.PIPE, "spare"
        else:
            path = self._spec_path(name)
            path.write_text(json.dumps(spec, indent=1))
            arg, stdin, logname = str(path), subprocess.DEVNULL, name
        logf = (self.session_dir / "runtime" / f"{logname}.log").open("ab")
        # One BLAS thread per process: on a small machine, node processes must not
        # fight each other (and the control loops) for every core.
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        popen = subprocess.Popen([sys.executable, "-m", module, arg], stdout=logf,
                                 stderr=subprocess.STDOUT, stdin=stdin, env=env,
                                 start_new_session=True)
        if spec is None:
            # The warm spare is started right after every restart: its imports (hundreds of
            # ms of CPU) must not take the CPU from running nodes, least of all from an
            # effector that is stopping.  It takes its group's setting when it gets a job
            # (`_renice`, and bciarm.bus.sched in the process itself).
            self._renice(popen, self.rt.spawn_nice, "the spare")
        return popen

    @staticmethod
    def _renice(popen: subprocess.Popen, value: int, what: str) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, popen.pid, value)
        except OSError as exc:  # lowering needs privilege: the process stays where it is
            log.warning("could not set nice %d on %s (pid %d): %s", value, what, popen.pid, exc)

    def _spawn_spare(self) -> None:
        self._spec_path("spare")
        self.spare = self._popen("spare", "bciarm.bus.realtime", None)

    def spawn_broker(self) -> None:
        spec = {"xsub": self.endpoints["xsub_bind"], "xpub": self.endpoints["xpub_bind"],
                "security": self.security, "priority": self.rt.priority, "nice": self.rt.nice}
        self.broker.popen = self._popen("broker", "bciarm.bus.broker", spec)
        self.broker.spawned_ns = time.monotonic_ns()
        self.broker.state = "RUNNING"

    def group_spec(self, p: Proc) -> dict[str, Any]:
        replay = [{"kind": k, "data": d} for k, d in self.sticky.items()
                  if k != "decoder_update" or d.get("node") in p.nodes]
        if self.estopped:
            replay.append({"kind": "estop", "data": {"reason": "latched before restart"}})
        return {"group": p.group, "nodes": p.nodes, "config": str(self.session_dir / "config.yaml"),
                "session_dir": str(self.session_dir), "data_bind": p.data_bind,
                "peers": self.peers(), "xsub": self.endpoints["xsub"],
                "control": self.endpoints["control"], "hb_s": self.rt.heartbeat_s,
                "incarnation": p.incarnation, "replay": replay, "hold": not self._bus_seen_after_broker,
                "security": self.security, "log_level": self.log_level,
                "record_flush": self.cfg.record.flush_every, "fast_bind": self._fast(p),
                "estop_bind": p.estop, **self.scheduling(p)}

    def _fast(self, p: Proc) -> str | None:
        """``p``'s fast-path socket: spawned here (same host), not the recorder (it keeps
        ZeroMQ's deep queues: it must get every message), fast path on."""
        if self.fast_dir is None or p.remote or p.kind == "recorder":
            return None
        return socket_path(self.fast_dir, p.group)

    def scheduling(self, p: Proc) -> dict[str, Any]:
        """CPU scheduling of a group's process (applied by :func:`bciarm.bus.sched.apply`):
        effector processes under ``SCHED_FIFO`` at ``effector_priority``, the others at
        ``priority`` (0: normal) and nice ``nice``."""
        if p.kind == "effector":
            return {"priority": self.rt.effector_priority or self.rt.priority, "nice": 0,
                    "effector": True}
        return {"priority": self.rt.priority, "nice": self.rt.nice, "effector": False}

    def peers(self) -> list[dict[str, Any]]:
        """The directory of data endpoints: every group and the supervisor's own."""
        return [{"group": "supervisor", "endpoint": self.endpoints["data"], "nodes": ["protocol"]},
                *({"group": p.group, "endpoint": p.data, "nodes": p.nodes, "fast": self._fast(p)}
                  for p in self.procs.values())]

    def spawn(self, p: Proc) -> None:
        spec = self.group_spec(p)
        self._spec_path(p.group).write_text(json.dumps(spec, indent=1))
        if p.remote:
            p.state = "STARTING"
            return  # started by hand on another host with this spec
        spare = self.spare
        if spare is not None and spare.poll() is None and self.started:
            try:
                assert spare.stdin is not None
                spare.stdin.write(f"{self._spec_path(p.group)}\n".encode())
                spare.stdin.flush()
                # Now urgent: if it is still importing, it does so at its group's priority.
                self._renice(spare, spec["nice"], f"the spare taking {p.group}")
                p.popen = spare
                self._spawn_spare()
            except OSError:
                spare = None
        else:
            spare = None
        if spare is None:
            p.popen = self._popen(p.group, "bciarm.bus.realtime", spec)
        p.state = "STARTING"
        p.ident = None
        p.spawned_ns = time.monotonic_ns()
        p.last_hb_ns = 0

    # ------------------------------------------------------------------ sockets

    def _sockets(self) -> None:
        c = self.ctx
        c.setsockopt(zmq.RECONNECT_IVL, 20)
        c.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        self.ctl = c.socket(zmq.ROUTER)
        self.ctl.linger = 0
        self.ctl.bind(self.endpoints["control_bind"])
        self.op = c.socket(zmq.REP)
        self.op.linger = 0
        self.op.bind(self.endpoints["operator"])
        # Our data socket (protocol events, our heartbeat), bound like every process's.
        self.pub = c.socket(zmq.PUB)
        self.pub.linger = 0
        self.auth = serve_curve(c, [self.pub], self.security)
        self.pub.bind(self.endpoints["data_bind"])
        # The observer feed (the broker) and a probe of it: our heartbeat coming back.
        self.obs_pub = c.socket(zmq.PUB)
        self.obs_pub.linger = 0
        configure_curve(self.obs_pub, self.security)
        self.obs_pub.connect(self.endpoints["xsub"])
        self.obs_sub = c.socket(zmq.SUB)
        self.obs_sub.linger = 0
        configure_curve(self.obs_sub, self.security)
        self.obs_sub.setsockopt(zmq.SUBSCRIBE, b"hb.protocol")
        self.obs_sub.connect(self.endpoints["xpub"])
        # Task messages and events straight from the groups.
        self.sub = c.socket(zmq.SUB)
        self.sub.linger = 0
        configure_curve(self.sub, self.security)
        for t in (b"task", b"event", b"hb."):
            self.sub.setsockopt(zmq.SUBSCRIBE, t)
        self._sub_eps: dict[str, str] = {}
        self._connect_peers()
        self.poller = zmq.Poller()
        for s in (self.ctl, self.op, self.sub, self.obs_sub):
            self.poller.register(s, zmq.POLLIN)

    def _connect_peers(self) -> None:
        for p in self.procs.values():
            old = self._sub_eps.get(p.group)
            if p.data is None or old == p.data:
                continue
            if old:
                try:
                    self.sub.disconnect(old)
                except zmq.ZMQError:
                    pass
            self.sub.connect(p.data)
            self._sub_eps[p.group] = p.data

    def _bus_publish(self, topic: str, msg: Message) -> None:
        topic_b, payload = codec.encode(topic, msg)
        self.pub.send_multipart([topic_b, payload])
        try:
            self.obs_pub.send_multipart([topic_b, payload], zmq.NOBLOCK)
        except zmq.Again:
            pass

    def bus_heartbeat(self) -> None:
        """``hb.protocol`` on the bus: peers wait for it before READY, and its return
        through the broker tells us the observer feed works."""
        now = time.monotonic_ns()
        if now < self._hb_next_ns:
            return
        starting = any(p.state == "STARTING" for p in self.procs.values())
        self._hb_next_ns = now + (min(self.hb_ns, 20_000_000) if starting or
                                  not self._bus_seen_after_broker else self.hb_ns)
        self.voice.emit(f"hb.{self.voice.name}", Heartbeat, node=self.voice.name,
                        state="RUNNING" if self.started else "STARTING")

    def announce(self, kind: str, **data: Any) -> None:
        """Publish a protocol event (and remember it if it is sticky)."""
        if kind in STICKY:
            if kind in ("block_start", "block_end"):
                self.sticky.pop("block_start", None)
                self.sticky.pop("block_end", None)
            self.sticky[kind] = data
        self.voice.emit("event", Event, kind=kind, data=data)

    def fault_event(self, **data: Any) -> None:
        data = {**data, "t_ns": time.monotonic_ns()}
        self.events.append(data)
        log.warning("fault: %s", data)
        self.announce("fault", **data)

    def send_ctl(self, p: Proc, **msg: Any) -> bool:
        if p.ident is None:
            return False
        try:
            self.ctl.send_multipart([p.ident, json.dumps(msg).encode()], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def request(self, p: Proc, timeout_s: float = 5.0, **msg: Any) -> dict[str, Any] | None:
        """Send a control request to a group and wait for its reply (serving meanwhile)."""
        self._req += 1
        rid = self._req
        if not self.send_ctl(p, id=rid, **msg):
            return None
        self.service_until(lambda: rid in self._replies, timeout_s, allow_stop=True)
        return self._replies.pop(rid, None)

    # ------------------------------------------------------------------ service loop

    def _on_ctl(self, ident: bytes, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        p = self.procs.get(msg.get("group", ""))
        if p is None:
            return
        pid = msg.get("pid")
        if p.popen is not None and not p.remote and pid != p.popen.pid:
            return  # a message from a previous incarnation
        p.ident = ident
        now = time.monotonic_ns()
        t = msg.get("t")
        if t == "state":
            old, p.state = p.state, msg["state"]
            p.last_hb_ns = now
            if msg.get("data") and msg["data"] != p.data:
                # bound elsewhere than assigned (a remote host, a taken port): tell everyone
                p.data = msg["data"]
                self._connect_peers()
                for q in self.procs.values():
                    self.send_ctl(q, t="peers", peers=self.peers())
            elif p.state == "STARTING" and any(q.remote for q in self.procs.values()):
                self.send_ctl(p, t="peers", peers=self.peers())
            if p.state == "READY" and self.started and not p.stopping:
                self.send_ctl(p, t="go")
                for kind in ("estop",) if self.estopped else ():
                    self.send_ctl(p, t="event", kind=kind, data={})
            if p.state == "RUNNING" and p.fault_ns:
                down_ms = (now - p.fault_ns) / 1e6
                self.fault_event(node=p.group, action="restarted", pid=pid, down_ms=down_ms,
                                 incarnation=p.incarnation)
                p.fault_ns = 0
            if p.state == "FAULT":
                log.error("%s failed to start: %s", p.group, msg.get("error"))
            log.info("%s: %s -> %s", p.group, old, p.state)
        elif t == "hb":
            # A local process stamps its heartbeat on our clock: judge its silence from when
            # it beat, not from when we (perhaps short of CPU) got round to reading it.
            sent = int(msg.get("t_ns", 0) or 0)
            p.last_hb_ns = max(p.last_hb_ns, sent if not p.remote and 0 < sent <= now else now)
            p.info = msg.get("nodes", {})
            p.bus_rx_ns = int(msg.get("bus_rx_ns", 0))
            p.rejected = msg.get("rejected", {})
        elif t == "reply":
            self._replies[msg.get("id")] = msg

    def _on_operator(self, raw: bytes) -> dict[str, Any]:
        try:
            req = json.loads(raw)
            cmd = req.get("cmd")
        except (ValueError, AttributeError):
            return {"ok": False, "error": "bad request"}
        if cmd in OPERATOR_SETTINGS:
            key, hi = OPERATOR_SETTINGS[cmd]
            try:
                value = float(req[key])
            except (KeyError, TypeError, ValueError):
                return {"ok": False, "error": f"{cmd} needs a number {key!r}"}
            if not 0.0 <= value <= hi:  # also rejects NaN
                return {"ok": False, "error": f"{cmd} {key} must be in [0, {hi}], got {value}"}
            self.announce(cmd, **{key: value, "by": "operator"})
            return {"ok": True, cmd: value}
        if cmd in ("pause", "start"):
            # Hold at the next block boundary / start the next block (RealtimeSession waits).
            self.paused = cmd == "pause"
            self.announce("operator", action=cmd)
            return {"ok": True, "held": self.paused}
        if cmd == "status":
            return {"ok": True, **self.status()}
        if cmd == "estop":
            self.estop("operator")
            return {"ok": True, "estopped": True}
        if cmd == "resume":
            self.resume("operator")
            return {"ok": True, "estopped": False}
        if cmd == "stop":
            self.stop_requested = True
            return {"ok": True, "stopping": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _on_bus(self, parts: list[bytes]) -> None:
        if len(parts) != 2:
            return
        try:
            _, msg = codec.decode(*parts)
        except codec.CodecError:
            return
        if isinstance(msg, TaskState):
            self.task_msgs.append(msg)
        elif isinstance(msg, Heartbeat):
            self._hb_seen.add(msg.header.src)

    def _on_observer(self, parts: list[bytes]) -> None:
        """Our own heartbeat, back through the broker."""
        try:
            _, msg = codec.decode(*parts)
        except (codec.CodecError, TypeError):
            return
        if msg.header.src == "protocol" and msg.header.t_ns >= self._broker_down_ns:
            self._hello_back = True

    def _bus_recovery(self) -> None:
        """After a broker restart: once our own heartbeat comes back through the new
        broker, release the effectors and record the broker's ``restarted`` event."""
        if not self._hello_back:
            return
        now = time.monotonic_ns()
        self._bus_seen_after_broker = True
        self.hold(False, "broker back")
        self.fault_event(node="broker", action="restarted", pid=self.broker.popen.pid,
                         down_ms=(now - self._broker_down_ns) / 1e6)

    def hold(self, on: bool, reason: str) -> None:
        """Withhold intents from every effector (its watchdog stops it) or release them."""
        for p in self.procs.values():
            if p.kind == "effector":
                self.send_ctl(p, t="hold", on=on, reason=reason)

    def check_processes(self) -> None:
        now = time.monotonic_ns()
        gap = now - self._last_check_ns if self._last_check_ns else 0
        self._last_check_ns = now
        if gap > self.hb_ns:
            # We were busy ourselves: heartbeats may sit unread; don't blame the nodes.
            for p in self.procs.values():
                p.last_hb_ns = max(p.last_hb_ns, now - self.hb_ns)
        b = self.broker
        if b.popen is not None and b.popen.poll() is not None and not b.stopping:
            rc = b.popen.returncode
            self._bus_seen_after_broker = False
            self._hello_back = False
            self._broker_down_ns = now
            self.hold(True, "broker down")
            self.fault_event(node="broker", action="detected", reason=f"exited ({rc})")
            b.restarts += 1
            self.spawn_broker()
        for p in self.procs.values():
            if p.stopping or p.remote:
                continue
            reason = None
            if p.popen is not None and p.popen.poll() is not None:
                reason = f"exited ({p.popen.returncode})"
            elif p.state in ("READY", "RUNNING") and now - p.last_hb_ns > HUNG_PERIODS * self.hb_ns:
                reason = f"hung: no heartbeat for {(now - p.last_hb_ns) / 1e6:.0f} ms"
            elif p.state in ("STARTING",) and now - p.spawned_ns > self.startup_timeout_ns:
                reason = "did not start in time"
            elif p.state == "FAULT":
                reason = "reported FAULT"
            if reason is None:
                continue
            self.restart(p, reason)

    def restart(self, p: Proc, reason: str) -> None:
        old_pid = p.popen.pid if p.popen else None
        if p.popen is not None and p.popen.poll() is None:
            p.popen.kill()
            try:
                p.popen.wait(2)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        now = p.fault_ns = time.monotonic_ns()
        p.state = "FAULT"
        self.fault_event(node=p.group, action="detected", reason=reason, pid=old_pid)
        recent = [t for t in p.restart_ns if now - t < RESTART_WINDOW_S * NS_PER_S]
        if len(recent) >= MAX_RESTARTS:
            # A crash loop: stop trying, stop every effector, end the session in order.
            p.stopping = True
            p.state = "FAILED"
            self.fault_event(node=p.group, action="gave_up",
                             reason=f"{len(recent)} restarts in {RESTART_WINDOW_S:.0f} s")
            self.estop("supervisor: crash loop")
            self.stop_requested = True
            return
        p.restart_ns = [*recent, now]
        p.restarts += 1
        p.incarnation += 1
        self.spawn(p)

    def service(self, timeout_ms: float = 5.0) -> None:
        events = dict(self.poller.poll(timeout_ms))
        if self.ctl in events:
            for _ in range(1000):
                try:
                    ident, raw = self.ctl.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                except ValueError:
                    continue
                self._on_ctl(ident, raw)
        if self.op in events:
            try:
                raw = self.op.recv(zmq.NOBLOCK)
                self.op.send(json.dumps(self._on_operator(raw)).encode())
            except zmq.Again:
                pass
        if self.sub in events:
            for _ in range(1000):
                try:
                    self._on_bus(self.sub.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
        if self.obs_sub in events:
            for _ in range(1000):
                try:
                    self._on_observer(self.obs_sub.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
        if self.voice.ctx is not None:
            self.bus_heartbeat()
        if self.started:
            self.check_processes()
            if not self._bus_seen_after_broker:
                self._bus_recovery()

    def service_until(self, cond: Callable[[], bool], timeout_s: float,
                      allow_stop: bool = False) -> bool:
        """Serve until ``cond()`` or the timeout; raise :class:`SessionStopped` on a stop request."""
        end = time.monotonic() + timeout_s
        while True:
            if cond():
                return True
            if self.stop_requested and not allow_stop:
                raise SessionStopped()
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.service(min(5.0, left * 1000))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Broker, processes, wait for every group READY, then go."""
        self._raise_priority()  # before our sockets: ZeroMQ's I/O thread inherits it
        self._sockets()
        self.voice.bind(_ProtocolCtx(self))  # type: ignore[arg-type]
        self.spawn_broker()
        for p in self.procs.values():
            self.spawn(p)
        self._spawn_spare()
        self.write_runtime_file("starting")
        local = [p for p in self.procs.values() if not p.remote]
        ok = self.service_until(lambda: all(p.state == "READY" for p in self.procs.values())
                                or any(p.state == "FAULT" or (p.popen and p.popen.poll() is not None)
                                       for p in local),
                                self.startup_timeout_ns / NS_PER_S)
        bad = [p.group for p in self.procs.values() if p.state != "READY"]
        if not ok or bad:
            raise RuntimeError(f"groups did not become READY: {bad} (see "
                               f"{self.session_dir / 'runtime'}/<group>.log)")
        # Every group heard us (READY); we must hear every group too (task messages).
        groups = {n for p in self.procs.values() for n in p.nodes}
        if not self.service_until(lambda: groups <= self._hb_seen, 10):
            raise RuntimeError(f"no heartbeat on the bus from {sorted(groups - self._hb_seen)}")
        self.sub.setsockopt(zmq.UNSUBSCRIBE, b"hb.")
        self.started = True
        for p in self.procs.values():
            self.send_ctl(p, t="go")
        self.service_until(lambda: all(p.state == "RUNNING" for p in self.procs.values()), 10)
        self.write_runtime_file("running")

    def estop(self, who: str = "operator") -> None:
        """Latch every effector: over the bus (recorded) and the control channel (no broker needed)."""
        self.estopped = True
        # The control channel first (the shortest path, no broker, no codec), then the
        # bus (recorded; it also reaches the effectors, whichever comes first latches).
        for p in self.procs.values():
            if p.kind == "effector":
                self.send_ctl(p, t="event", kind="estop", data={"reason": who})
        self.announce("estop", reason=who)

    def resume(self, who: str = "operator") -> None:
        self.estopped = False
        self.announce("resume", by=who)
        for p in self.procs.values():
            if p.kind == "effector":
                self.send_ctl(p, t="event", kind="resume", data={"by": who})

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ordered shutdown: effectors decelerate to zero, then the other nodes, the recorder
        last, then the broker."""
        stages = [[p for p in self.procs.values() if p.kind == "effector"],
                  [p for p in self.procs.values() if p.kind == "other"],
                  [p for p in self.procs.values() if p.kind == "recorder"]]
        for stage in stages:
            for p in stage:
                p.stopping = True
                self.send_ctl(p, t="stop", drain=p.kind == "effector")
            end = time.monotonic() + timeout_s
            while time.monotonic() < end and any(
                    p.popen is not None and p.popen.poll() is None for p in stage):
                self.service(10)
            for p in stage:
                if p.popen is not None and p.popen.poll() is None:
                    log.error("%s did not stop in %.0f s: killed", p.group, timeout_s)
                    p.popen.kill()
                    p.popen.wait(2)
                p.state = "STOPPED"
        if self.spare is not None and self.spare.poll() is None:
            self.spare.kill()
            self.spare.wait(5)
        self.broker.stopping = True
        if self.broker.popen is not None and self.broker.popen.poll() is None:
            self.broker.popen.terminate()
            try:
                self.broker.popen.wait(2)
            except subprocess.TimeoutExpired:
                self.broker.popen.kill()
        self.write_runtime_file("ended")
        remove_socket_dir(self.fast_dir)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(linger=0)
        self._restore_priority()

    def _raise_priority(self) -> None:
        """Run the supervising thread at ``realtime.supervisor_nice`` where allowed: on a
        loaded machine it must read heartbeats and hold effectors on time.  Threads it
        starts afterwards (ZeroMQ's I/O thread) inherit it; :meth:`stop` puts it back."""
        try:
            self._nice_before: int | None = os.getpriority(os.PRIO_PROCESS, 0)
            if self.rt.supervisor_nice < self._nice_before:
                os.setpriority(os.PRIO_PROCESS, 0, self.rt.supervisor_nice)
        except OSError as exc:
            log.info("supervisor stays at nice %s (nice %d not allowed: %s)",
                     self._nice_before, self.rt.supervisor_nice, exc)

    def _restore_priority(self) -> None:
        before = getattr(self, "_nice_before", None)
        if before is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, before)
            except OSError:  # pragma: no cover - raising it back is always allowed
                pass
            self._nice_before = None

    def kill_all(self) -> None:
        """Last resort (exceptions): SIGKILL every child still alive."""
        self._restore_priority()
        for p in [*self.procs.values(), self.broker]:
            if p.popen is not None and p.popen.poll() is None:
                p.popen.kill()
        if self.spare is not None and self.spare.poll() is None:
            self.spare.kill()
            self.spare.wait(5)
        remove_socket_dir(self.fast_dir)

    # ------------------------------------------------------------------ reporting

    def status(self) -> dict[str, Any]:
        now = time.monotonic_ns()
        groups = {}
        for p in [self.broker, *self.procs.values()]:
            groups[p.group] = {
                "pid": p.popen.pid if p.popen else None, "state": p.state, "kind": p.kind,
                "hb_age_ms": (now - p.last_hb_ns) / 1e6 if p.last_hb_ns else None,
                "restarts": p.restarts, "nodes": p.info, "rejected": p.rejected}
        return {"session_dir": str(self.session_dir), "estopped": self.estopped,
                "held": self.paused, "block": self.sticky.get("block_start", {}).get("block"),
                "groups": groups, "faults": self.events[-20:], "now_ns": now}

    def write_runtime_file(self, state: str) -> None:
        info = {"pid": os.getpid(), "state": state, "session_dir": str(self.session_dir),
                "operator": self.endpoints["operator"], "endpoints": self.endpoints,
                "security": self.security,  # key file paths, for observers (bciarm.bus.observe)
                "estop": [p.estop for p in self.procs.values() if p.estop],  # e-stop lines
                "config": self.cfg.name, "t": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        text = json.dumps(info, indent=2)
        (self.session_dir / "runtime.json").write_text(text)
        d = runtime_dir()
        d.mkdir(parents=True, exist_ok=True)
        cur = d / "current.json"
        if state == "ended":
            try:
                if json.loads(cur.read_text()).get("pid") == os.getpid():
                    cur.unlink()
            except (OSError, ValueError):
                pass
        else:
            tmp = d / f".current.{os.getpid()}"
            tmp.write_text(text)
            tmp.replace(cur)

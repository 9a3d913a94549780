"""The monitor's view of a running session: decoded messages in, operator commands out.

:class:`SessionObserver` is all the monitor knows about a session.  Two
backends implement it:

* :class:`RealtimeObserver` attaches to a real-time session (``bciarm run
  --mode realtime``) found through ``runtime.json``: it subscribes to every
  topic of the bus and sends operator commands to the supervisor exactly as
  ``bciarm estop | resume | status`` do (:func:`bciarm.commands.realtime.operator_request`).
* :class:`bciarm.monitor.inline.InlineObserver` runs an inline session in
  this process (paced at real time) and taps its bus.

A backend's :meth:`~SessionObserver.pump` runs in its own thread (sockets are
created in the thread that uses them) and hands each decoded message to a
sink; :meth:`~SessionObserver.command` and :meth:`~SessionObserver.health`
may be called from any thread.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bciarm.bus.messages import Message

#: sink(topic, message) — called from the pump thread.
Sink = Callable[[str, Message], None]

#: Operator commands and their argument (None: no argument).  Settings are bounded
#: (lower bound 0): ``assist`` level ≤ 1, ``gain`` ≤ 3.
COMMANDS: dict[str, tuple[str, float] | None] = {
    "estop": None, "resume": None, "pause": None, "start": None,
    "assist": ("level", 1.0), "gain": ("gain", 3.0),
}


class CommandError(ValueError):
    """An operator command was malformed or refused; the message says why."""


def check_command(cmd: str, args: dict[str, Any]) -> dict[str, Any]:
    """Validate an operator command; return its arguments (``{}`` or ``{key: float}``)."""
    if cmd not in COMMANDS:
        raise CommandError(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    spec = COMMANDS[cmd]
    if spec is None:
        return {}
    key, hi = spec
    try:
        value = float(args[key])
    except (KeyError, TypeError, ValueError):
        raise CommandError(f"{cmd} needs a number {key!r}") from None
    if not 0.0 <= value <= hi:
        raise CommandError(f"{cmd} {key} must be in [0, {hi:g}], got {value}")
    return {key: value}


class SessionObserver(abc.ABC):
    """A running session as the monitor sees it."""

    #: "realtime" or "inline"
    kind: str = ""

    @abc.abstractmethod
    def pump(self, sink: Sink, stop: threading.Event) -> None:
        """Hand every message of every topic to ``sink`` until ``stop`` is set or the
        session ends (blocking; run it in a thread)."""

    @abc.abstractmethod
    def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send an operator command (:data:`COMMANDS`) through the session's control path.

        Raises
        ------
        CommandError
            Malformed command, or the session refused or did not answer.
        """

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """``bciarm status --json``'s reply: ``estopped``, ``held``, ``groups`` (per process:
        ``state``, ``hb_age_ms``, ``restarts``, ``nodes`` with ``counters`` and latency)."""

    @property
    @abc.abstractmethod
    def session_dir(self) -> Path | None:
        """The session folder (None before it exists)."""

    def ended(self) -> bool:
        """True once the session is over."""
        return False


class RealtimeObserver(SessionObserver):
    """Attach to a real-time session through its ``runtime.json``.

    Parameters
    ----------
    session : Path, optional
        The session folder; default: the current session
        (``$BCIARM_RUNTIME_DIR/current.json``), as for ``bciarm status``.
    """

    kind = "realtime"

    def __init__(self, session: Path | None = None) -> None:
        from bciarm.commands.realtime import find_runtime

        self.info = _unclick(find_runtime, session)
        self._dir = Path(self.info["session_dir"])
        self._ended = False
        import zmq

        from bciarm.commands.realtime import EstopLine

        # One context for every command (a new one per e-stop would cost time), and the
        # e-stop line to every effector process connected now, ready for a press.
        self._ctx = zmq.Context()
        self._line = EstopLine(self.info, self._ctx)
        self._line_lock = threading.Lock()

    @property
    def session_dir(self) -> Path:
        return self._dir

    def pump(self, sink: Sink, stop: threading.Event) -> None:
        from bciarm.bus.observe import Observer

        # The broker's observer feed, every topic: the session's own CURVE client
        # set-up and codec validation (rejections are counted by the Observer).
        obs = Observer(self._dir, topics=("",))
        try:
            while not stop.is_set():
                got = obs.recv(timeout_s=0.1)
                if got is None:
                    if self._runtime_state() == "ended":
                        self._ended = True
                        return
                    continue
                sink(*got)
        finally:
            obs.close()

    def _runtime_state(self) -> str:
        import json

        path = self._dir / "runtime.json"
        try:
            return json.loads(path.read_text()).get("state", "")
        except FileNotFoundError:
            return "ended"
        except (OSError, ValueError):  # caught mid-write: ask again next time
            return ""

    def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        from bciarm.commands.realtime import operator_request, send_estop

        args = check_command(cmd, args)
        if cmd == "estop":  # the one e-stop path (`bciarm estop` too)
            with self._line_lock:
                reply = _unclick(send_estop, self.info, "operator (monitor)", line=self._line,
                                 context=self._ctx)
        else:
            reply = _unclick(operator_request, self.info, cmd, context=self._ctx, **args)
        if not reply.get("ok"):
            raise CommandError(str(reply.get("error", "refused")))
        return reply

    def health(self) -> dict[str, Any]:
        from bciarm.commands.realtime import operator_request

        return _unclick(operator_request, self.info, "status", timeout_s=1.0, context=self._ctx)

    def ended(self) -> bool:
        return self._ended


def _unclick(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a CLI helper, turning its ClickException into a :class:`CommandError`."""
    import click

    try:
        return fn(*args, **kwargs)
    except click.ClickException as exc:
        raise CommandError(exc.format_message()) from None


class ReplayObserver(SessionObserver):
    """Play a finished session's message log back to the monitor (read-only).

    Messages are handed on in recorded order, paced by their header times at
    ``speed`` × real time; operator commands are refused (a recording cannot be
    steered).

    Parameters
    ----------
    session : Path
        A session folder (with ``messages.bcilog``).
    speed : float
        Playback speed (1 = as recorded).
    """

    kind = "replay"

    def __init__(self, session: Path, speed: float = 1.0) -> None:
        from bciarm.record import LOG_NAME

        self._dir = Path(session)
        self.log = self._dir / LOG_NAME
        if not self.log.is_file():
            raise CommandError(f"{self._dir}: not a session folder (no {LOG_NAME})")
        if not speed > 0:
            raise CommandError(f"replay speed must be positive, got {speed}")
        self.speed = speed
        self._ended = threading.Event()
        self._t_s = 0.0
        self._heartbeats: dict[str, dict[str, Any]] = {}

    @property
    def session_dir(self) -> Path:
        return self._dir

    def pump(self, sink: Sink, stop: threading.Event) -> None:
        import time

        from bciarm.bus.messages import Heartbeat
        from bciarm.record import LogReader

        t0_msg = wall0 = None
        for rec in LogReader(self.log):
            if stop.is_set():
                return
            try:
                msg = rec.decode()
            except Exception:  # noqa: BLE001 - the recorder kept only valid frames
                continue
            t = msg.header.t_ns
            if t0_msg is None:
                t0_msg, wall0 = t, time.monotonic()
            ahead = (t - t0_msg) / 1e9 / self.speed - (time.monotonic() - wall0)
            if ahead > 0 and stop.wait(ahead):
                return
            self._t_s = (t - t0_msg) / 1e9
            if isinstance(msg, Heartbeat):
                self._heartbeats[msg.node] = {"state": msg.state, "t_ns": t,
                                              "counters": dict(msg.counters),
                                              "latency_p50_us": msg.latency_p50_us,
                                              "latency_p99_us": msg.latency_p99_us}
            sink(rec.topic, msg)
        self._ended.set()

    def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        check_command(cmd, args)
        raise CommandError("this is a replay of a recording: it cannot be steered")

    def health(self) -> dict[str, Any]:
        # The recorded heartbeats (a real-time session's), as `bciarm status` would show them.
        groups = {}
        latest = max((h["t_ns"] for h in self._heartbeats.values()), default=0)
        for node, h in self._heartbeats.items():
            groups[node] = {"pid": None, "state": h["state"], "kind": "replay",
                            "hb_age_ms": (latest - h["t_ns"]) / 1e6, "restarts": None,
                            "nodes": {node: {k: h[k] for k in ("counters", "latency_p50_us",
                                                               "latency_p99_us")}}}
        return {"session_dir": str(self._dir), "estopped": False, "held": False,
                "mode": "replay", "replay_t_s": self._t_s, "groups": groups}

    def ended(self) -> bool:
        return self._ended.is_set()

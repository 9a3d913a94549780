"""An inline session the monitor watches and steers: ConsoleSession, InlineObserver.

:class:`ConsoleSession` is the ordinary :class:`~bciarm.session.Session`
(same protocol, blocks, decoder fit, adaptation, files) with three additions:

* a **tap** node that sees every frame on the bus (like the recorder) and
  hands it to the monitor;
* **operator commands** queued from any thread and applied by the session
  thread between two clock ticks, as recorded ``event`` messages from the
  protocol node — the same events the real-time supervisor publishes for
  ``bciarm estop | resume`` and the others;
* a **hold** at block boundaries: ``pause`` holds the session before the next
  block until ``start``; with ``confirm_blocks`` every block waits for a
  ``start`` (the operator's confirmation), unless ``unattended``.

It can be paced at real time (``pace=1.0``) so a person can watch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bciarm.bus.inline import NS_PER_S
from bciarm.bus.messages import Message
from bciarm.bus.node import Node, NodeParams
from bciarm.monitor.observer import CommandError, SessionObserver, Sink, check_command
from bciarm.session import BlockResult, ProtocolNode, Session


class Tap(Node):
    """Sees every frame on the inline bus (raw, like the recorder) and hands it on."""

    Params = NodeParams
    inputs = ("*",)
    raw_inputs = True

    def __init__(self, name: str = "monitor_tap", sink: Sink | None = None) -> None:
        super().__init__(name)
        self.sink = sink

    def on_frame(self, topic: str, payload: bytes, msg: Message | None) -> None:
        if self.sink is not None and msg is not None:
            self.sink(topic, msg)


class ConsoleSession(Session):
    """A :class:`Session` with a bus tap, operator commands and block holds.

    Extra parameters
    ----------------
    pace : float or None
        Run at ``pace`` × real time (None: as fast as possible).
    confirm_blocks : bool
        Hold before every block until an operator ``start``.
    unattended : bool
        Confirm every block automatically (``bciarm session --yes``).
    on_hold : callable, optional
        ``on_hold(block)`` is called (in the session thread) when the session
        starts waiting before ``block``; the terminal prompt uses it.
    """

    def __init__(self, config: Any, *, pace: float | None = None, confirm_blocks: bool = False,
                 unattended: bool = False, on_hold: Callable[[str], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.pace = pace
        self.confirm_blocks = confirm_blocks
        self.unattended = unattended
        self.on_hold = on_hold
        self.sinks: list[Sink] = []
        self.commands: queue.Queue[tuple[str, dict[str, Any], str, threading.Event,
                                         dict[str, Any]]] = queue.Queue()
        self.held = False
        self.waiting_for: str | None = None
        self.estopped = False
        self.block: str | None = None
        #: Operator actions applied: {t_s, action, args, by, block}
        self.actions: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.started = threading.Event()
        self._wake = threading.Event()  # set when a command is queued
        self._wall0 = 0.0
        self._sim0 = 0

    # ------------------------------------------------------------------ graph

    def build_nodes(self) -> list[Node]:
        nodes = super().build_nodes()
        nodes.append(Tap(sink=self._fan_out))
        return nodes

    def _fan_out(self, topic: str, msg: Message) -> None:
        for sink in list(self.sinks):
            sink(topic, msg)

    # ------------------------------------------------------------------ commands

    def submit(self, cmd: str, by: str = "monitor", timeout_s: float = 5.0,
               **args: Any) -> dict[str, Any]:
        """Queue an operator command; wait until the session thread applied it."""
        args = check_command(cmd, args)
        if self.ended.is_set():
            raise CommandError("the session has ended")
        done, reply = threading.Event(), {}
        self.commands.put((cmd, args, by, done, reply))
        self._wake.set()
        if not done.wait(timeout_s):
            raise CommandError(f"the session did not apply {cmd} within {timeout_s} s")
        return reply

    def post(self, cmd: str, by: str = "terminal", **args: Any) -> None:
        """Queue an operator command without waiting (safe from the session thread)."""
        self.commands.put((cmd, check_command(cmd, args), by, threading.Event(), {}))
        self._wake.set()

    def _apply_commands(self) -> None:
        rt = self.runtime
        assert rt is not None
        protocol = rt.node("protocol")
        assert isinstance(protocol, ProtocolNode)
        while True:
            try:
                cmd, args, by, done, reply = self.commands.get_nowait()
            except queue.Empty:
                return
            # Every operator action is on the record (the log) before it acts.
            where = self.block or self.waiting_for
            protocol.announce("operator", action=cmd, by=by, **args,
                              **({"block": where} if where else {}))
            if cmd == "estop":
                self.estopped = True
                protocol.announce("estop", reason=f"operator ({by})")
            elif cmd == "resume":
                self.estopped = False
                protocol.announce("resume", by=by)
            elif cmd in ("assist", "gain"):
                protocol.announce(cmd, by=by, **args)
            elif cmd == "pause":
                self.held = True
            elif cmd == "start":
                self.held = False
            rt.deliver()
            self.actions.append({"t_s": rt.now_ns / NS_PER_S, "action": cmd, "args": args,
                                 "by": by, "block": where})
            reply.update(ok=True, estopped=self.estopped, held=self.held)
            done.set()

    # ------------------------------------------------------------------ protocol

    def _run_block(self, name: str, mode: str, trials: int | None, max_s: float,
                   done_before: int, total: int | None,
                   adapt: dict[str, Any] | None = None) -> BlockResult:
        if self.confirm_blocks:
            if self.unattended:
                self.actions.append({"t_s": self.runtime.now_ns / NS_PER_S, "action": "start",
                                     "args": {}, "by": "--yes", "block": name})
                self.runtime.node("protocol").announce(  # type: ignore[attr-defined]
                    "operator", action="start", by="--yes", block=name)
                self.runtime.deliver()
            else:
                self.held = True
        if self.held:
            self.waiting_for = name
            if self.on_hold is not None:
                self.on_hold(name)
            while self.held and not self.ended.is_set():
                self._apply_commands()
                time.sleep(0.02)
            self.waiting_for = None
        self.block = name
        # Pace against the wall clock from here (time spent holding does not count).
        self._wall0, self._sim0 = time.perf_counter(), self.runtime.now_ns
        outer = self.progress

        def on_progress(block: str, done: int, tot: int | None, sim_s: float) -> None:
            self._apply_commands()
            if self.pace:
                ahead = ((self.runtime.now_ns - self._sim0) / NS_PER_S / self.pace
                         - (time.perf_counter() - self._wall0))
                # Wait for the wall clock, but wake for a command (an e-stop must not
                # wait out the pacing).
                if ahead > 0 and self._wake.wait(ahead):
                    self._wake.clear()
                    self._apply_commands()
            if outer is not None:
                outer(block, done, tot, sim_s)

        self.progress = on_progress
        try:
            return super()._run_block(name, mode, trials, max_s, done_before, total, adapt)
        finally:
            self.progress = outer
            self.block = None

    def run(self) -> Any:
        self.started.set()
        try:
            return super().run()
        finally:
            self.ended.set()
            self._fail_pending()

    def _fail_pending(self) -> None:
        while True:
            try:
                *_, done, reply = self.commands.get_nowait()
            except queue.Empty:
                return
            reply.update(ok=False, error="the session has ended")
            done.set()


class InlineObserver(SessionObserver):
    """Watch and steer a :class:`ConsoleSession` (running in another thread of this process)."""

    kind = "inline"

    def __init__(self, session: ConsoleSession) -> None:
        self.session = session

    @property
    def session_dir(self) -> Path | None:
        return self.session.session_dir

    def pump(self, sink: Sink, stop: threading.Event) -> None:
        self.session.sinks.append(sink)
        try:
            while not stop.is_set() and not self.session.ended.is_set():
                stop.wait(0.1)
        finally:
            self.session.sinks.remove(sink)

    def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        reply = self.session.submit(cmd, **args)
        if not reply.get("ok"):
            raise CommandError(str(reply.get("error", "refused")))
        return reply

    def health(self) -> dict[str, Any]:
        s = self.session
        rt = s.runtime
        nodes = {}
        if rt is not None:
            for n in list(rt.nodes):
                nodes[n.name] = {"counters": n.counters.as_dict()}
        state = "ENDED" if s.ended.is_set() else ("HELD" if s.waiting_for else "RUNNING")
        # One process: every node shares the session thread's state; no heartbeats.
        return {"session_dir": str(s.session_dir) if s.session_dir else None,
                "estopped": s.estopped, "held": s.held, "waiting_for": s.waiting_for,
                "block": s.block, "mode": "inline",
                "groups": {"inline": {"pid": None, "state": state, "kind": "inline",
                                      "hb_age_ms": 0.0, "restarts": 0, "nodes": nodes}}}

    def ended(self) -> bool:
        return self.session.ended.is_set()

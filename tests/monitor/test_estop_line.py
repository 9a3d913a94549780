"""The e-stop line: `send_estop`'s direct path to an effector process (no supervisor hop).

A group runner without processes: the test binds its e-stop socket, pushes through
:class:`bciarm.commands.realtime.EstopLine` (what `bciarm estop` and the monitor use) and
raw PUSH sockets, and checks that only fresh ``estop`` events reach the effector — a
``resume``, a stale e-stop and garbage are rejected and counted — and that the effector's
next tick is brought forward to now.
"""

from __future__ import annotations

import time

import zmq

from bciarm.bus import codec
from bciarm.bus.messages import Event, Header
from bciarm.bus.node import Node
from bciarm.bus.realtime import ESTOP_LINE_MAX_AGE_NS, GroupRunner, _Slot, free_port
from bciarm.commands.realtime import EstopLine
from tests.realtime.conftest import wait_for


class Effector(Node):
    """Stands in for an effector node: the runner knows one by its ``controller``."""

    inputs = ("event",)

    def __init__(self) -> None:
        super().__init__("arm")
        self.controller = object()
        self.events: list[Event] = []

    def on_message(self, topic, msg):
        self.events.append(msg)


def _event(kind: str, t_ns: int) -> list[bytes]:
    return list(codec.encode("event", Event(Header(0, t_ns, "test"), kind, {})))


def test_only_fresh_estops_get_through_and_the_tick_comes_forward():
    ep = f"tcp://127.0.0.1:{free_port()}"
    runner = GroupRunner({"group": "arm", "nodes": []})
    node = Effector()
    far = time.monotonic_ns() + 10**9
    runner.nodes = [node]
    runner.slots = [_Slot(node, period_ns=10_000_000, next_ns=far)]
    runner.estop_in = runner.ctx.socket(zmq.PULL)
    runner.estop_in.bind(ep)
    raw = runner.ctx.socket(zmq.PUSH)
    raw.connect(ep)
    line = EstopLine({"estop": [ep]})
    try:
        now = time.monotonic_ns()
        raw.send_multipart(_event("resume", now))                    # not on this line
        raw.send_multipart(_event("estop", now - ESTOP_LINE_MAX_AGE_NS - 1))  # stale
        raw.send_multipart([b"event", b"\xc1garbage"])               # malformed
        raw.send_multipart([b"event"])                               # one part
        assert line.send("operator (test)") == 1

        def drained() -> bool:
            if runner.estop_in.poll(0):
                runner.direct_estop()
            return len(node.events) + sum(runner.rejected.values()) >= 5

        wait_for(drained, 10, "the five frames")
        assert [(e.kind, e.data) for e in node.events] == [("estop", {"reason": "operator (test)"})]
        assert runner.rejected["not_estop"] == 1 and runner.rejected["stale"] == 1
        assert sum(runner.rejected.values()) == 4
        assert node.counters.rejected == 4
        assert runner.slots[0].next_ns <= time.monotonic_ns()  # ticks in this loop pass
    finally:
        line.close()
        raw.close(0)
        runner.ctx.destroy(linger=0)

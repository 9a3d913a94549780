"""Test a node without any bus: feed it messages, tick it, read what it sent.

>>> h = NodeHarness(MyNode("n"), tick_s=0.01)
>>> h.send("intent", Intent(...))
>>> h.advance(0.1)
>>> h.sent("state.arm")
"""

from __future__ import annotations

from typing import Any

from bciarm.bus.inline import InlineRuntime
from bciarm.bus.messages import Header, Message
from bciarm.bus.node import Node


class _Capture(Node):
    inputs = ("*",)

    def __init__(self) -> None:
        super().__init__("_harness")
        self.messages: list[tuple[str, Message]] = []

    def on_message(self, topic: str, msg: Message) -> None:
        self.messages.append((topic, msg))


class NodeHarness:
    """Run one or more nodes on a simulated clock and capture every message.

    Parameters
    ----------
    *nodes : Node
        Nodes under test, in graph order.
    tick_s : float
        Base clock period.
    seed : int
        Seed for the nodes' generators.
    """

    def __init__(self, *nodes: Node, tick_s: float = 0.01, seed: int = 0) -> None:
        self.capture = _Capture()
        self.runtime = InlineRuntime([*nodes, self.capture], tick_s=tick_s, seed=seed)
        self.runtime.start()
        self._seq: dict[str, int] = {}

    @property
    def now_ns(self) -> int:
        return self.runtime.now_ns

    def header(self, topic: str, src: str = "harness", **kw: Any) -> Header:
        """A header as an outside publisher would stamp it."""
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        return Header(seq, self.runtime.now_ns, src, **kw)

    def send(self, topic: str, msg: Message | bytes) -> bool:
        """Publish into the graph (through the codec). False if rejected."""
        return self.runtime.inject(topic, msg)

    def make(self, topic: str, cls: type[Message], **fields: Any) -> Message:
        """Build a message with a fresh harness header."""
        return cls(header=self.header(topic), **fields)

    def advance(self, seconds: float) -> None:
        self.runtime.run_for(seconds)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.runtime.step()

    def sent(self, topic: str | None = None) -> list[Message]:
        """Messages seen on ``topic`` (all if None), in order."""
        return [m for t, m in self.capture.messages if topic is None or t == topic]

    def clear(self) -> None:
        self.capture.messages.clear()

    def close(self) -> None:
        self.runtime.stop()

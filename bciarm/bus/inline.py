"""Inline runtime: every node in one process on a simulated clock.

Deterministic and faster than real time, for simulation studies, CI,
calibration and offline replay.

* Time advances in fixed base ticks (``tick_s``).  A node with period
  ``tick_s`` (a multiple of the base tick) is ticked when due, in graph order
  (the order the nodes were given).
* A published message is encoded by the same codec the real-time bus uses,
  handed to raw subscribers (the recorder) as bytes, decoded and validated
  again and queued.  The queue is drained in FIFO order after every node
  callback, so delivery order is fully determined by graph order.  Because
  every message crosses the codec, a graph that runs inline sees exactly the
  data, and the rejections, it would see on the wire.
* Each node gets its own ``numpy.random.Generator`` derived from the session
  seed and the node's name, so adding a node does not perturb the others.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bciarm.bus import codec
from bciarm.bus.messages import Message
from bciarm.bus.node import Node

log = logging.getLogger("bciarm.inline")

NS_PER_S = 1_000_000_000


def node_rng(seed: int, name: str) -> np.random.Generator:
    """Per-node generator: stable across runs, independent between nodes."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


@dataclass
class _Context:
    runtime: "InlineRuntime"
    node: Node
    rng: np.random.Generator
    log: logging.Logger
    session_dir: Path | None

    def now_ns(self) -> int:
        return self.runtime.now_ns

    def publish(self, topic: str, msg: Message) -> None:
        self.runtime._publish(self.node, topic, msg)


class InlineRuntime:
    """Run a graph of nodes in one process on a simulated clock.

    Parameters
    ----------
    nodes : iterable of Node
        In graph order; names must be unique.
    tick_s : float
        Base clock period in seconds.  Every node's ``tick_s`` must be a
        multiple of it.
    seed : int
        Session seed.
    session_dir : Path, optional
        Handed to nodes that write files.
    """

    def __init__(self, nodes: Iterable[Node], tick_s: float = 0.01, seed: int = 0,
                 session_dir: Path | None = None) -> None:
        self.nodes: list[Node] = list(nodes)
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"node names must be unique; repeated: {dupes}")
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        self.tick_ns = round(tick_s * NS_PER_S)
        self.seed = seed
        self.session_dir = session_dir
        self.now_ns = 0
        self.rejected: Counter[str] = Counter()
        self._queue: deque[tuple[str, Message]] = deque()
        self._periods: dict[str, int] = {}
        self._started = False
        self._stopped = False
        self._in_dispatch = False
        for node in self.nodes:
            self._periods[node.name] = self._period_ticks(node)

    def _period_ticks(self, node: Node) -> int:
        if node.tick_s is None:
            return 0
        ratio = node.tick_s * NS_PER_S / self.tick_ns
        ticks = round(ratio)
        if ticks < 1 or abs(ratio - ticks) > 1e-6:
            raise ValueError(
                f"node {node.name!r}: tick_s={node.tick_s} is not a multiple of the "
                f"runtime base tick {self.tick_ns / NS_PER_S} s"
            )
        return ticks

    # ------------------------------------------------------------------ lifecycle

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}; nodes: {[n.name for n in self.nodes]}")

    def start(self) -> None:
        """Bind every node and call ``on_start`` in graph order."""
        if self._started:
            return
        self._started = True
        for node in self.nodes:
            node.bind(_Context(self, node, node_rng(self.seed, node.name),
                               logging.getLogger(f"bciarm.node.{node.name}"), self.session_dir))
        for node in self.nodes:
            self._call(node, node.on_start)

    def stop(self) -> None:
        """Call ``on_stop`` on every node, in reverse graph order, once."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        for node in reversed(self.nodes):
            try:
                node.on_stop()
            except Exception:  # a failing stop must not keep the others from stopping
                node.counters.errors += 1
                log.exception("node %s failed in on_stop", node.name)

    def step(self) -> None:
        """Advance the clock by one base tick, ticking every node that is due."""
        if not self._started:
            self.start()
        self.now_ns += self.tick_ns
        k = self.now_ns // self.tick_ns
        for node in self.nodes:
            period = self._periods[node.name]
            if period and k % period == 0:
                self._call(node, node.on_tick, self.now_ns)

    def run_for(self, duration_s: float, until: Callable[[], bool] | None = None,
                on_step: Callable[[float], None] | None = None, pace: float | None = None) -> float:
        """Run for ``duration_s`` simulated seconds or until ``until()`` is true.

        Parameters
        ----------
        pace : float, optional
            Slow down to ``pace`` × real time (1.0 = real time, for a GUI).

        Returns
        -------
        float
            Simulated seconds actually run.
        """
        start_ns = self.now_ns
        end_ns = start_ns + round(duration_s * NS_PER_S)
        wall0 = time.perf_counter()
        while self.now_ns < end_ns:
            self.step()
            if on_step is not None:
                on_step(self.tick_ns / NS_PER_S)
            if pace:
                ahead = (self.now_ns - start_ns) / NS_PER_S / pace - (time.perf_counter() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
            if until is not None and until():
                break
        return (self.now_ns - start_ns) / NS_PER_S

    # ------------------------------------------------------------------ messaging

    def inject(self, topic: str | bytes, msg: Message | bytes) -> bool:
        """Put a message (or raw payload bytes) on the bus from outside the graph.

        Returns False if it was rejected.  Used by tests and operator tools.
        """
        if isinstance(msg, Message):
            try:
                topic_b, payload = codec.encode(str(topic), msg)
            except codec.CodecError as exc:
                self._reject(None, str(topic), exc)
                return False
        else:
            topic_b = topic.encode("utf-8") if isinstance(topic, str) else topic
            payload = msg
        ok = self._deliver_frame(None, topic_b, payload)
        self._drain()
        return ok

    def deliver(self) -> None:
        """Deliver every queued message now (after publishing from outside a callback)."""
        self._drain()

    def _publish(self, sender: Node, topic: str, msg: Message) -> None:
        try:
            topic_b, payload = codec.encode(topic, msg)
        except codec.CodecError as exc:
            self._reject(sender, topic, exc)
            return
        self._deliver_frame(sender, topic_b, payload)

    def _deliver_frame(self, sender: Node | None, topic_b: bytes, payload: bytes) -> bool:
        topic_s = topic_b.decode("utf-8", "replace")
        try:
            topic, msg = codec.decode(topic_b, payload)
        except codec.CodecError as exc:
            self._reject(sender, topic_s, exc)
            # Raw subscribers (the recorder) keep only good frames; the
            # rejection itself is counted and logged.
            return False
        for node in self.nodes:
            if node.raw_inputs and node.subscribes_to(topic):
                node.counters.received += 1
                self._call(node, node.on_frame, topic, payload, msg)
        self._queue.append((topic, msg))
        return True

    def _reject(self, sender: Node | None, topic: str, exc: codec.CodecError) -> None:
        self.rejected[exc.reason] += 1
        who = sender.name if sender is not None else "<injected>"
        log.warning("rejected frame on %r from %s: %s", topic[:40], who, exc)
        for node in self.nodes:
            if not node.raw_inputs and node.subscribes_to(topic):
                node.counters.rejected += 1
                node.counters.rejected_by_reason[exc.reason] += 1
                node.on_rejected(topic, exc.reason, exc.detail)

    def _drain(self) -> None:
        if self._in_dispatch:
            return
        self._in_dispatch = True
        try:
            while self._queue:
                topic, msg = self._queue.popleft()
                for node in self.nodes:
                    if not node.raw_inputs and node.subscribes_to(topic):
                        node.counters.received += 1
                        self._call(node, node.on_message, topic, msg, drain=False)
        finally:
            self._in_dispatch = False

    def _call(self, node: Node, fn: Callable, *args, drain: bool = True) -> None:
        fn(*args)
        if drain:
            self._drain()

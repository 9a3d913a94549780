"""The node API: plain Python objects that react to messages and clock ticks.

A node declares the topics it reads (``inputs``) and writes (``outputs``) and
implements any of :meth:`Node.on_start`, :meth:`Node.on_message`,
:meth:`Node.on_tick` and :meth:`Node.on_stop`.  It never touches sockets: a
runtime (inline or real time) gives it a :class:`NodeContext` with a clock, a
``publish`` function, a seeded random generator and a logger.

Parameters are a pydantic model (the nested ``Params`` class) so that a graph
YAML is validated before anything starts, with errors naming the key.

Example
-------
>>> class Doubler(Node):
...     inputs = ("intent",)
...     outputs = ("intent2",)
...     def on_message(self, topic, msg):
...         ...
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from bciarm.bus.messages import Header, Message


class NodeParams(BaseModel):
    """Base of every node's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    tick_s: float | None = None


class NodeContext(Protocol):
    """What a runtime provides to a node."""

    def now_ns(self) -> int:
        """Current time on the runtime's clock (simulated or monotonic), ns."""

    def publish(self, topic: str, msg: Message) -> None:
        """Send ``msg`` on ``topic``."""

    rng: np.random.Generator
    log: logging.Logger
    session_dir: Path | None


def topic_matches(pattern: str, topic: str) -> bool:
    """Subscription match: ``"*"`` is everything, ``"state.*"`` a prefix."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


@dataclass
class NodeCounters:
    """Per-node counters reported in heartbeats and at the end of a session."""

    received: int = 0
    sent: int = 0
    rejected: int = 0
    dropped: int = 0
    errors: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "sent": self.sent,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "errors": self.errors,
        }


class Node:
    """Base class of all nodes.

    Parameters
    ----------
    name : str
        Unique node name in the graph; used as ``src`` in headers.
    params : NodeParams or dict, optional
        Validated against the subclass's ``Params`` model.
    **kwargs
        Parameters given directly (merged over ``params``).

    Attributes
    ----------
    inputs, outputs : tuple of str
        Topic patterns read / topics written (``"state.*"`` matches a prefix).
        Subclasses may compute them per instance in ``__init__``.
    raw_inputs : bool
        Receive encoded frames (``on_frame``) instead of decoded messages;
        used by the recorder, which stores bytes exactly as they travelled.
    """

    Params: ClassVar[type[NodeParams]] = NodeParams
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    raw_inputs: ClassVar[bool] = False

    def __init__(self, name: str, params: NodeParams | dict[str, Any] | None = None, **kwargs: Any):
        self.name = name
        if isinstance(params, NodeParams) and not kwargs:
            self.params = params
        else:
            merged = dict(params.model_dump(exclude_unset=True) if isinstance(params, BaseModel)
                          else (params or {}))
            merged.update(kwargs)
            self.params = self.Params(**merged)
        self.ctx: NodeContext | None = None
        self.counters = NodeCounters()
        self._seq: dict[str, int] = {}

    # ------------------------------------------------------------------ runtime hooks

    @property
    def tick_s(self) -> float | None:
        """Tick period in seconds, or None for a purely reactive node."""
        return self.params.tick_s

    def bind(self, ctx: NodeContext) -> None:
        """Attach the runtime context (called by the runtime before ``on_start``)."""
        self.ctx = ctx

    def on_start(self) -> None:
        """Called once after binding, before the first tick."""

    def on_message(self, topic: str, msg: Message) -> None:
        """Called for every decoded message on a subscribed topic."""

    def on_frame(self, topic: str, payload: bytes, msg: Message | None) -> None:
        """Called with the encoded frame when ``raw_inputs`` is True."""

    def on_tick(self, now_ns: int) -> None:
        """Called every ``tick_s`` seconds of runtime clock."""

    def on_stop(self) -> None:
        """Called once at shutdown: release devices, flush files."""

    def on_rejected(self, topic: str, reason: str, detail: str) -> None:
        """Called when a frame meant for this node failed validation."""

    # ------------------------------------------------------------------ helpers

    def now_ns(self) -> int:
        assert self.ctx is not None, f"node {self.name!r} is not bound to a runtime"
        return self.ctx.now_ns()

    @property
    def rng(self) -> np.random.Generator:
        assert self.ctx is not None, f"node {self.name!r} is not bound to a runtime"
        return self.ctx.rng

    @property
    def log(self) -> logging.Logger:
        if self.ctx is None:
            return logging.getLogger(f"bciarm.node.{self.name}")
        return self.ctx.log

    def header(self, topic: str, derived_from: Header | None = None) -> Header:
        """A fresh header for ``topic``: next seq, current time, this node as src.

        ``derived_from`` hands on the neural provenance of the message that
        caused this one.
        """
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        neural_seq, neural_t_ns = derived_from.derived() if derived_from is not None else (-1, -1)
        return Header(seq, self.now_ns(), self.name, neural_seq, neural_t_ns)

    def publish(self, topic: str, msg: Message) -> None:
        assert self.ctx is not None, f"node {self.name!r} is not bound to a runtime"
        self.counters.sent += 1
        self.ctx.publish(topic, msg)

    def emit(self, topic: str, cls: Callable[..., Message], derived_from: Header | None = None,
             **fields: Any) -> Message:
        """Build a message of type ``cls`` with a fresh header and publish it."""
        msg = cls(header=self.header(topic, derived_from), **fields)
        self.publish(topic, msg)
        return msg

    def subscribes_to(self, topic: str) -> bool:
        return any(topic_matches(p, topic) for p in self.inputs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

"""Bench nodes for the bus benchmark: a 1 kHz source, a linear decoder, a latency-measuring effector.

They are ordinary :class:`~bciarm.bus.node.Node` subclasses run by the real-time
runtime's group processes, so the benchmark measures exactly what a session
pays per hop: encode, broker, validate/decode, callback.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bciarm.bus.messages import Header, Intent, Message, NeuralFrame
from bciarm.bus.node import Node, NodeParams


def decode_weights(channels: int) -> np.ndarray:
    """A fixed 2 x channels readout (the same in every benchmark variant)."""
    return np.random.default_rng(0).standard_normal((2, channels)) / channels


class BenchSource(Node):
    class Params(NodeParams):
        tick_s: float | None = 0.001
        channels: int = 1024
        frames: int = 30_000

    outputs = ("neural",)

    def on_start(self) -> None:
        self.n = 0
        self.counts = np.zeros(self.params.channels, "<u2")

    def on_tick(self, now_ns: int) -> None:
        if self.n >= self.params.frames:
            return
        self.counts[self.n % self.params.channels] += 1
        t = time.monotonic_ns()
        self.publish("neural", NeuralFrame(Header(self.n, t, self.name, self.n, t),
                                           counts=self.counts, bin_s=self.params.tick_s))
        self.n += 1


class BenchDecoder(Node):
    class Params(NodeParams):
        channels: int = 1024

    inputs = ("neural",)
    outputs = ("intent",)

    def on_start(self) -> None:
        self.w = decode_weights(self.params.channels)

    def on_message(self, topic: str, msg: Message) -> None:
        assert isinstance(msg, NeuralFrame)
        v = self.w @ msg.counts
        self.emit("intent", Intent, derived_from=msg.header, velocity=v)


class BenchEffector(Node):
    """Applies each intent (a clip) and records now − neural acquisition time."""

    class Params(NodeParams):
        out: Path

    inputs = ("intent",)

    def on_start(self) -> None:
        self.lat: list[int] = []
        self.seqs: list[int] = []
        self.hop1: list[int] = []  # neural acquisition -> intent published (diagnostic)

    def on_message(self, topic: str, msg: Message) -> None:
        assert isinstance(msg, Intent)
        np.clip(msg.velocity, -0.25, 0.25)  # "command applied"
        h = msg.header
        self.lat.append(time.monotonic_ns() - h.neural_t_ns)
        self.seqs.append(h.neural_seq)
        self.hop1.append(h.t_ns - h.neural_t_ns)

    def on_stop(self) -> None:
        np.savez(self.params.out, lat=np.asarray(self.lat, np.int64),
                 seqs=np.asarray(self.seqs, np.int64), hop1=np.asarray(self.hop1, np.int64))

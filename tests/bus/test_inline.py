"""Inline runtime: graph order, clock, determinism, rejection of bad input."""

import numpy as np
import pytest

from bciarm.bus.harness import NodeHarness
from bciarm.bus.inline import InlineRuntime
from bciarm.bus.messages import Event, Header, Intent, NeuralFrame
from bciarm.bus.node import Node, NodeParams


class Source(Node):
    outputs = ("neural",)

    class Params(NodeParams):
        tick_s: float | None = 0.05
        n: int = 4

    def on_tick(self, now_ns):
        seq = self._seq.get("neural", 0)
        self._seq["neural"] = seq + 1
        counts = self.rng.poisson(5, self.params.n).astype(np.uint16)
        self.publish("neural", NeuralFrame(header=Header(seq, now_ns, self.name, seq, now_ns),
                                           counts=counts, bin_s=0.05))


class Doubler(Node):
    inputs = ("neural",)
    outputs = ("intent",)

    def on_message(self, topic, msg):
        v = np.array([msg.counts.sum() * 2.0])
        self.emit("intent", Intent, derived_from=msg.header, velocity=v)


class Sink(Node):
    inputs = ("intent", "event")

    def __init__(self, name="sink", **kw):
        super().__init__(name, **kw)
        self.got = []
        self.rejections = []

    def on_message(self, topic, msg):
        self.got.append((self.now_ns(), topic, msg))

    def on_rejected(self, topic, reason, detail):
        self.rejections.append(reason)


def _graph(seed=0):
    src, dbl, sink = Source("source"), Doubler("decoder"), Sink()
    return InlineRuntime([src, dbl, sink], tick_s=0.01, seed=seed), sink


def test_messages_flow_in_graph_order_within_one_tick_with_provenance():
    rt, sink = _graph()
    rt.run_for(0.2)
    assert len(sink.got) == 4  # 0.2 s / 0.05 s
    t_ns, topic, intent = sink.got[0]
    assert topic == "intent"
    assert intent.header.neural_seq == 0
    assert intent.header.neural_t_ns == t_ns == 50_000_000  # delivered in the same tick
    assert [m.header.seq for _, _, m in sink.got] == [0, 1, 2, 3]


def test_same_seed_same_run_and_different_seed_differs():
    def run(seed):
        rt, sink = _graph(seed)
        rt.run_for(1.0)
        return [float(m.velocity[0]) for _, _, m in sink.got]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_tick_period_must_be_a_multiple_of_the_base_tick():
    class Odd(Node):
        class Params(NodeParams):
            tick_s: float | None = 0.015

    with pytest.raises(ValueError, match="multiple"):
        InlineRuntime([Odd("odd")], tick_s=0.01)


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="unique"):
        InlineRuntime([Sink("a"), Sink("a")])


def test_bad_frames_are_counted_and_the_graph_keeps_running():
    rt, sink = _graph()
    rt.start()
    assert rt.inject("intent", b"\x00garbage") is False
    assert rt.inject("intent", Intent(header=Header(0, 0, "x"), velocity=np.array([np.nan]))) is False
    assert rt.inject("event", Event(header=Header(0, 0, "op"), kind="estop")) is True
    rt.run_for(0.1)
    assert rt.rejected == {"garbage": 1, "non_finite": 1}
    assert sink.rejections == ["garbage", "non_finite"]
    assert sink.counters.rejected == 2
    assert [t for _, t, _ in sink.got].count("intent") == 2  # good traffic unaffected
    assert any(t == "event" for _, t, _ in sink.got)


def test_run_until_stops_early_and_reports_simulated_time():
    rt, sink = _graph()
    ran = rt.run_for(10.0, until=lambda: len(sink.got) >= 3)
    assert ran == pytest.approx(0.15)


def test_stop_calls_nodes_in_reverse_graph_order_once():
    order = []

    class Tracker(Node):
        def on_stop(self):
            order.append(self.name)

    rt = InlineRuntime([Tracker("a"), Tracker("b"), Tracker("c")])
    rt.start()
    rt.stop()
    rt.stop()
    assert order == ["c", "b", "a"]


def test_harness_tests_a_node_without_any_bus():
    h = NodeHarness(Doubler("decoder"))
    frame = h.make("neural", NeuralFrame, counts=np.array([1, 2, 3], dtype=np.uint16), bin_s=0.05)
    assert h.send("neural", frame)
    (intent,) = h.sent("intent")
    assert intent.velocity.tolist() == [12.0]
    assert intent.header.src == "decoder"

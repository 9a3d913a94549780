"""Decoder node: silent until fitted and in closed loop; provenance; wrong widths rejected."""

import numpy as np

from bciarm import registry
from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import Event, Intent, NeuralFrame
from bciarm.decoders.node import DecoderNode


class SumDecoder:
    """Minimal decoder on the step contract: velocity = (sum, -sum) of the features."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self.n_channels_ = 4
        self.resets = 0

    def reset(self):
        self.resets += 1

    def step(self, z):
        s = float(np.sum(z)) * self.scale
        return np.array([s, -s])


def _node(**params):
    registry.register("decoder", "sum", f"{__name__}:SumDecoder")
    try:
        return DecoderNode("decoder", decoder="sum", **params)
    finally:
        registry.unregister("decoder", "sum")


def _frame(h, counts):
    seq = h._seq.get("neural", 0)
    hdr = h.header("neural")
    hdr = type(hdr)(hdr.seq, hdr.t_ns, "source", seq, hdr.t_ns)
    return NeuralFrame(header=hdr, counts=np.asarray(counts, dtype=np.uint16), bin_s=0.05)


def _block(h, mode):
    h.send("event", h.make("event", Event, kind="block_start", data={"block": "b", "mode": mode}))


def test_publishes_only_in_closed_loop_with_the_frame_provenance():
    node = _node(transform="sqrt")
    node.set_decoder(SumDecoder())
    h = NodeHarness(node)
    h.send("neural", _frame(h, [1, 4, 9, 16]))
    assert h.sent("intent") == []  # no block yet
    _block(h, "open_loop")
    h.send("neural", _frame(h, [1, 4, 9, 16]))
    assert h.sent("intent") == []
    _block(h, "closed_loop")
    frame = _frame(h, [1, 4, 9, 16])
    h.send("neural", frame)
    (intent,) = h.sent("intent")
    assert isinstance(intent, Intent)
    assert intent.velocity.tolist() == [10.0, -10.0]  # sqrt transform applied
    assert intent.header.neural_seq == frame.header.seq
    assert intent.header.neural_t_ns == frame.header.t_ns


def test_no_decoder_means_no_intent():
    h = NodeHarness(_node())
    _block(h, "closed_loop")
    h.send("neural", _frame(h, [1, 1, 1, 1]))
    assert h.sent("intent") == []


def test_wrong_channel_count_is_rejected_and_counted():
    node = _node()
    node.set_decoder(SumDecoder())
    h = NodeHarness(node)
    _block(h, "closed_loop")
    h.send("neural", _frame(h, [1, 1, 1]))
    h.send("neural", _frame(h, [1, 1, 1, 1]))
    assert len(h.sent("intent")) == 1
    assert node.counters.rejected_by_reason["shape"] == 1


def test_decoder_update_event_loads_the_saved_decoder(tmp_path):
    import numpy as np

    from bciarm.decoders import KalmanDecoder

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    Z = X @ rng.normal(size=(2, 4)) + 5 + rng.normal(size=(400, 4))
    KalmanDecoder().fit(np.abs(Z), X, 0.05).save(tmp_path / "dec.npz")
    node = DecoderNode("decoder")
    h = NodeHarness(node)
    h.send("event", h.make("event", Event, kind="decoder_update",
                           data={"node": "decoder", "path": str(tmp_path / "dec.npz")}))
    assert node.decoder is not None and node.decoder.n_channels_ == 4
    h.send("event", h.make("event", Event, kind="decoder_update",
                           data={"node": "decoder", "path": str(tmp_path / "missing.npz")}))
    assert node.counters.errors == 1 and node.decoder is not None  # a bad path keeps the old one

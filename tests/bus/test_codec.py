"""Codec: round trips, and every kind of bad frame rejected with its reason."""

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bciarm.bus import codec
from bciarm.bus.codec import CodecError
from bciarm.bus.messages import (
    SCHEMA_VERSION,
    EffectorState,
    Event,
    Header,
    Heartbeat,
    Intent,
    NeuralFrame,
    TaskState,
)


def _intent(v=(0.1, -0.2)):
    return Intent(header=Header(3, 1000, "decoder", 7, 900), velocity=np.array(v, dtype=float))


def _state():
    return EffectorState(header=Header(0, 5, "arm"), position=np.array([0.5, 0.0, 0.9]),
                         velocity=np.zeros(3), joint_position=np.arange(7.0),
                         joint_velocity=np.zeros(7), estopped=True, guards=("speed", "watchdog"))


EXAMPLES = [
    ("neural", NeuralFrame(header=Header(1, 2, "src", 1, 2),
                           counts=np.arange(192, dtype=np.uint16), bin_s=0.05)),
    ("intent", _intent()),
    ("state.arm", _state()),
    ("task", TaskState(header=Header(0, 1, "task"), block="b", trial=2, phase="hold",
                       mode="closed_loop", target=np.array([0.5, 0.1, 0.9]), target_radius=0.02,
                       outcome="")),
    ("event", Event(header=Header(0, 1, "op"), kind="estop", data={"who": "me", "n": 1})),
    ("hb.decoder", Heartbeat(header=Header(0, 1, "decoder"), node="decoder", state="RUNNING",
                             counters={"received": 3}, latency_p50_us=12.5)),
]


@pytest.mark.parametrize("topic,msg", EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_roundtrip_preserves_every_field(topic, msg):
    topic_b, payload = codec.encode(topic, msg)
    got_topic, got = codec.decode(topic_b, payload)
    assert got_topic == topic
    assert type(got) is type(msg)
    assert got.header == msg.header
    for name in msg.__dataclass_fields__:
        a, b = getattr(msg, name), getattr(got, name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        else:
            assert a == b


def test_derived_messages_carry_the_frame_provenance():
    frame = EXAMPLES[0][1]
    assert frame.header.derived() == (1, 2)
    intent = Intent(header=Header(0, 9, "decoder", *frame.header.derived()), velocity=np.zeros(2))
    got = codec.roundtrip("intent", intent)
    assert (got.header.neural_seq, got.header.neural_t_ns) == (1, 2)


def test_payload_is_plain_msgpack_without_pickle():
    _, payload = codec.encode("intent", _intent())
    doc = msgpack.unpackb(payload, raw=False)
    assert doc["v"] == SCHEMA_VERSION and doc["type"] == "Intent"
    assert doc["b"]["velocity"] == {"dtype": "<f8", "shape": [2],
                                    "data": np.array([0.1, -0.2]).tobytes()}
    assert b"pickle" not in payload and b"\x80\x04" not in payload[:2]


def _payload(mutate):
    doc = msgpack.unpackb(codec.encode("intent", _intent())[1], raw=False)
    mutate(doc)
    return msgpack.packb(doc, use_bin_type=True)


BAD = {
    "garbage": (b"intent", b"\xff\x00garbage\x13"),
    "truncated": (b"intent", codec.encode("intent", _intent())[1][:-5]),
    "unknown_topic": (b"bogus", codec.encode("intent", _intent())[1]),
    "non_utf8_topic": (b"\xff\xfe", b"x"),
    "schema_version": (b"intent", _payload(lambda d: d.update(v=SCHEMA_VERSION + 1))),
    "wrong_type_for_topic": (b"state.arm", codec.encode("intent", _intent())[1]),
    "dtype": (b"intent", _payload(lambda d: d["b"]["velocity"].update(dtype="<i8"))),
    "shape_mismatch": (b"intent", _payload(lambda d: d["b"]["velocity"].update(shape=[3]))),
    "ndim": (b"intent", _payload(lambda d: d["b"]["velocity"].update(shape=[1, 2]))),
    "nan": (b"intent", codec.encode("intent", _intent((np.nan, 0.0)))[1]),
    "inf": (b"intent", codec.encode("intent", _intent((np.inf, 0.0)))[1]),
    "missing_field": (b"intent", _payload(lambda d: d["b"].pop("space"))),
    "extra_field": (b"intent", _payload(lambda d: d["b"].update(evil=1))),
    "bad_header": (b"intent", _payload(lambda d: d.update(h=[1, 2]))),
    "negative_seq": (b"intent", _payload(lambda d: d["h"].__setitem__(0, -1))),
    "oversized": (b"intent", b"\x00" * (codec.MAX_FRAME_BYTES + 1)),
    "not_a_map": (b"intent", msgpack.packb([1, 2, 3])),
}

EXPECTED_REASON = {
    "garbage": "garbage", "truncated": "garbage", "unknown_topic": "unknown_topic",
    "non_utf8_topic": "garbage", "schema_version": "schema_version",
    "wrong_type_for_topic": "type", "dtype": "dtype", "shape_mismatch": "shape", "ndim": "shape",
    "nan": "non_finite", "inf": "non_finite", "missing_field": "fields", "extra_field": "fields",
    "bad_header": "header", "negative_seq": "header", "oversized": "oversized",
    "not_a_map": "garbage",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_frames_are_rejected_with_their_reason(case):
    topic, payload = BAD[case]
    with pytest.raises(CodecError) as info:
        codec.decode(topic, payload)
    assert info.value.reason == EXPECTED_REASON[case]
    assert str(info.value)  # a human-readable explanation


def test_fixed_shape_arrays_are_enforced():
    doc = msgpack.unpackb(codec.encode("state.arm", _state())[1], raw=False)
    doc["b"]["position"] = {"dtype": "<f8", "shape": [2], "data": np.zeros(2).tobytes()}
    with pytest.raises(CodecError, match="shape"):
        codec.decode(b"state.arm", msgpack.packb(doc, use_bin_type=True))


def test_encode_refuses_a_message_on_the_wrong_topic():
    with pytest.raises(CodecError):
        codec.encode("neural", _intent())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        codec.decode(b"intent", data)
    except CodecError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=6))
def test_float_arrays_roundtrip_or_reject_non_finite(values):
    msg = _intent(values)
    if np.isfinite(values).all():
        assert np.array_equal(codec.roundtrip("intent", msg).velocity, np.array(values))
    else:
        with pytest.raises(CodecError, match="non_finite"):
            codec.roundtrip("intent", msg)


# --------------------------------------------------------------------------- compiled fast path

needs_fast = pytest.mark.skipif(codec._FAST is None, reason="bciarm.bus._codec is not built "
                                "(or BCIARM_PURE_CODEC is set): the reference codec runs alone")


def _same(a, b):
    assert type(a) is type(b) and a.header == b.header
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        else:
            assert type(x) is type(y) and x == y


def _reference_encode(topic, msg, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(codec, "_FAST", None)
        return codec.encode(topic, msg)


@needs_fast
@pytest.mark.parametrize("topic,msg", EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_fast_path_encodes_the_reference_bytes_and_decodes_the_same_message(topic, msg,
                                                                           monkeypatch):
    frame = codec.encode(topic, msg)
    assert frame == _reference_encode(topic, msg, monkeypatch)
    ref = codec.decode_reference(*frame)
    codec.decode(*frame)  # the topic is learned here
    fast = codec._FAST.decode(*frame)
    if fast is None:  # kinds the fast path leaves to the reference (maps: events, heartbeats)
        assert topic in ("event", "hb.decoder")
        return
    assert fast[0] == ref[0] == topic
    _same(fast[1], ref[1])


def _mutations():
    """Frames one edit away from a good one: every field's value swapped for another
    type or an edge value (what a fast path is most likely to get wrong)."""
    values = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                       st.binary(max_size=24), st.lists(st.integers(-2, 4), max_size=3),
                       st.sampled_from(["<f8", "<f4", "<u2", ">f8", "|u1"]))
    paths = st.sampled_from([("v",), ("type",), ("h", 0), ("h", 1), ("h", 2), ("h", 3), ("h", 4),
                             ("b", "space"), ("b", "grasp"), ("b", "velocity", "dtype"),
                             ("b", "velocity", "shape"), ("b", "velocity", "data"),
                             ("b", "velocity")])
    return st.tuples(paths, values, st.lists(st.floats(allow_nan=True, allow_infinity=True,
                                                       width=32), min_size=1, max_size=4))


@needs_fast
@settings(max_examples=1500, deadline=None, derandomize=True)
@given(_mutations())
def test_fast_path_never_accepts_what_the_reference_rejects(case):
    (path, value, floats) = case
    doc = msgpack.unpackb(codec.encode("intent", _intent(floats))[1], raw=False)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    frame = (b"intent", msgpack.packb(doc, use_bin_type=True))
    codec.decode(*codec.encode("intent", _intent()))  # the topic is known to the fast path
    fast = codec._FAST.decode(*frame)
    try:
        ref = codec.decode_reference(*frame)
    except CodecError:
        assert fast is None
        return
    if fast is not None:
        _same(fast[1], ref[1])

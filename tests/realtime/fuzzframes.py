"""Hypothesis strategies for malformed bus frames (each with the reason family it should hit)."""

from __future__ import annotations

import math

import msgpack
import numpy as np
from hypothesis import strategies as st

from bciarm.bus import codec
from bciarm.bus.messages import SCHEMA_VERSION, Header, NeuralFrame


def good_frame(seq: int, t_ns: int, src: str = "fuzz", n: int = 16) -> tuple[bytes, bytes]:
    msg = NeuralFrame(Header(seq, t_ns, src, seq, t_ns),
                      counts=np.arange(n, dtype="<u2") % 7, bin_s=0.05)
    return codec.encode("neural", msg)


def _payload(v=SCHEMA_VERSION, typ="NeuralFrame", h=None, b=None) -> bytes:
    h = [0, 1, "fuzz", 0, 1] if h is None else h
    b = {"counts": {"dtype": "<u2", "shape": [4], "data": b"\0" * 8}, "bin_s": 0.05} if b is None else b
    return msgpack.packb({"v": v, "type": typ, "h": h, "b": b}, use_bin_type=True)


_GOOD = good_frame(0, 1)[1]

garbage = st.binary(max_size=256).map(lambda b: [b"neural", b])
truncated = st.integers(0, len(_GOOD) - 1).map(lambda k: [b"neural", _GOOD[:k]])
unknown_topic = st.text(min_size=1, max_size=40).filter(
    lambda t: not (t in ("neural", "intent", "task", "event")
                   or (t.startswith(("state.", "hb.")) and len(t) > 6))
).map(lambda t: [t.encode("utf-8"), _GOOD])
bad_utf8_topic = st.just([b"\xff\xfe", _GOOD])
schema_version = st.integers(-5, 100).filter(lambda v: v != SCHEMA_VERSION).map(
    lambda v: [b"neural", _payload(v=v)])
wrong_type = st.sampled_from(["Intent", "Event", "", "X" * 300]).map(
    lambda t: [b"neural", _payload(typ=t)])
wrong_shape = st.lists(st.integers(0, 6), min_size=2, max_size=3).map(
    lambda shape: [b"neural", _payload(b={"counts": {"dtype": "<u2", "shape": shape,
                                                     "data": b"\0" * (2 * math.prod(shape))},
                                          "bin_s": 0.05})])
wrong_dtype = st.sampled_from([">f8", "<c16", "|O", "<M8", "float", "<i8"]).map(
    lambda d: [b"neural", _payload(b={"counts": {"dtype": d, "shape": [1], "data": b"\0" * 8},
                                      "bin_s": 0.05})])
non_finite = st.sampled_from([math.nan, math.inf, -math.inf]).map(
    lambda x: [b"neural", _payload(b={"counts": {"dtype": "<f8", "shape": [2],
                                                 "data": np.array([1.0, x]).tobytes()},
                                      "bin_s": 0.05})])
non_finite_scalar = st.sampled_from([math.nan, math.inf]).map(
    lambda x: [b"neural", _payload(b={"counts": {"dtype": "<u2", "shape": [1], "data": b"\0\0"},
                                      "bin_s": x})])
bad_header = st.one_of(st.just([1, 2]), st.just([-1, 0, "s", 0, 0]), st.just([0, 0, "s" * 99, 0, 0]),
                       st.just([0, 2.5, "s", 0, 0]), st.just([(1 << 64) - 1, 0, "s", 0, 0])).map(
    lambda h: [b"neural", _payload(h=h)])
wrong_fields = st.dictionaries(st.text(max_size=8), st.integers(-1000, 1000), max_size=4).map(
    lambda b: [b"neural", _payload(b=b)])
wrong_parts = st.lists(st.binary(max_size=16), min_size=1, max_size=4).filter(
    lambda parts: len(parts) != 2)

#: frames every decoder must reject (the codec, or the runner's frame-shape check)
malformed = st.one_of(garbage, truncated, unknown_topic, bad_utf8_topic, schema_version,
                      wrong_type, wrong_shape, wrong_dtype, non_finite, non_finite_scalar,
                      bad_header, wrong_fields)
malformed_live = st.one_of(malformed, wrong_parts)

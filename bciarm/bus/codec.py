"""Wire codec: messages <-> ``[topic, msgpack payload]`` frames.

The payload is a msgpack map::

    {"v": SCHEMA_VERSION, "type": "Intent", "h": [seq, t_ns, src, neural_seq, neural_t_ns],
     "b": {field: value, ...}}

Arrays travel as ``{"dtype": "<f8", "shape": [3], "data": <bytes>}``.  Nothing
is ever pickled.  :func:`decode` validates everything it reads against the
message schema and raises :class:`CodecError` with a short machine-readable
``reason`` (for counters) and a human-readable message (for logs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from bciarm.bus.messages import (
    SCHEMA_VERSION,
    ArraySpec,
    Header,
    Message,
    message_class_for,
)

#: Frames larger than this are rejected before unpacking (bytes).
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_TOPIC_BYTES = 128
MAX_SRC_CHARS = 64
MAX_STR_CHARS = 4096
_INT64 = (-(1 << 63), (1 << 63) - 1)
_DTYPES: dict[str, np.dtype] = {}


class CodecError(ValueError):
    """A frame failed to decode or validate.

    Attributes
    ----------
    reason : str
        Short category used for counters (``"garbage"``, ``"schema_version"``,
        ``"unknown_topic"``, ``"shape"``, ``"dtype"``, ``"non_finite"``, ...).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    kind: str  # "array" | "float" | "int" | "str" | "bool" | "str_tuple" | "dict"
    array: ArraySpec | None = None


def _field_kind(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is float:
        return "float"
    if tp is int:
        return "int"
    if tp is str:
        return "str"
    if tp is bool:
        return "bool"
    if origin is tuple:
        return "str_tuple"
    if origin is dict or tp is dict:
        return "dict"
    raise TypeError(f"unsupported message field type {tp!r}")


def _schema(cls: type[Message]) -> tuple[_FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "header":
            continue
        if "array" in f.metadata:
            specs.append(_FieldSpec(f.name, "array", f.metadata["array"]))
        else:
            specs.append(_FieldSpec(f.name, _field_kind(hints[f.name])))
    return tuple(specs)


_SCHEMAS: dict[type, tuple[_FieldSpec, ...]] = {}


def schema_of(cls: type[Message]) -> tuple[_FieldSpec, ...]:
    """Field specs of a message class (cached)."""
    spec = _SCHEMAS.get(cls)
    if spec is None:
        spec = _SCHEMAS[cls] = _schema(cls)
    return spec


# --------------------------------------------------------------------------- encode


def _encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def _encode_value(spec: _FieldSpec, value: Any) -> Any:
    if spec.kind == "array":
        return _encode_array(np.asarray(value))
    if spec.kind == "str_tuple":
        return list(value)
    if spec.kind == "float":
        return float(value)
    return value


def _identity(value: Any) -> Any:
    return value


def _array_encoder(value: Any) -> dict[str, Any]:
    # Fast path: what nodes publish (a C-contiguous little-endian array, ndim >= 1);
    # anything else goes through the general conversion, with the same result.
    if type(value) is np.ndarray and value.ndim and value.flags.c_contiguous \
            and value.dtype.byteorder != ">":
        return {"dtype": value.dtype.str, "shape": list(value.shape), "data": value.tobytes()}
    return _encode_array(np.asarray(value))


_ENCODERS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _encoders(cls: type[Message]) -> tuple[tuple[str, Any], ...]:
    """(field name, encoder) pairs of a message class, built once (the hot path)."""
    enc = _ENCODERS.get(cls)
    if enc is None:
        table = {"array": _array_encoder, "str_tuple": list, "float": float}
        enc = _ENCODERS[cls] = tuple((f.name, table.get(f.kind, _identity))
                                     for f in schema_of(cls))
    return enc


_CLASS_OF_TOPIC: dict[str, type[Message] | None] = {}


def class_for(topic: str) -> type[Message] | None:
    """:func:`message_class_for`, memoised for the topics actually seen (bounded)."""
    try:
        return _CLASS_OF_TOPIC[topic]
    except KeyError:
        cls = message_class_for(topic)
        if cls is not None and len(_CLASS_OF_TOPIC) < 4096:
            _CLASS_OF_TOPIC[topic] = cls
        return cls


def encode(topic: str, msg: Message) -> tuple[bytes, bytes]:
    """Encode ``msg`` for ``topic`` into ``(topic_bytes, payload_bytes)``.

    Raises
    ------
    CodecError
        If the topic does not carry this message type.
    """
    cls = class_for(topic)
    if cls is None or not isinstance(msg, cls):
        raise CodecError("unknown_topic", f"topic {topic!r} does not carry {type(msg).__name__}")
    if _FAST is not None and type(msg) is cls:
        payload = _FAST.encode(msg)
        if payload is not None:
            return topic.encode("utf-8"), payload
    h = msg.header
    body = {name: enc(getattr(msg, name)) for name, enc in _encoders(cls)}
    payload = _pack({"v": SCHEMA_VERSION, "type": cls.__name__,
                     "h": [h.seq, h.t_ns, h.src, h.neural_seq, h.neural_t_ns], "b": body})
    return topic.encode("utf-8"), payload


_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_pack = _packer.pack


# --------------------------------------------------------------------------- decode


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError("type", f"{name} must be an integer, got {type(value).__name__}")
    if not _INT64[0] <= value <= _INT64[1]:
        raise CodecError("range", f"{name} out of int64 range")
    return value


def _check_str(name: str, value: Any, limit: int = MAX_STR_CHARS) -> str:
    if not isinstance(value, str):
        raise CodecError("type", f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise CodecError("oversized", f"{name} longer than {limit} characters")
    return value


_I64_MAX = _INT64[1]


def _decode_header(raw: Any) -> Header:
    # Fast path: a well-formed header (msgpack ints are never below int64's minimum).
    if type(raw) is list and len(raw) == 5:
        seq, t_ns, src, nseq, nt = raw
        if (type(seq) is int and type(t_ns) is int and type(src) is str
                and type(nseq) is int and type(nt) is int and 0 <= seq <= _I64_MAX
                and t_ns <= _I64_MAX and nseq <= _I64_MAX and nt <= _I64_MAX
                and len(src) <= MAX_SRC_CHARS):
            return Header(seq, t_ns, src, nseq, nt)
    if not isinstance(raw, list) or len(raw) != 5:
        raise CodecError("header", "header must be [seq, t_ns, src, neural_seq, neural_t_ns]")
    seq = _check_int("header.seq", raw[0])
    if seq < 0:
        raise CodecError("header", "header.seq must be >= 0")
    t_ns = _check_int("header.t_ns", raw[1])
    src = _check_str("header.src", raw[2], MAX_SRC_CHARS)
    return Header(seq, t_ns, src, _check_int("header.neural_seq", raw[3]),
                  _check_int("header.neural_t_ns", raw[4]))


def _decode_array(name: str, raw: Any, spec: ArraySpec) -> np.ndarray:
    if type(raw) is not dict or len(raw) != 3 or not ("dtype" in raw and "shape" in raw
                                                        and "data" in raw):
        raise CodecError("array", f"{name} must be a map with dtype, shape and data")
    dtype_str = raw["dtype"]
    if dtype_str not in spec.dtypes:
        raise CodecError("dtype", f"{name} has dtype {dtype_str!r}; allowed {list(spec.dtypes)}")
    shape = raw["shape"]
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
        raise CodecError("shape", f"{name} shape must be a list of non-negative integers")
    if len(shape) != spec.ndim:
        raise CodecError("shape", f"{name} must have {spec.ndim} dimension(s), got {len(shape)}")
    if spec.shape is not None:
        for want, got in zip(spec.shape, shape):
            if want is not None and want != got:
                raise CodecError("shape", f"{name} must have shape {spec.shape}, got {tuple(shape)}")
    size = shape[0] if len(shape) == 1 else math.prod(shape)
    if size > spec.max_size:
        raise CodecError("oversized", f"{name} has {size} elements; the bound is {spec.max_size}")
    data = raw["data"]
    dtype = _DTYPES.get(dtype_str) or _DTYPES.setdefault(dtype_str, np.dtype(dtype_str))
    if type(data) is not bytes or len(data) != size * dtype.itemsize:
        raise CodecError("shape", f"{name} data length does not match dtype {dtype_str} x {shape}")
    arr = np.frombuffer(data, dtype=dtype)
    if spec.ndim != 1:
        arr = arr.reshape(shape)
    if spec.finite and dtype.kind == "f" and not (
            all(map(math.isfinite, arr.tolist())) if size <= 32 else np.isfinite(arr).all()):
        # (a small array: a Python loop beats the ufunc's fixed cost)
        raise CodecError("non_finite", f"{name} contains NaN or Inf")
    return arr


def _decode_value(spec: _FieldSpec, raw: Any) -> Any:
    name = spec.name
    if spec.kind == "array":
        assert spec.array is not None
        return _decode_array(name, raw, spec.array)
    if spec.kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise CodecError("type", f"{name} must be a number")
        value = float(raw)
        if not math.isfinite(value):
            raise CodecError("non_finite", f"{name} is NaN or Inf")
        return value
    if spec.kind == "int":
        return _check_int(name, raw)
    if spec.kind == "str":
        return _check_str(name, raw)
    if spec.kind == "bool":
        if not isinstance(raw, bool):
            raise CodecError("type", f"{name} must be a boolean")
        return raw
    if spec.kind == "str_tuple":
        if not isinstance(raw, list) or len(raw) > 64:
            raise CodecError("type", f"{name} must be a list of at most 64 strings")
        return tuple(_check_str(name, v, 256) for v in raw)
    if spec.kind == "dict":
        if not isinstance(raw, dict) or len(raw) > 256:
            raise CodecError("type", f"{name} must be a map of at most 256 entries")
        for k, v in raw.items():
            _check_str(f"{name} key", k, 256)
            if isinstance(v, float) and not math.isfinite(v):
                raise CodecError("non_finite", f"{name}[{k!r}] is NaN or Inf")
            if not isinstance(v, (str, int, float, bool, type(None))):
                raise CodecError("type", f"{name}[{k!r}] must be a scalar or string")
        return dict(raw)
    raise AssertionError(spec.kind)  # pragma: no cover - schema is fixed at import


def decode(topic_bytes: bytes, payload: bytes) -> tuple[str, Message]:
    """Decode and validate one frame.

    The compiled fast path (``bciarm.bus._codec``) takes a well-formed frame of a
    topic seen before; everything else goes through :func:`decode_reference`,
    which names the reason of a rejection.

    Returns
    -------
    topic : str
    message : Message

    Raises
    ------
    CodecError
        With a ``reason`` naming what was wrong.
    """
    if _FAST is not None:
        got = _FAST.decode(topic_bytes, payload)
        if got is not None:
            return got
    topic, msg = decode_reference(topic_bytes, payload)
    if _FAST is not None and type(topic_bytes) is bytes:
        _FAST.add_topic(topic_bytes, topic, type(msg))
    return topic, msg


def decode_reference(topic_bytes: bytes, payload: bytes) -> tuple[str, Message]:
    """Decode and validate one frame in Python (the reference for the fast path).

    Returns
    -------
    topic : str
    message : Message

    Raises
    ------
    CodecError
        With a ``reason`` naming what was wrong.
    """
    if not isinstance(topic_bytes, (bytes, bytearray, memoryview)) or not isinstance(
        payload, (bytes, bytearray, memoryview)
    ):
        raise CodecError("garbage", "frame parts must be bytes")
    if len(topic_bytes) > MAX_TOPIC_BYTES:
        raise CodecError("oversized", f"topic longer than {MAX_TOPIC_BYTES} bytes")
    if len(payload) > MAX_FRAME_BYTES:
        raise CodecError("oversized", f"payload of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        topic = bytes(topic_bytes).decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("garbage", "topic is not UTF-8") from None
    cls = class_for(topic)
    if cls is None:
        raise CodecError("unknown_topic", f"unknown topic {topic[:40]!r}")
    try:
        top = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise CodecError("garbage", f"payload is not valid msgpack ({type(exc).__name__})") from None
    if type(top) is not dict or len(top) != 4 or not ("v" in top and "type" in top
                                                      and "h" in top and "b" in top):
        raise CodecError("garbage", "payload must be a map with keys v, type, h, b")
    if top["v"] != SCHEMA_VERSION:
        raise CodecError(
            "schema_version", f"schema version {top['v']!r}; this node speaks {SCHEMA_VERSION}"
        )
    if top["type"] != cls.__name__:
        raise CodecError("type", f"topic {topic!r} carries {cls.__name__}, not {top['type']!r}")
    header = _decode_header(top["h"])
    body = top["b"]
    names, fields = _decoders(cls)
    if type(body) is not dict or body.keys() != names:
        want = sorted(names)
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise CodecError("fields", f"{cls.__name__} needs fields {want}, got {got}")
    # positional, in field order (the schema's order): cheaper than keywords
    return topic, cls(header, *[dec(body[name]) for name, dec in fields])  # type: ignore[call-arg]


_DECODERS: dict[type, tuple[frozenset[str], tuple[tuple[str, Any], ...]]] = {}


def _field_decoder(spec: _FieldSpec) -> Any:
    """A one-argument validator for one field: a shortcut for the common well-formed
    value, :func:`_decode_value` (the reference, with its error reasons) for the rest."""
    name = spec.name
    if spec.kind == "array":
        arr = spec.array

        def dec(raw: Any) -> Any:
            return _decode_array(name, raw, arr)  # type: ignore[arg-type]
    elif spec.kind == "float":
        isfinite = math.isfinite

        def dec(raw: Any) -> Any:
            if type(raw) is float and isfinite(raw):
                return raw
            return _decode_value(spec, raw)
    elif spec.kind == "int":
        def dec(raw: Any) -> Any:
            if type(raw) is int and _INT64[0] <= raw <= _INT64[1]:
                return raw
            return _decode_value(spec, raw)
    elif spec.kind == "str":
        def dec(raw: Any) -> Any:
            if type(raw) is str and len(raw) <= MAX_STR_CHARS:
                return raw
            return _decode_value(spec, raw)
    else:
        def dec(raw: Any) -> Any:
            return _decode_value(spec, raw)
    return dec


def _decoders(cls: type[Message]) -> tuple[frozenset[str], tuple[tuple[str, Any], ...]]:
    """Field names and (name, validator) pairs of a message class, built once (the hot path)."""
    got = _DECODERS.get(cls)
    if got is None:
        specs = schema_of(cls)
        got = _DECODERS[cls] = (frozenset(s.name for s in specs),
                                tuple((s.name, _field_decoder(s)) for s in specs))
    return got


def _fast_codec() -> Any:
    """The compiled fast path, or None where the extension is not built
    (``BCIARM_PURE_CODEC=1`` turns it off: the reference alone)."""
    import os

    if os.environ.get("BCIARM_PURE_CODEC"):
        return None
    try:
        from bciarm.bus import _codec
    except ImportError:  # pragma: no cover - a source tree without the built extension
        return None
    from bciarm.bus.messages import MESSAGE_TYPES

    fast = _codec.FastCodec(Header, SCHEMA_VERSION, np.frombuffer, np.dtype, _pack,
                            functools.partial(msgpack.unpackb, raw=False, strict_map_key=True),
                            MAX_FRAME_BYTES, MAX_SRC_CHARS, MAX_STR_CHARS)
    for cls in MESSAGE_TYPES.values():
        fast.add_class(cls, [(f.name, f.kind, f.array) for f in schema_of(cls)])
    return fast


_FAST = _fast_codec()


def roundtrip(topic: str, msg: Message) -> Message:
    """Encode then decode (useful in tests and the inline runtime)."""
    return decode(*encode(topic, msg))[1]

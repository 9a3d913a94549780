"""Append-only message log, readable after a crash up to the last complete record.

File layout::

    b"BCILOG\\x00\\x01"                       8-byte magic + format version
    repeated:
        uint32 length (little endian)        of the body
        uint32 crc32                         of the body
        body = msgpack [topic: str, payload: bytes, t_rx_ns: int]

``payload`` is the frame exactly as it travelled on the bus (see
:mod:`bciarm.bus.codec`), so a log replays bit for bit.  A reader stops at the
first record that is cut short or fails its CRC (a crash mid-write) and says
so; every record before it is intact.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from bciarm.bus import codec
from bciarm.bus.messages import Message

MAGIC = b"BCILOG\x00\x01"
_RECORD_HEAD = struct.Struct("<II")
#: A record longer than this is treated as corruption, not allocated.
MAX_RECORD_BYTES = codec.MAX_FRAME_BYTES + 4096


class LogFormatError(ValueError):
    """The file is not a bciarm message log."""


class LogWriter:
    """Append frames to a message log.

    Parameters
    ----------
    path : Path
        Created if missing; appended to if it exists (a restarted recorder
        continues the same log).
    flush_every : int
        Hand buffered records to the OS after this many records; ``sync()``
        also fsyncs.
    """

    def __init__(self, path: str | Path, flush_every: int = 256) -> None:
        self.path = Path(path)
        self.flush_every = max(1, int(flush_every))
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            with self.path.open("rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise LogFormatError(f"{self.path} exists and is not a bciarm message log")
        self._file = self.path.open("ab")
        if new:
            self._file.write(MAGIC)
        self.records = 0
        self._pending = 0

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, topic: str, payload: bytes, t_rx_ns: int = 0) -> None:
        """Append one frame."""
        body = msgpack.packb([topic, payload, int(t_rx_ns)], use_bin_type=True)
        self._file.write(_RECORD_HEAD.pack(len(body), zlib.crc32(body)) + body)
        self.records += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._pending = 0

    def sync(self) -> None:
        """Flush and fsync: everything written so far survives a power cut."""
        self.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Sync and close (safe to call twice)."""
        if self._file.closed:
            return
        self.sync()
        self._file.close()

    def __enter__(self) -> "LogWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LogRecord:
    topic: str
    payload: bytes
    t_rx_ns: int

    def decode(self) -> Message:
        """Validate and decode the frame (raises :class:`codec.CodecError`)."""
        return codec.decode(self.topic.encode("utf-8"), self.payload)[1]


class LogReader:
    """Iterate the records of a log; tolerant of a torn tail.

    After iteration, ``truncated`` tells whether the file ended inside a
    record (or a record failed its CRC) and ``valid_bytes`` where the last
    good record ended.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.truncated = False
        self.valid_bytes = 0
        self.records = 0

    def __iter__(self) -> Iterator[LogRecord]:
        self.truncated = False
        self.records = 0
        with self.path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise LogFormatError(f"{self.path} is not a bciarm message log (bad magic)")
            self.valid_bytes = len(MAGIC)
            while True:
                head = f.read(_RECORD_HEAD.size)
                if not head:
                    return
                if len(head) < _RECORD_HEAD.size:
                    self.truncated = True
                    return
                length, crc = _RECORD_HEAD.unpack(head)
                if length > MAX_RECORD_BYTES:
                    self.truncated = True
                    return
                body = f.read(length)
                if len(body) < length or zlib.crc32(body) != crc:
                    self.truncated = True
                    return
                try:
                    topic, payload, t_rx_ns = msgpack.unpackb(body, raw=False)
                except Exception:
                    self.truncated = True
                    return
                self.valid_bytes += _RECORD_HEAD.size + length
                self.records += 1
                yield LogRecord(topic, payload, t_rx_ns)


def read_messages(path: str | Path, topics: Iterable[str] | None = None,
                  start_ns: int | None = None,
                  end_ns: int | None = None) -> Iterator[tuple[str, Message]]:
    """Decoded ``(topic, message)`` pairs of a log, optionally only some topics.

    Topics ending in ``*`` match a prefix (``"state.*"``).  ``start_ns`` /
    ``end_ns`` keep records received in that (inclusive) window of the
    recorder's clock, without decoding the others.
    """
    wanted = tuple(topics) if topics is not None else None
    for rec in LogReader(path):
        if (start_ns is not None and rec.t_rx_ns < start_ns) or (
                end_ns is not None and rec.t_rx_ns > end_ns):
            continue
        if wanted is not None and not any(
            rec.topic.startswith(t[:-1]) if t.endswith("*") else rec.topic == t for t in wanted
        ):
            continue
        yield rec.topic, rec.decode()

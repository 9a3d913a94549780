"""Message log: append-only, crash-tolerant, exact bytes."""

import numpy as np
import pytest

from bciarm.bus import codec
from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import Header, Intent
from bciarm.record import LogReader, LogWriter, Recorder, read_messages
from bciarm.record.log import MAGIC, LogFormatError


def _frames(n):
    out = []
    for i in range(n):
        msg = Intent(header=Header(i, i * 10, "dec"), velocity=np.array([i, -i], dtype=float))
        t, p = codec.encode("intent", msg)
        out.append((t.decode(), p))
    return out


def test_roundtrip_keeps_exact_bytes(tmp_path):
    frames = _frames(50)
    with LogWriter(tmp_path / "m.bcilog", flush_every=7) as w:
        for i, (t, p) in enumerate(frames):
            w.write(t, p, i)
    reader = LogReader(tmp_path / "m.bcilog")
    got = [(r.topic, r.payload) for r in reader]
    assert got == frames
    assert not reader.truncated and reader.records == 50
    msgs = [m for _, m in read_messages(tmp_path / "m.bcilog", ["intent"])]
    assert [m.header.seq for m in msgs] == list(range(50))


def test_a_torn_tail_loses_only_the_incomplete_record(tmp_path):
    path = tmp_path / "m.bcilog"
    frames = _frames(20)
    with LogWriter(path) as w:
        for t, p in frames:
            w.write(t, p)
    data = path.read_bytes()
    full = LogReader(path)
    ends = []
    for _ in full:
        ends.append(full.valid_bytes)
    # cut the file at every byte position: everything complete before the cut survives
    for cut in range(len(MAGIC), len(data), 7):
        path.write_bytes(data[:cut])
        reader = LogReader(path)
        got = list(reader)
        complete = sum(1 for e in ends if e <= cut)
        assert len(got) == complete
        assert reader.truncated == (cut not in ends and cut != len(MAGIC))
        assert [r.payload for r in got] == [p for _, p in frames[:complete]]


def test_corrupted_record_stops_reading_there(tmp_path):
    path = tmp_path / "m.bcilog"
    with LogWriter(path) as w:
        for t, p in _frames(5):
            w.write(t, p)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last record's body
    path.write_bytes(bytes(data))
    reader = LogReader(path)
    assert len(list(reader)) == 4 and reader.truncated


def test_restarted_writer_appends_to_the_same_log(tmp_path):
    path = tmp_path / "m.bcilog"
    frames = _frames(6)
    with LogWriter(path) as w:
        for t, p in frames[:3]:
            w.write(t, p)
    with LogWriter(path) as w:
        for t, p in frames[3:]:
            w.write(t, p)
    assert [r.payload for r in LogReader(path)] == [p for _, p in frames]


def test_not_a_log_is_refused(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"hello world")
    with pytest.raises(LogFormatError):
        list(LogReader(path))
    with pytest.raises(LogFormatError):
        LogWriter(path)


def test_close_twice_is_safe(tmp_path):
    w = LogWriter(tmp_path / "m.bcilog")
    w.close()
    w.close()


def test_recorder_node_keeps_every_good_frame_and_none_of_the_bad(tmp_path):
    rec = Recorder("recorder", path=tmp_path / "m.bcilog")
    h = NodeHarness(rec)
    good = [h.make("intent", Intent, velocity=np.array([float(i)])) for i in range(5)]
    h.send("intent", good[0])
    h.send("intent", b"\x01\x02garbage")
    h.send("intent", Intent(header=Header(99, 0, "x"), velocity=np.array([np.inf])))
    for g in good[1:]:
        h.send("intent", g)
    h.close()
    msgs = [m for _, m in read_messages(tmp_path / "m.bcilog")]
    assert [float(m.velocity[0]) for m in msgs] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert h.runtime.rejected == {"garbage": 1, "non_finite": 1}


def test_time_window_selects_by_receive_time(tmp_path):
    path = tmp_path / "m.bcilog"
    with LogWriter(path) as w:
        for i, (t, p) in enumerate(_frames(10)):
            w.write(t, p, t_rx_ns=i * 100)
    got = [m.header.seq for _, m in read_messages(path, start_ns=200, end_ns=500)]
    assert got == [2, 3, 4, 5]

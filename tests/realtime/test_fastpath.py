"""The same-host fast path (bciarm.bus.fastpath): ordering, long frames, drops, reconnects,
bad packets through a live node, and a session with it on and off."""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
import zmq

from bciarm.bus import codec
from bciarm.bus.fastpath import CHUNK, FastPath, remove_socket_dir, socket_dir, socket_path
from bciarm.bus.messages import Header, NeuralFrame
from bciarm.bus.realtime import free_port
from bciarm.record import LOG_NAME, read_messages
from tests.realtime.conftest import graph, records, run_realtime, wait_for


class Loop:
    """The poller side of two FastPath ends in one process (what a group's loop does)."""

    def __init__(self) -> None:
        self.fds: set[int] = set()
        self.got: list[tuple[bytes, bytes]] = []
        self.bad: list[str] = []

    def on(self, fd: int) -> None:
        self.fds.add(fd)

    def off(self, fd: int) -> None:
        self.fds.discard(fd)

    def handle(self, topic, payload) -> None:
        self.got.append((bytes(topic), bytes(payload)))

    def spin(self, *ends: FastPath, timeout_s: float = 0.05) -> None:
        r, _, _ = select.select(list(self.fds), [], [], timeout_s)
        for fd in r:
            for end in ends:
                if end.handles(fd):
                    end.event(fd, self.handle)
        for end in ends:
            end.retry(time.monotonic_ns())


def pair(tmp_path, prefixes=(b"neural",)):
    loop = Loop()
    path = socket_path(socket_dir(tmp_path), "pub")
    pub = FastPath("pub", path, [], loop.on, loop.off)
    sub = FastPath("sub", None, list(prefixes), loop.on, loop.off, loop.bad.append)
    sub.set_peer("pub", path)
    wait_for(lambda: (loop.spin(pub, sub), bool(pub.outs))[1], 5, "the subscriber's hello")
    return loop, pub, sub, path


def frame(seq: int, n: int = 1024) -> tuple[bytes, bytes]:
    counts = np.full(n, seq % 65535, "<u2")
    t = time.monotonic_ns()
    return codec.encode("neural", NeuralFrame(Header(seq, t, "src", seq, t), counts, 0.001))


def seqs(got) -> list[int]:
    return [codec.decode(t, p)[1].header.seq for t, p in got]


def test_socket_dir_is_private_and_short(tmp_path):
    d = socket_dir(tmp_path)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    deep = tmp_path / ("x" * 90)
    short = socket_dir(deep, base=tmp_path / "b")
    assert len(socket_path(short, "a_long_group_name")) < 108
    assert short == socket_dir(deep, base=tmp_path / "b")  # every process finds the same one
    assert stat.S_IMODE(os.stat(short).st_mode) == 0o700
    (short / "x.sock").touch()
    remove_socket_dir(short)  # what the supervisor does at the end of a session
    assert not short.exists()


def test_a_process_of_another_user_is_turned_away(tmp_path, caplog):
    """Defence in depth behind the 0700 directory: SO_PEERCRED on every accept."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another user")
    import tempfile

    loop = Loop()
    with tempfile.TemporaryDirectory() as d:  # open on purpose: the check must hold alone
        os.chmod(d, 0o777)
        path = os.path.join(d, "pub.sock")
        pub = FastPath("pub", path, [], loop.on, loop.off)
        os.chmod(path, 0o777)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setuid(65534)
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                c.connect(path)
                c.send(b'\x00{"group": "intruder", "prefixes": [""]}')
                time.sleep(1.0)
            finally:
                os._exit(0)
        seen = []
        try:
            def gone():
                loop.spin(pub)
                seen.append(len(pub.outs))
                return os.waitpid(pid, os.WNOHANG)[0] == pid
            wait_for(gone, 10, "the other user's client")
        finally:
            pub.close()
        assert max(seen) == 0  # never subscribed, even while it was connected
        assert "another user connected" in caplog.text
        sub = FastPath("sub", None, [b""], loop.on, loop.off)  # while ours is admitted
        pub2 = FastPath("pub", path, [], loop.on, loop.off)
        sub.set_peer("pub", path)
        wait_for(lambda: (loop.spin(pub2, sub), bool(pub2.outs))[1], 5, "our own client")
        pub2.close()
        sub.close()


def test_frames_filtered_in_order_and_long_frames_arrive(tmp_path):
    loop, pub, sub, _ = pair(tmp_path)
    sent = []
    for i in range(60):
        # every fifth frame is longer than one packet (64k channels: 2 x CHUNK bytes)
        tb, payload = frame(i, 65536 if i % 5 == 0 else 1024)
        assert len(payload) > CHUNK or i % 5
        assert pub.send(tb, payload) == 0
        assert pub.send(b"intent", b"not for this subscriber") == 0
        sent.append(payload)
        loop.spin(pub, sub, timeout_s=0)
    wait_for(lambda: (loop.spin(pub, sub), len(loop.got) >= 60)[1], 5, "every frame")
    assert [p for _, p in loop.got] == sent  # byte for byte, in order, nothing else
    assert {t for t, _ in loop.got} == {b"neural"}
    assert loop.bad == []


def test_a_full_receiver_counts_drops_and_keeps_order(tmp_path):
    loop, pub, sub, _ = pair(tmp_path)
    sent, dropped, i = 0, 0, 0
    # the subscriber does not read: the buffer fills, sends fail without blocking
    while dropped < 50:
        tb, payload = frame(i, 65536 if i % 7 == 0 else 1024)
        t0 = time.monotonic()
        d = pub.send(tb, payload)
        assert time.monotonic() - t0 < 0.5  # never blocks
        dropped += d
        sent += 1
        i += 1
        assert i < 100_000, "the fast path never filled up"
    wait_for(lambda: (loop.spin(pub, sub), len(loop.got) + dropped >= sent)[1], 10,
             "the queued frames")
    got = seqs(loop.got)
    assert len(got) + dropped == sent  # each frame arrived whole or was counted as dropped
    assert got == sorted(got) and len(set(got)) == len(got)
    # and it flows again once drained
    tb, payload = frame(i)
    assert pub.send(tb, payload) == 0
    wait_for(lambda: (loop.spin(pub, sub), seqs(loop.got)[-1] == i)[1], 5, "a frame after")


def test_a_restarted_publisher_is_reconnected(tmp_path):
    loop, pub, sub, path = pair(tmp_path)
    pub.send(*frame(0))
    wait_for(lambda: (loop.spin(pub, sub), len(loop.got) == 1)[1], 5, "frame 0")
    # kill -9 of the publisher: its socket just goes away (no close handshake)
    for fd in pub.fds():
        loop.off(fd)
    pub.listener.close()
    for out in list(pub.outs):
        out.sock.close()
    wait_for(lambda: (loop.spin(sub), not sub.ins)[1], 5, "the subscriber noticing")
    pub2 = FastPath("pub", path, [], loop.on, loop.off)  # the new incarnation, same path
    wait_for(lambda: (loop.spin(pub2, sub), bool(pub2.outs))[1], 5, "the reconnect")
    pub2.send(*frame(1))
    wait_for(lambda: (loop.spin(pub2, sub), len(loop.got) == 2)[1], 5, "frame 1")
    assert seqs(loop.got) == [0, 1]


def test_bad_packets_are_counted_not_fatal(tmp_path):
    loop, pub, sub, _ = pair(tmp_path)
    out = pub.outs[0].sock
    for junk in (b"\x03", b"\x03\x50abc", b"\x09\x01xy", b"\x01\xff", b"\x02tail-without-head"):
        out.send(junk)
    pub.send(*frame(7))
    wait_for(lambda: (loop.spin(pub, sub), len(loop.got) == 1)[1], 5, "the good frame")
    assert seqs(loop.got) == [7]
    assert len(loop.bad) == 4  # the headless tail is a dropped frame's rest: skipped silently


# ----------------------------------------------------------------------- a live node


@pytest.fixture
def fast_node(tmp_path):
    """A node process (recorder + decoder) that reads a fake peer over the fast path."""
    cfg = {"name": "fast", "nodes": {
        "source": {"kind": "source", "type": "simulated", "params": {"n_channels": 16}},
        "decoder": {"kind": "decoder", "type": "kalman", "params": {}, "group": "rx"},
        "arm": {"kind": "effector", "type": "arm", "params": {}},
        "task": {"kind": "task", "type": "center_out", "params": {}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    ep = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("xsub", "control", "data", "peer")}
    d = socket_dir(tmp_path)
    spec = {"group": "rx", "nodes": ["recorder", "decoder"], "config": str(tmp_path / "config.yaml"),
            "session_dir": str(tmp_path), "data_bind": ep["data"], "control": ep["control"],
            "hb_s": 0.1, "fast_bind": socket_path(d, "rx"),
            "peers": [{"group": "peer", "endpoint": ep["peer"], "nodes": [],
                       "fast": socket_path(d, "peer")}]}
    (tmp_path / "node.json").write_text(json.dumps(spec))
    ctx = zmq.Context()
    ctl = ctx.socket(zmq.ROUTER)
    ctl.linger = 0
    ctl.bind(ep["control"])
    loop = Loop()
    peer = FastPath("peer", socket_path(d, "peer"), [], loop.on, loop.off)
    proc = subprocess.Popen([sys.executable, "-m", "bciarm.bus.realtime", str(tmp_path / "node.json")],
                            start_new_session=True)
    st = {"hb": {}, "ident": None, "state": None}

    def pump():
        loop.spin(peer, timeout_s=0)
        while ctl.poll(0):
            ident, raw = ctl.recv_multipart()
            msg = json.loads(raw)
            st["ident"] = ident
            if msg["t"] == "state":
                st["state"] = msg["state"]
            elif msg["t"] == "hb":
                st["hb"] = msg
        return st
    try:
        wait_for(lambda: proc.poll() is None and pump()["state"] == "READY", 60, "READY")
        ctl.send_multipart([st["ident"], b'{"t": "go"}'])
        wait_for(lambda: pump()["state"] == "RUNNING" and bool(peer.outs), 10, "connected")
        yield {"peer": peer, "pump": pump, "proc": proc, "ctl": ctl, "tmp": tmp_path}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        ctx.destroy(linger=0)


def test_live_node_rejects_bad_frames_on_the_fast_path(fast_node):
    from tests.realtime.fuzzframes import _payload, good_frame
    from tests.realtime.test_fuzz import live_node_ctl_sync

    peer, pump = fast_node["peer"], fast_node["pump"]
    raw = peer.outs[0].sock
    bad = [(b"neural", b"\xc1garbage"), (b"neural", b"\x84"), (b"nope", b"\x80"),
           (b"neural", _payload(v=99)),
           (b"neural", _payload(b={"counts": {"dtype": "<c8", "shape": [1], "data": b"\0" * 8},
                                   "bin_s": 0.05}))]
    seq, sent_bad = 0, 0
    for i in range(2000):
        peer.send(*bad[i % len(bad)])
        sent_bad += 1
        if i % 500 == 0:
            raw.send(b"\x03\x40x")  # bad framing
            sent_bad += 1
        peer.send(*good_frame(seq, time.monotonic_ns()))
        seq += 1
        if i % 100 == 0:
            pump()
    peer.send(*good_frame(seq - 1, time.monotonic_ns() - 10**9))  # duplicate
    sent_bad += 1

    def counted():
        hb = pump()["hb"]
        c = hb.get("nodes", {}).get("recorder", {}).get("counters", {})
        return sum(hb.get("rejected", {}).values()) >= sent_bad and c.get("received", 0) >= seq
    wait_for(counted, 30, "every frame counted")
    hb = pump()["hb"]
    assert sum(hb["rejected"].values()) == sent_bad
    for r in ("garbage", "unknown_topic", "schema_version", "dtype", "duplicate_seq"):
        assert hb["rejected"].get(r, 0) > 0, (r, hb["rejected"])
    assert fast_node["proc"].poll() is None and hb["state"] == "RUNNING"
    live_node_ctl_sync(fast_node, pump()["ident"])
    logged = [m.header.seq for _, m in read_messages(fast_node["tmp"] / LOG_NAME, ("neural",))
              if m.header.src == "fuzz"]
    assert logged == list(range(seq))  # every good frame, in order


# ----------------------------------------------------------------------- sessions


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False])
def test_session_with_fast_path_on_and_off(tmp_path, runtime_dir, fast):
    cfg = graph(tmp_path, cal_trials=3, closed_trials=2,
                extra={"realtime": {"heartbeat_s": 0.1, "local_fast_path": fast}})
    result = run_realtime(cfg, tmp_path / "out", None)
    session = result.session_dir
    assert [b.name for b in result.blocks] == ["calibration", "closed_loop_1"]
    assert [b.trials for b in result.blocks] == [3, 2]
    msgs = records(session)
    neural = [m.header.seq for t, m in msgs if t == "neural"]
    assert neural == list(range(len(neural))) and len(neural) > 50  # the recorder got every frame
    decoded = [m for t, m in msgs if t == "intent" and m.header.src == "decoder"]
    assert decoded and {m.header.neural_seq for m in decoded} <= set(neural)
    for spec in (session / "runtime").glob("*.json"):
        data = json.loads(spec.read_text())
        if "nodes" in data and "group" in data:
            # on: every group but the recorder reads its peers over Unix sockets only (its
            # ZeroMQ SUB does not connect to them), so the trials above went that way
            assert bool(data.get("fast_bind")) == (fast and data["group"] != "recorder")
            assert all(bool(p.get("fast")) == (fast and p["group"] not in ("recorder", "supervisor"))
                       for p in data["peers"])

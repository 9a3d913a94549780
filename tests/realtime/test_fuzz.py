"""Bad input on the live bus: ≥ 10,000 malformed frames through the codec and a live node."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bciarm.bus import codec
from bciarm.bus.messages import NeuralFrame
from bciarm.bus.realtime import GroupRunner, free_port
from bciarm.record import LOG_NAME, read_messages

from .conftest import wait_for
from .fuzzframes import good_frame, malformed, malformed_live

CODEC_EXAMPLES = 10_000
LIVE_BATCHES = 200
PER_BATCH = 50          # 200 x 50 = 10,000 malformed frames through a live node


@pytest.mark.slow
@settings(max_examples=CODEC_EXAMPLES, deadline=None, derandomize=True)
@given(malformed)
def test_codec_rejects_every_malformed_frame(frame):
    with pytest.raises(codec.CodecError) as info:
        codec.decode(*frame)
    assert info.value.reason


def test_runner_rejects_duplicates_out_of_order_and_oversized():
    """The per-publisher sequence check and the size bound, without processes."""
    runner = GroupRunner({"group": "g", "nodes": []})
    from bciarm.record import Recorder

    got = []

    class Sink(Recorder):
        def on_start(self):
            pass

        def on_frame(self, topic, payload, msg):
            got.append(msg.header.seq)

    runner.nodes = [Sink("sink", path="/dev/null")]
    runner.slots = [type("S", (), {"node": runner.nodes[0]})()]
    for seq, t in [(0, 10), (1, 20), (1, 20), (2, 30), (1, 15), (5, 50), (0, 60)]:
        runner.handle_frame(list(good_frame(seq, t)))
    runner.handle_frame([b"neural", b"\0" * (codec.MAX_FRAME_BYTES + 1)])
    runner.handle_frame([b"neural"])
    assert got == [0, 1, 2, 5, 0]  # the last one: a restarted publisher (seq back, clock on)
    assert runner.rejected == {"duplicate_seq": 1, "out_of_order": 1, "oversized": 1,
                               "garbage": 1}
    assert runner.nodes[0].counters.rejected == 4
    assert runner.nodes[0].counters.dropped == 2  # seq 3 and 4 never came
    runner.ctx.destroy(linger=0)


@pytest.fixture(scope="module")
def live_node(tmp_path_factory):
    """A broker and one node process (recorder + decoder group); the test is the supervisor
    and a peer publisher the node subscribes to directly."""
    tmp = tmp_path_factory.mktemp("live")
    cfg = {"name": "fuzz", "nodes": {
        "source": {"kind": "source", "type": "simulated", "params": {"n_channels": 16}},
        "decoder": {"kind": "decoder", "type": "kalman", "params": {}, "group": "recorder"},
        "arm": {"kind": "effector", "type": "arm", "params": {}},
        "task": {"kind": "task", "type": "center_out", "params": {}}}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    ports = {k: free_port() for k in ("xsub", "xpub", "control", "data", "fuzz")}
    ep = {k: f"tcp://127.0.0.1:{v}" for k, v in ports.items()}
    (tmp / "broker.json").write_text(json.dumps({"xsub": ep["xsub"], "xpub": ep["xpub"]}))
    spec = {"group": "recorder", "nodes": ["recorder", "decoder"], "config": str(tmp / "config.yaml"),
            "session_dir": str(tmp), "xsub": ep["xsub"], "data_bind": ep["data"],
            "peers": [{"group": "fuzz", "endpoint": ep["fuzz"], "nodes": []}],
            "control": ep["control"], "hb_s": 0.1}
    (tmp / "node.json").write_text(json.dumps(spec))
    ctx = zmq.Context()
    ctl = ctx.socket(zmq.ROUTER)
    ctl.linger = 0
    ctl.bind(ep["control"])
    procs = [subprocess.Popen([sys.executable, "-m", "bciarm.bus.broker", str(tmp / "broker.json")],
                              start_new_session=True),
             subprocess.Popen([sys.executable, "-m", "bciarm.bus.realtime", str(tmp / "node.json")],
                              start_new_session=True)]
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.sndhwm = 0
    pub.bind(ep["fuzz"])
    state = {"state": None, "hb": {}, "ident": None, "pid": procs[1].pid}

    def pump():
        while ctl.poll(0):
            ident, raw = ctl.recv_multipart()
            msg = json.loads(raw)
            state["ident"] = ident
            if msg["t"] == "state":
                state["state"] = msg["state"]
            elif msg["t"] == "hb":
                state["hb"] = msg
            assert msg["pid"] == procs[1].pid, "the node process was replaced"
        return state

    try:
        def ready():
            assert procs[1].poll() is None, "node process died while starting"
            return pump()["state"] == "READY"
        wait_for(ready, 60, "the node READY")
        ctl.send_multipart([state["ident"], b'{"t": "go"}'])
        wait_for(lambda: pump()["state"] == "RUNNING", 10, "RUNNING")
        yield {"pub": pub, "pump": pump, "tmp": tmp, "procs": procs, "ctl": ctl}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        ctx.destroy(linger=0)


def test_live_node_survives_10000_malformed_frames(live_node):
    pub, pump = live_node["pub"], live_node["pump"]
    # our PUB must be connected before counting: probe with good frames until one arrives
    seq = 0

    def received():
        hb = pump()["hb"]
        return hb.get("nodes", {}).get("recorder", {}).get("counters", {}).get("received", 0)

    def probe():
        nonlocal seq
        pub.send_multipart(list(good_frame(seq, time.monotonic_ns())))
        seq += 1
        time.sleep(0.02)
        return received() > 0
    wait_for(probe, 20, "our publisher connected")
    wait_for(lambda: received() >= seq, 10, "probes delivered")
    rejected0 = sum(pump()["hb"].get("rejected", {}).values())
    good_before = seq
    sent_bad = 0

    @settings(max_examples=LIVE_BATCHES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(malformed_live, min_size=PER_BATCH, max_size=PER_BATCH))
    def batch(frames):
        nonlocal seq, sent_bad
        for f in frames:
            pub.send_multipart(f)
            sent_bad += 1
            # good frames around the bad ones
            pub.send_multipart(list(good_frame(seq, time.monotonic_ns())))
            seq += 1
        pump()

    batch()
    # duplicates, out-of-order and oversized on the live bus too
    pub.send_multipart(list(good_frame(seq - 1, time.monotonic_ns() - 10**9)))  # duplicate
    pub.send_multipart(list(good_frame(seq - 5, time.monotonic_ns() - 10**9)))  # out of order
    pub.send_multipart([b"neural", b"\x80" * (codec.MAX_FRAME_BYTES + 10)])     # oversized
    sent_bad += 3
    assert sent_bad >= 10_000

    def all_counted():
        hb = pump()["hb"]
        return sum(hb.get("rejected", {}).values()) - rejected0 >= sent_bad and received() >= seq
    wait_for(all_counted, 60, "every frame counted")
    hb = pump()["hb"]
    reasons = hb["rejected"]
    assert sum(reasons.values()) - rejected0 == sent_bad
    for r in ("garbage", "unknown_topic", "schema_version", "shape", "dtype", "non_finite",
              "duplicate_seq", "out_of_order", "oversized"):
        assert reasons.get(r, 0) > 0, (r, reasons)
    assert hb["state"] == "RUNNING" and live_node["procs"][1].poll() is None
    for node in ("recorder", "decoder"):
        assert hb["nodes"][node]["counters"]["errors"] == 0
    # every good frame was kept: sync the recorder and read the log
    pump()
    ident = pump()["ident"]
    live_node_ctl_sync(live_node, ident)
    logged = [m.header.seq for t, m in read_messages(live_node["tmp"] / LOG_NAME, ("neural",))
              if isinstance(m, NeuralFrame) and m.header.src == "fuzz"]
    assert logged == list(range(seq)), f"{len(logged)} of {seq} good frames logged"
    assert good_before < seq


def live_node_ctl_sync(live_node, ident):
    """Ask the node for a flush through the control channel and wait for the reply."""
    ctl = live_node["ctl"]
    ctl.send_multipart([ident, b'{"t": "sync", "id": 1}'])
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if ctl.poll(50):
            _, raw = ctl.recv_multipart()
            if json.loads(raw).get("t") == "reply":
                return
    raise AssertionError("no reply to sync")

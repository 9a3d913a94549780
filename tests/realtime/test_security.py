"""CURVE on the bus; nodes joining from another network namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from bciarm.bus import codec
from bciarm.bus.messages import Intent
from bciarm.bus.realtime import configure_curve, free_port
from bciarm.bus.security import generate_keys, security_spec

from .conftest import graph, records, run_realtime, wait_for
from .fuzzframes import good_frame

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


@pytest.fixture
def curve_broker(tmp_path):
    keys = generate_keys(tmp_path / "keys", ("node", "stranger"))
    # the stranger's key exists but is not admitted
    (keys / "clients" / "stranger.key").unlink()
    sec = security_spec("curve", keys)
    ep = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("xsub", "xpub")}
    (tmp_path / "broker.json").write_text(json.dumps({**ep, "security": sec}))
    p = subprocess.Popen([sys.executable, "-m", "bciarm.bus.broker", str(tmp_path / "broker.json")],
                         start_new_session=True)
    ctx = zmq.Context()
    try:
        yield ctx, ep, sec, keys
    finally:
        ctx.destroy(linger=0)
        p.kill()
        p.wait(10)


def _wait_event(mon, wanted: set[int], timeout_s: float) -> int:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if mon.poll(50):
            ev = recv_monitor_message(mon)["event"]
            if ev in wanted:
                return ev
    raise AssertionError(f"no monitor event among {wanted} within {timeout_s} s")


FAILED = {zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}


def test_unauthenticated_clients_neither_read_nor_inject(curve_broker):
    ctx, ep, sec, keys = curve_broker
    # admitted node: publisher and subscriber
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    for s in (pub, sub):
        s.linger = 0
        configure_curve(s, sec)
    sub.subscribe(b"")
    pub.connect(ep["xsub"])
    sub.connect(ep["xpub"])
    # intruders: plain (no CURVE) and CURVE with a key the broker does not admit
    stranger = dict(sec, client_secret=str(keys / "private" / "stranger.key_secret"))
    intruders = []
    for mode in ("plain", "stranger"):
        isub, ipub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
        for s in (isub, ipub):
            s.linger = 0
            if mode == "stranger":
                configure_curve(s, stranger)
        isub.subscribe(b"")
        mons = [isub.get_monitor_socket(), ipub.get_monitor_socket()]
        isub.connect(ep["xpub"])
        ipub.connect(ep["xsub"])
        intruders.append((mode, isub, ipub, mons))
    for mode, isub, ipub, mons in intruders:
        for mon in mons:  # each intruder's handshake is refused by the broker
            _wait_event(mon, FAILED | {zmq.EVENT_DISCONNECTED}, 10)
    # the admitted node talks through the broker: neural frames flow ...
    seq = 0

    def flowing():
        nonlocal seq
        pub.send_multipart(list(good_frame(seq, time.monotonic_ns())))
        seq += 1
        return sub.poll(20) != 0
    wait_for(flowing, 10, "authenticated traffic")
    # ... intruders try to inject intents meanwhile
    bad = Intent(header=codec.decode(*good_frame(0, 1))[1].header, velocity=__import__("numpy").ones(2))
    for _, _, ipub, _ in intruders:
        for _ in range(50):
            ipub.send_multipart(list(codec.encode("intent", bad)))
    for k in range(200):  # and the node keeps publishing
        pub.send_multipart(list(good_frame(seq + k, time.monotonic_ns())))
    got = []
    end = time.monotonic() + 5
    while time.monotonic() < end and (not got or got[-1][0] != b"neural" or
                                      codec.decode(*got[-1])[1].header.seq < seq + 199):
        if sub.poll(50):
            got.append(sub.recv_multipart())
    assert any(g[0] == b"neural" for g in got)
    assert codec.decode(*got[-1])[1].header.seq == seq + 199  # everything of ours arrived
    assert not [g for g in got if g[0] == b"intent"], "an unauthenticated client injected"
    for mode, isub, _, _ in intruders:
        assert isub.poll(0) == 0, f"{mode} client read neural data"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_realtime_session_with_curve(tmp_path, runtime_dir):
    keys = generate_keys(tmp_path / "keys")
    cfg = graph(tmp_path, cal_trials=3, extra={"security": "curve",
                                               "realtime": {"keys_dir": str(keys)}})
    result = run_realtime(cfg, tmp_path / "s", None, duration_s=2.0)
    recs = records(result.session_dir)
    assert any(t == "intent" and m.header.src == "decoder" for t, m in recs)
    assert [b.name for b in result.blocks] == ["calibration", "closed_loop_1"]


def _can_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "no `ip` command"
    name = f"bciarm-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@pytest.fixture
def netns():
    why = _can_netns()
    if why is not None:
        print(f"SKIP netns test: {why}")
        pytest.skip(why)
    pid = os.getpid() % 10000
    ns, host_if, ns_if = f"bciarm-t{pid}", f"bah{pid}", f"ban{pid}"
    net = f"10.{200 + pid % 50}.{pid % 250}"
    host_ip, ns_ip = f"{net}.1", f"{net}.2"

    def sh(*args):
        subprocess.run(args, check=True, capture_output=True)
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_decoder_joins_from_another_network_namespace(tmp_path, runtime_dir, netns):
    ns, host_ip = netns
    keys = generate_keys(tmp_path / "keys")
    cfg = graph(tmp_path, cal_trials=3, extra={
        "security": "curve",
        "realtime": {"bind": host_ip, "keys_dir": str(keys), "remote": ["decoder"]}})
    remote: list[subprocess.Popen] = []
    ips: list[str] = []

    def start_remote():
        # the supervisor writes the spec of a remote group; start it "on the other host"
        end = time.monotonic() + 60
        while time.monotonic() < end:
            specs = list((tmp_path / "s").glob("*/runtime/decoder.json"))
            if specs:
                break
            time.sleep(0.02)
        else:
            return
        ips.append(subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "-o", "addr"],
                                  capture_output=True, text=True).stdout)
        remote.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                                        "bciarm.bus.realtime", str(specs[0])],
                                       start_new_session=True))
    t = threading.Thread(target=start_remote, daemon=True)
    t.start()
    try:
        result = run_realtime(cfg, tmp_path / "s", None, duration_s=2.0)
    finally:
        t.join(5)
        for p in remote:
            if p.poll() is None:
                p.kill()
            p.wait(10)
    assert remote, "the remote decoder was never started"
    # the decoder's namespace does not own the broker's address: traffic crosses the veth
    assert host_ip not in ips[0]
    recs = records(result.session_dir)
    spec = json.loads(next((tmp_path / "s").glob("*/runtime/decoder.json")).read_text())
    assert spec["xsub"].startswith(f"tcp://{host_ip}:")
    # the decoder, running in the other namespace, drove the arm over TCP
    assert any(t == "intent" and m.header.src == "decoder" for t, m in recs)
    assert [b.name for b in result.blocks] == ["calibration", "closed_loop_1"]

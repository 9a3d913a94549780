"""``bciarm bench bus``: end-to-end latency source → decoder → effector, three processes.

Latency = effector "command applied" time − neural frame acquisition time
(``time.monotonic_ns``, one clock for every process on the machine), per
frame, at ``rate`` Hz × ``channels`` uint16 channels for ``seconds``.

Three variants, run one after the other in the same invocation:

* **bciarm**: the real-time runtime: three group processes (bench nodes in
  :mod:`bciarm.bench.nodes`) on the direct data path, with the broker process
  (the observer feed) running as in a session; every frame crosses the codec
  and validation twice.  Data go over the same-host fast path
  (:mod:`bciarm.bus.fastpath`, the session default); the same run with it off
  (ZeroMQ only) is printed on the progress lines.
* **floor**: bare pyzmq, PUB/SUB straight between the three processes, the
  same bytes and the same readout, no codec, no broker.
* **ezmsg** (extra ``bench``): the same three units, one process each.

Drops: frames the source published that never reached the effector.
The first ``warmup_s`` are excluded from the percentiles (not from drops).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from bciarm.bus.realtime import free_port

WARMUP_S = 1.0
_HEAD = struct.Struct("<qq")  # seq, t_ns
_HEAD3 = struct.Struct("<qqq")  # seq, t_ns, decoder publish t_ns (intents)


def _figures(lat_ns: np.ndarray, seqs: np.ndarray, frames: int, rate: float) -> dict[str, Any]:
    keep = seqs >= int(WARMUP_S * rate)
    lat = lat_ns[keep] / 1e3 if keep.any() else lat_ns / 1e3
    drops = int(frames - np.unique(seqs).size)
    if lat.size == 0:
        return {"p50_us": None, "p99_us": None, "max_us": None, "drops": drops, "n": 0}
    return {"p50_us": round(float(np.percentile(lat, 50)), 1),
            "p99_us": round(float(np.percentile(lat, 99)), 1),
            "max_us": round(float(lat.max()), 1), "drops": drops, "n": int(lat.size)}


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _wait(procs: list[subprocess.Popen], timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# --------------------------------------------------------------------------- bciarm


def run_bciarm(seconds: float, rate: float, channels: int, workdir: Path,
               fast_path: bool = True) -> dict[str, Any]:
    """The runtime as a session runs it (``fast_path``: ``realtime.local_fast_path``)."""
    from bciarm.bus.fastpath import socket_dir, socket_path

    frames = int(seconds * rate)
    fast_dir = socket_dir(workdir) if fast_path else None
    ep = {k: f"tcp://127.0.0.1:{free_port()}"
          for k in ("xsub", "xpub", "control", "source", "decoder", "effector")}
    (workdir / "broker.json").write_text(json.dumps({"xsub": ep["xsub"], "xpub": ep["xpub"]}))
    out = workdir / "bciarm.npz"
    classes = {
        "source": {"cls": "bciarm.bench.nodes:BenchSource",
                   "params": {"tick_s": 1.0 / rate, "channels": channels, "frames": frames}},
        "decoder": {"cls": "bciarm.bench.nodes:BenchDecoder", "params": {"channels": channels}},
        "effector": {"cls": "bciarm.bench.nodes:BenchEffector", "params": {"out": str(out)}},
    }
    ctx = zmq.Context()
    ctl = ctx.socket(zmq.ROUTER)
    ctl.linger = 0
    ctl.bind(ep["control"])
    procs = [subprocess.Popen([sys.executable, "-m", "bciarm.bus.broker",
                               str(workdir / "broker.json")], env=_env(), start_new_session=True)]
    groups = ("effector", "decoder", "source")
    for g in groups:
        peers = [{"group": o, "endpoint": ep[o], "nodes": [o]} for o in groups if o != g]
        spec = {"group": g, "nodes": [g], "classes": {g: classes[g]}, "data_bind": ep[g],
                "peers": peers, "xsub": ep["xsub"], "control": ep["control"], "hb_s": 0.25}
        if fast_dir is not None:
            spec["fast_bind"] = socket_path(fast_dir, g)
            for peer in peers:
                peer["fast"] = socket_path(fast_dir, peer["group"])
        (workdir / f"{g}.json").write_text(json.dumps(spec))
        procs.append(subprocess.Popen([sys.executable, "-m", "bciarm.bus.realtime",
                                       str(workdir / f"{g}.json")], env=_env(),
                                      start_new_session=True))
    states: dict[str, str] = {}
    idents: dict[str, bytes] = {}
    sent: dict[str, int] = {}

    def pump(timeout_ms: int = 50) -> None:
        if ctl.poll(timeout_ms):
            while True:
                try:
                    ident, raw = ctl.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = json.loads(raw)
                idents[msg["group"]] = ident
                if msg["t"] == "state":
                    states[msg["group"]] = msg["state"]
                elif msg["t"] == "hb":
                    c = msg["nodes"].get(msg["group"], {}).get("counters", {})
                    sent[msg["group"]] = c.get("sent", 0)

    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(states.get(g) == "READY"
                                                 for g in ("source", "decoder", "effector")):
            pump()
        if not all(states.get(g) == "READY" for g in ("source", "decoder", "effector")):
            raise RuntimeError(f"bench processes did not start: {states}")
        for g in ("effector", "decoder", "source"):
            ctl.send_multipart([idents[g], b'{"t": "go"}'])
        end = time.monotonic() + seconds * 3 + 10
        while time.monotonic() < end and sent.get("source", 0) < frames:
            pump(200)
        end = time.monotonic() + 2
        while time.monotonic() < end and sent.get("effector", 0) < 0:
            pump()
        time.sleep(0.5)  # the last frames in flight
        for g in ("source", "decoder", "effector"):
            ctl.send_multipart([idents[g], b'{"t": "stop"}'])
        _wait(procs[1:], 10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        ctx.destroy(linger=0)
    return _hops(np.load(out), frames, rate)


def _hops(data: Any, frames: int, rate: float) -> dict[str, Any]:
    """The figures, plus where the time goes (progress output only): neural frame →
    intent published by the decoder (hop 1), intent published → applied (hop 2)."""
    fig = _figures(data["lat"], data["seqs"], frames, rate)
    if "hop1" in data and data["hop1"].size:
        fig["hop1_p50_us"] = round(float(np.median(data["hop1"])) / 1e3, 1)
        fig["hop2_p50_us"] = round(float(np.median(data["lat"] - data["hop1"])) / 1e3, 1)
    return fig


# --------------------------------------------------------------------------- bare pyzmq


def _sleep_until(t_ns: int) -> None:
    dt = (t_ns - time.monotonic_ns()) / 1e9
    if dt > 0:
        time.sleep(dt)


def _attach(sock: zmq.Socket, ep: str) -> None:
    """``bind:tcp://...`` binds, ``tcp://...`` connects (to a broker)."""
    if ep.startswith("bind:"):
        sock.bind(ep[5:])
    else:
        sock.connect(ep)


def floor_source(pub_ep: str, frames: int, rate: float, channels: int, ready: str) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0
    _attach(pub, pub_ep)
    # wait for the chain: the effector touches `ready` once it saw a probe end to end
    end = time.monotonic() + 30
    while not Path(ready).exists() and time.monotonic() < end:
        pub.send_multipart([b"neural", _HEAD.pack(-1, time.monotonic_ns()) + bytes(2 * channels)])
        time.sleep(0.05)
    counts = np.zeros(channels, "<u2")
    period = round(1e9 / rate)
    t = time.monotonic_ns()
    for n in range(frames):
        counts[n % channels] += 1
        pub.send_multipart([b"neural", _HEAD.pack(n, time.monotonic_ns()) + counts.tobytes()])
        t += period
        _sleep_until(t)
    pub.send_multipart([b"neural", _HEAD.pack(-2, 0)])
    time.sleep(0.5)
    ctx.destroy(linger=0)


def floor_decoder(sub_ep: str, pub_ep: str, channels: int) -> None:
    from bciarm.bench.nodes import decode_weights

    w = decode_weights(channels)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"neural")
    sub.connect(sub_ep)
    pub = ctx.socket(zmq.PUB)
    _attach(pub, pub_ep)
    while True:
        _, payload = sub.recv_multipart()
        seq, t_ns = _HEAD.unpack_from(payload)
        counts = np.frombuffer(payload, "<u2", offset=_HEAD.size)
        v = w @ counts if counts.size == channels else np.zeros(2)
        pub.send_multipart([b"intent", _HEAD3.pack(seq, t_ns, time.monotonic_ns()) + v.tobytes()])
        if seq == -2:
            break
    time.sleep(0.5)
    ctx.destroy(linger=0)


def floor_effector(sub_ep: str, out: str, ready: str) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"intent")
    sub.connect(sub_ep)
    lat, seqs, hop1 = [], [], []
    while True:
        _, payload = sub.recv_multipart()
        seq, t_ns, t_dec = _HEAD3.unpack_from(payload)
        if seq == -2:
            break
        if seq == -1:
            Path(ready).touch()
            continue
        np.clip(np.frombuffer(payload, "<f8", offset=_HEAD3.size), -0.25, 0.25)
        lat.append(time.monotonic_ns() - t_ns)
        seqs.append(seq)
        hop1.append(t_dec - t_ns)
    np.savez(out, lat=np.asarray(lat, np.int64), seqs=np.asarray(seqs, np.int64),
             hop1=np.asarray(hop1, np.int64))
    ctx.destroy(linger=0)


def run_floor(seconds: float, rate: float, channels: int, workdir: Path,
              broker: bool = False) -> dict[str, Any]:
    """Bare pyzmq: direct PUB/SUB (the floor), or through the same XSUB/XPUB broker process."""
    frames = int(seconds * rate)
    name = "floor_broker" if broker else "floor"
    out, ready = workdir / f"{name}.npz", workdir / f"{name}.ready"
    me = [sys.executable, "-m", "bciarm.bench.bus"]
    procs = []
    if broker:
        xsub, xpub = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
        (workdir / "fb.json").write_text(json.dumps({"xsub": xsub, "xpub": xpub}))
        procs.append(subprocess.Popen([sys.executable, "-m", "bciarm.bus.broker",
                                       str(workdir / "fb.json")], env=_env(),
                                      start_new_session=True))
        a_pub, a_sub, b_pub, b_sub = xsub, xpub, xsub, xpub
    else:
        a, b = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
        a_pub, a_sub, b_pub, b_sub = f"bind:{a}", a, f"bind:{b}", b
    procs += [subprocess.Popen([*me, "floor-effector", b_sub, str(out), str(ready)], env=_env(),
                               start_new_session=True),
              subprocess.Popen([*me, "floor-decoder", a_sub, b_pub, str(channels)], env=_env(),
                               start_new_session=True),
              subprocess.Popen([*me, "floor-source", a_pub, str(frames), str(rate),
                                str(channels), str(ready)], env=_env(), start_new_session=True)]
    chain = procs[1:] if broker else procs
    try:
        _wait(chain[::-1], seconds * 3 + 40)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    return _hops(np.load(out), frames, rate)


# --------------------------------------------------------------------------- ezmsg


def run_ezmsg(seconds: float, rate: float, channels: int, workdir: Path) -> dict[str, Any]:
    try:
        import ezmsg.core  # noqa: F401
    except ImportError:
        raise RuntimeError("the ezmsg comparison needs the benchmark extra: "
                           "pip install 'bciarm[bench]'") from None
    frames = int(seconds * rate)
    out = workdir / "ezmsg.npz"
    p = subprocess.Popen([sys.executable, "-m", "bciarm.bench.ezmsg_chain", str(out), str(frames),
                          str(rate), str(channels), str(free_port())], env=_env(),
                         start_new_session=True)
    try:
        p.wait(seconds * 3 + 60)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
            p.wait(5)
    if not out.exists():
        raise RuntimeError("the ezmsg run produced no results")
    data = np.load(out)
    return _figures(data["lat"], data["seqs"], frames, rate)


def run_all(seconds: float = 30.0, rate: float = 1000.0, channels: int = 1024, ezmsg: bool = True,
            progress: Callable[[str], None] = lambda s: None,
            rt_priority: int = 0) -> dict[str, Any]:
    """Run the variants; return exactly the issue's JSON keys (details go to ``progress``).

    ``rt_priority`` > 0: this process takes ``SCHED_FIFO`` at that priority and
    every variant's processes inherit it — the same scheduling for all three.
    """
    if rt_priority:
        from bciarm.bus.realtime import set_realtime_priority

        ok = set_realtime_priority(rt_priority)
        progress(f"SCHED_FIFO priority {rt_priority} for every variant: "
                 f"{'yes' if ok else 'refused, normal scheduling'}")
    try:
        return _run_all(seconds, rate, channels, ezmsg, progress)
    finally:
        if rt_priority:
            try:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass


def _run_all(seconds: float, rate: float, channels: int, ezmsg: bool,
             progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bciarm-bench-") as tmp:
        work = Path(tmp)
        progress(f"bciarm bus: {seconds:.0f} s at {rate:.0f} Hz x {channels} channels ...")
        ours = run_bciarm(seconds, rate, channels, work)
        progress(f"  {ours}")
        progress("bciarm bus with the fast path off (realtime.local_fast_path: false) ...")
        progress(f"  {run_bciarm(seconds, rate, channels, work, fast_path=False)}")
        progress("bare pyzmq floor ...")
        floor = run_floor(seconds, rate, channels, work)
        progress(f"  {floor}")
        progress("bare pyzmq through the broker ...")
        floor_b = run_floor(seconds, rate, channels, work, broker=True)
        progress(f"  {floor_b}")
        ez: dict[str, Any] = {"p50_us": None, "p99_us": None}
        if ezmsg:
            progress("ezmsg ...")
            ez = run_ezmsg(seconds, rate, channels, work)
            progress(f"  {ez}")
    return {"p50_us": ours["p50_us"], "p99_us": ours["p99_us"], "max_us": ours["max_us"],
            "drops": ours["drops"], "floor_p50_us": floor["p50_us"],
            "ezmsg_p50_us": ez["p50_us"], "ezmsg_p99_us": ez["p99_us"]}


def main(argv: list[str]) -> int:
    from bciarm.bus.realtime import die_with_parent

    die_with_parent()
    cmd, *a = argv
    if cmd == "floor-source":
        floor_source(a[0], int(a[1]), float(a[2]), int(a[3]), a[4])
    elif cmd == "floor-decoder":
        floor_decoder(a[0], a[1], int(a[2]))
    elif cmd == "floor-effector":
        floor_effector(a[0], a[1], a[2])
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``bciarm bench lsl``: a real LSL stream into the ``lsl`` source, counted sample by sample.

An outlet process (:mod:`bciarm.testing.lsl_outlet`) pushes ``seconds`` of
``rate`` Hz × ``channels`` int32 samples whose channel 0 is the sample index;
this process runs :class:`bciarm.sources.lsl.LslSource` on the wall clock
(a tick every ``tick_s``), re-binning to ``bin_s``.  Every published frame is
checked against the pattern it must hold (:func:`expected_bins`): a lost,
repeated or reordered sample changes channel 0's sum of that bin and every
bin after it.

Figures: samples pushed and received, frames published and expected, bad
frames (content mismatch), stale bins dropped, lost-stream events, and the
acquisition → publish latency of the frames (p50 / p99 / max, ms).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from bciarm.bus.harness import NodeHarness
from bciarm.testing.lsl_outlet import expected_bins


def run_lsl_bench(seconds: float = 20.0, rate: float = 1000.0, channels: int = 256,
                  bin_s: float = 0.01, tick_s: float = 0.005,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stream ``seconds × rate`` samples through a real outlet → LslSource; return the figures.

    Raises
    ------
    RuntimeError
        The outlet process failed or no stream arrived.
    """
    from bciarm.sources.lsl import LslSource

    say = progress or (lambda _s: None)
    name = f"bciarm-bench-{uuid.uuid4().hex[:8]}"
    total = round(seconds * rate)
    factor = round(bin_s * rate)
    outlet = subprocess.Popen(
        [sys.executable, "-m", "bciarm.testing.lsl_outlet", "--name", name,
         "--channels", str(channels), "--rate", str(rate), "--seconds", str(seconds),
         "--linger", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    node = LslSource("lsl", stream_name=name, stream_type=None, bin_s=bin_s, tick_s=tick_s,
                     n_channels=channels, lost_after_s=0.5)
    h = NodeHarness(node, tick_s=tick_s)
    frames: list[Any] = []
    events: list[Any] = []
    try:
        if outlet.stdout is None or outlet.stdout.readline().strip() != "READY":
            raise RuntimeError("the LSL outlet process did not start")
        say(f"streaming {seconds:g} s of {rate:g} Hz × {channels} channels ({name})")
        deadline = time.monotonic() + seconds + 15.0
        next_t = time.monotonic()
        last_report = 0
        while time.monotonic() < deadline:
            h.tick()
            new = h.capture.messages
            for topic, msg in new:
                (frames if topic == "neural" else events).append(msg)
            new.clear()
            if len(frames) * factor >= total:
                break
            if outlet.poll() is not None and events and events[-1].data.get("state") == "lost":
                break  # the outlet is gone and the stream ended early: report what arrived
            if len(frames) * factor // int(rate) >= last_report + 5:
                last_report = len(frames) * factor // int(rate)
                say(f"  {last_report} s received")
            next_t += tick_s
            time.sleep(max(0.0, next_t - time.monotonic()))
        received = node.reader.samples if node.reader is not None else 0
    finally:
        h.close()
        try:
            outlet.wait(timeout=10)
        except subprocess.TimeoutExpired:
            outlet.kill()
    if not frames:
        raise RuntimeError(f"no frame arrived from LSL stream {name!r}")
    X = np.asarray([f.counts for f in frames], dtype=np.int64)
    n = len(frames)
    # Which bin each frame is, from channel 0 (the sum of its sample indices):
    # sum(k·m … k·m+m-1) = k·m² + m(m-1)/2.
    m = factor
    k = (X[:, 0] - m * (m - 1) // 2) // (m * m)
    want = expected_bins(0, int(k.max()) + 1, factor, channels)[np.clip(k, 0, None)]
    bad = int(((X != want).any(axis=1) | (k < 0)).sum())
    # Bins must follow one another; only bins dropped as stale may be missing.
    gaps = int(np.sum(np.diff(k) - 1)) + int(k[0]) if n else 0
    out_of_order = int(np.sum(np.diff(k) < 1))
    lat_ms = np.asarray([(f.header.t_ns - f.header.neural_t_ns) / 1e6 for f in frames])
    return {
        "seconds": seconds, "rate_hz": rate, "channels": channels, "bin_s": bin_s,
        "samples_pushed": total, "samples_received": int(received),
        "frames": n, "frames_expected": total // factor, "bad_frames": bad,
        "missing_bins": gaps, "out_of_order": out_of_order,
        "lost_samples": int(total - received), "stale_dropped": int(node.dropped_stale),
        "lost_events": sum(1 for e in events if e.data.get("state") == "lost"),
        "latency_p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "latency_p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
        "latency_max_ms": round(float(lat_ms.max()), 3),
    }

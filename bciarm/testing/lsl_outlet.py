"""A real pylsl outlet in its own process: the peer for LSL tests and ``bciarm bench lsl``.

Run as ``python -m bciarm.testing.lsl_outlet --name N --type SpikeCounts
--channels 256 --rate 1000 --seconds 20``.  It pushes int32 samples in
chunks on the wall clock with explicit, regular timestamps.  The samples are a
known pattern (:func:`pattern`): channel 0 is the sample's index, so a
receiver can check that no sample was lost, repeated or reordered, and the
others are sparse 0/1 "spikes".  It prints ``READY`` when the outlet exists
and ``DONE <samples>`` when it has pushed them all (it then keeps the outlet
open for ``--linger`` seconds before exiting).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def pattern(start: int, n: int, channels: int) -> np.ndarray:
    """Samples ``start … start+n-1``: ``(n, channels)`` int32, channel 0 = index."""
    idx = np.arange(start, start + n, dtype=np.int64)[:, None]
    ch = np.arange(channels, dtype=np.int64)[None, :]
    out = (((idx * 31 + ch * 17) % 7) == 0).astype(np.int32)
    out[:, 0] = idx[:, 0]
    return out


def expected_bins(first_bin: int, n_bins: int, factor: int, channels: int) -> np.ndarray:
    """What a receiver summing ``factor`` samples per bin gets for bins ``first_bin …``."""
    x = pattern(first_bin * factor, n_bins * factor, channels).astype(np.int64)
    return x.reshape(n_bins, factor, channels).sum(axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--type", default="SpikeCounts")
    ap.add_argument("--source-id", default="")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=5.0, help="stream length (samples = s × rate)")
    ap.add_argument("--chunk-ms", type=float, default=10.0, help="push period")
    ap.add_argument("--linger", type=float, default=0.5,
                    help="keep the outlet open after the last push, s (data in flight is lost "
                         "when an outlet is destroyed)")
    ap.add_argument("--wait-consumer", type=float, default=10.0,
                    help="wait up to this long for an inlet before pushing, s")
    ap.add_argument("--pattern", choices=("index", "poisson"), default="index",
                    help="index: the checkable pattern (channel 0 = sample index); poisson: "
                         "seeded Poisson counts at ~20 Hz per channel (a decoder can be fit)")
    ap.add_argument("--pause-at", type=float, default=-1.0,
                    help="stall the outlet at this stream time, s (then catch up: no sample "
                         "is lost)")
    ap.add_argument("--pause-for", type=float, default=0.0, help="length of the stall, s")
    ap.add_argument("--start-delay", type=float, default=0.5,
                    help="then wait this long (the inlet's data connection settles), s")
    args = ap.parse_args(argv)

    import pylsl

    info = pylsl.StreamInfo(args.name, args.type, args.channels, args.rate, pylsl.cf_int32,
                            args.source_id or args.name)
    outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
    print("READY", flush=True)
    # Start the stream when a consumer is there, so a test counts from sample 0.
    outlet.wait_for_consumers(args.wait_consumer)
    time.sleep(args.start_delay)
    total = round(args.seconds * args.rate)
    sent = 0
    t0 = pylsl.local_clock()
    period = args.chunk_ms / 1000.0
    paused = False
    rng = np.random.default_rng(0)
    while sent < total:
        if not paused and 0 <= args.pause_at <= sent / args.rate:
            paused = True
            time.sleep(args.pause_for)  # a stalled acquisition; the samples keep their times
        due = min(total, int((pylsl.local_clock() - t0) * args.rate) + 1)
        if due > sent:
            x = (pattern(sent, due - sent, args.channels) if args.pattern == "index"
                 else rng.poisson(20.0 / args.rate, size=(due - sent, args.channels))
                 .astype(np.int32))
            # Timestamp of the last sample of the chunk; liblsl back-fills
            # the others from the nominal rate.
            outlet.push_chunk(x, timestamp=t0 + (due - 1) / args.rate)
            sent = due
        time.sleep(period)
    print(f"DONE {sent}", flush=True)
    if args.linger > 0:
        time.sleep(args.linger)
    del outlet
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a process
    sys.exit(main())

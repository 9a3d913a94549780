"""The ``cerebus`` source.

Its logic (binning spikes into frames, loss, recovery) is tested against
``CerebusLinkDouble`` — a TEST DOUBLE of the device link, because no offline
Cerebus peer exists here.  The real pycbsdk link is tried last and skips with
the reason when pycbsdk, its CereLink library or a device is missing.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from bciarm import registry
from bciarm.bus.harness import NodeHarness
from bciarm.sources.cerebus import CbsdkLink, CerebusSource, CerebusUnavailable
from bciarm.testing.cerebus_double import CerebusLinkDouble


def _tick_until(h, cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h.tick()
        if cond():
            return True
        time.sleep(0.005)
    return False


def _states(h):
    return [e.data["state"] for e in h.sent("event")]


def test_registered_and_validated():
    assert registry.resolve("source", "cerebus") is CerebusSource
    with pytest.raises(ValueError, match="device_type"):
        CerebusSource.Params(device_type="NSP9")
    with pytest.raises(ValueError, match="tick_s"):
        CerebusSource.Params(bin_s=0.01, tick_s=0.02)


def test_spikes_are_counted_per_channel_in_their_bins_and_loss_stops_frames():
    link = CerebusLinkDouble()  # test double: no device here
    node = CerebusSource("cb", link=link, n_channels=4, bin_s=0.05, settle_s=0.01,
                         lost_after_s=0.1)
    h = NodeHarness(node, tick_s=0.01)
    link.heartbeat()
    assert _tick_until(h, lambda: "connected" in _states(h), 2)
    first = node._next_bin
    assert first is not None
    # Spikes in the next three bins, plus a noise packet and a channel out of range.
    rng = np.random.default_rng(1)
    spikes = [((first + 1 + rng.integers(0, 3)) * 0.05 + rng.uniform(0.001, 0.049),
               int(rng.integers(1, 5))) for _ in range(60)]
    for t, ch in spikes:
        link.spike(t, ch)
    link.spike((first + 1) * 0.05 + 0.01, 2, unit=255)   # noise: not a spike
    link.spike((first + 1) * 0.05 + 0.01, 9)             # beyond n_channels: ignored
    end = (first + 4) * 0.05 + 0.011

    def published_past_spikes():
        link.heartbeat()
        return time.monotonic() > end and node._next_bin >= first + 4

    assert _tick_until(h, published_past_spikes, 3)
    frames = h.sent("neural")
    # Frames are consecutive bins from the first one counted.
    by_bin = {first + i: f.counts for i, f in enumerate(frames)}
    # Reference: a histogram of the injected spikes (independent of the node's loop).
    ref = np.zeros((3, 4), dtype=int)
    for t, ch in spikes:
        ref[int(t // 0.05) - first - 1, ch - 1] += 1
    got = np.vstack([by_bin[first + 1 + i] for i in range(3)])
    assert np.array_equal(got, ref)
    assert all(f.counts.dtype == np.uint32 and f.bin_s == 0.05 for f in frames)
    # The device falls silent: a lost event, then no frame at all (not empty ones).
    link.alive = False
    assert _tick_until(h, lambda: "lost" in _states(h), 2)
    n = len(h.sent("neural"))
    t_stop = time.monotonic() + 0.2
    _tick_until(h, lambda: time.monotonic() > t_stop, 1)
    assert len(h.sent("neural")) == n
    # It comes back: connected again, frames resume.
    link.alive = True
    assert _tick_until(h, lambda: (link.heartbeat(), len(h.sent("neural")) > n + 2)[1], 3)
    assert _states(h) == ["connected", "lost", "connected"]
    h.close()
    assert link.closed == 1


def test_missing_library_or_device_is_reported_not_raised():
    class Broken:
        def start(self, on_spike):
            raise CerebusUnavailable("pycbsdk cannot load the CereLink library: test")

        def packets(self):
            return 0

        def close(self):
            pass

    node = CerebusSource("cb", link=Broken())
    h = NodeHarness(node)
    assert _tick_until(h, lambda: h.sent("event"), 5)  # the connection is tried in a thread
    (ev,) = h.sent("event")
    assert ev.data["state"] == "unavailable" and "CereLink" in ev.data["reason"]
    assert h.sent("neural") == []
    h.close()


def test_real_device_through_pycbsdk():
    """Against a real NSP/Hub (or nPlayServer): skips with the reason where there is none."""
    pytest.importorskip("pycbsdk", reason="pycbsdk is not installed (optional extra "
                                          "'cerebus'; not part of the test extra)")
    device = os.environ.get("BCIARM_CEREBUS_DEVICE", "NSP")
    link = CbsdkLink(device)
    try:
        link.start(lambda t, ch, unit: None)
    except CerebusUnavailable as exc:
        pytest.skip(f"no Cerebus connection: {exc}")
    try:
        deadline = time.monotonic() + 3.0
        while link.packets() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if link.packets() == 0:
            pytest.skip(f"no {device} device answered within 3 s")
        node = CerebusSource("cb", link=link, device_type=device)
        h = NodeHarness(node)
        assert _tick_until(h, lambda: len(h.sent("neural")) >= 10, 5)
        h.close()
    finally:
        link.close()

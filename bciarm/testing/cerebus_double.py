"""A test double of the Cerebus device link (:class:`bciarm.sources.cerebus.Link`).

No offline peer of a Blackrock NSP exists here (Blackrock's nPlayServer is
not on PyPI), so the node's logic — binning, loss, reconnection — is tested
against this double, named as such; the real link (:class:`CbsdkLink`, on
pycbsdk) is exercised by ``tests/sources/test_cerebus.py`` only where pycbsdk,
its library and a device are present.

The double stands for the device *after* pycbsdk's clock sync: it hands the
node spikes stamped on this machine's monotonic clock, and a packet counter
that grows while the "device" is alive (the NSP's 10 ms heartbeats).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np


class CerebusLinkDouble:
    """Test double of the Cerebus link.

    Parameters
    ----------
    rate_hz : float
        Mean spike rate per channel of the background generator; 0 = no
        generator (the test calls :meth:`spike` and :meth:`heartbeat`).
    n_channels : int
        Channels the generator fires on (1-based ids).
    seed : int
    """

    def __init__(self, rate_hz: float = 0.0, n_channels: int = 96, seed: int = 0) -> None:
        self.rate_hz = rate_hz
        self.n_channels = n_channels
        self._rng = np.random.default_rng(seed)
        self._on_spike: Callable[[float, int, int], None] | None = None
        self._packets = 0
        self.alive = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = 0

    def start(self, on_spike: Callable[[float, int, int], None]) -> None:
        self._on_spike = on_spike
        if self.rate_hz > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def packets(self) -> int:
        return self._packets

    def close(self) -> None:
        self.closed += 1
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    # -- what a test drives

    def heartbeat(self) -> None:
        """One packet from the device (it is alive)."""
        if self.alive:
            self._packets += 1

    def spike(self, t: float, channel: int, unit: int = 0) -> None:
        """A spike at monotonic time ``t`` on ``channel`` (1-based), unit (255 = noise)."""
        if self.alive and self._on_spike is not None:
            self._packets += 1
            self._on_spike(t, channel, unit)

    def _run(self) -> None:
        period = 0.01
        while not self._stop.wait(period):
            self.heartbeat()
            now = time.monotonic()
            n = self._rng.poisson(self.rate_hz * period * self.n_channels)
            for ch, dt in zip(self._rng.integers(1, self.n_channels + 1, n),
                              self._rng.uniform(0, period, n)):
                self.spike(now - dt, int(ch))

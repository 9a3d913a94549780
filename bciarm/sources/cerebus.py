"""The ``cerebus`` source: spike counts from a Blackrock Cerebus / Gemini system (pycbsdk).

::

    NSP / Hub ──UDP──▶ pycbsdk Session (CereLink) ──spike events──▶ callback thread
        ──▶ CerebusSource.on_tick: count per channel in bins of bin_s ──▶ NeuralFrame

Needs the optional extra ``cerebus`` (``pip install 'bciarm[cerebus]'``:
pycbsdk, plus the CereLink shared library ``libcbsdk`` it loads — pycbsdk's
source distribution does not ship it on Linux; build CereLink with
``cmake -DCBSDK_BUILD_SHARED=ON`` and point ``CBSDK_LIB_PATH`` at it) and a
device (or Blackrock's nPlayServer) on the network.

* Every spike event on a front-end channel ``1 … n_channels`` counts toward
  its channel (all sorted units and unsorted spikes; ``noise`` packets,
  unit 255, are not spikes).  Event times are device times converted to
  this machine's monotonic clock by pycbsdk's clock sync
  (``device_to_monotonic``), so frames carry true acquisition times.
* A bin ``[t, t + bin_s)`` is published once ``settle_s`` has passed after
  its end (events in flight), as one frame; a spike that arrives later than
  that is counted (``late_spikes``) and dropped.
* **Loss**: when the device sends no packet for ``lost_after_s`` (the NSP
  sends system heartbeats every 10 ms), the node publishes an ``event`` of
  kind ``stream`` with ``state: lost`` and no frame until packets flow again
  (``state: connected``) — never empty bins, which a decoder would turn
  into intents.  An effector's watchdog stops it meanwhile.

The connection is opened in a thread (opening a device session may block;
a node's tick, and so its heartbeats, must not) and retried every
``retry_s``.  The device-facing part is a small adapter around ``pycbsdk.Session``
(:class:`CbsdkLink`); tests with no device drive the node through a test
double of that adapter (``bciarm.testing.cerebus_double``), which says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from pydantic import Field, model_validator

from bciarm.bus.messages import Event, Header, NeuralFrame
from bciarm.bus.node import Node, NodeParams

log = logging.getLogger("bciarm.sources.cerebus")

NS_PER_S = 1_000_000_000
DEVICE_TYPES = ("LEGACY_NSP", "NSP", "HUB1", "HUB2", "HUB3", "NPLAY")
#: Cerebus spike packets classify the unit in the header's ``type``: 0
#: unsorted, 1-5 sorted units, 255 noise.
NOISE_UNIT = 255


class CerebusUnavailable(RuntimeError):
    """pycbsdk or its shared library is missing, or no device answered; says which."""


class Link(Protocol):
    """What the node needs from a device connection (pycbsdk, or a test double)."""

    def start(self, on_spike: Callable[[float, int, int], None]) -> None:
        """Connect and call ``on_spike(t_monotonic_s, channel, unit)`` for every spike."""

    def packets(self) -> int:
        """Packets received from the device so far (liveness)."""

    def close(self) -> None: ...


class CbsdkLink:
    """The real device connection: a ``pycbsdk.Session`` with a front-end spike callback."""

    def __init__(self, device_type: str) -> None:
        self.device_type = device_type
        self._session: Any = None

    def start(self, on_spike: Callable[[float, int, int], None]) -> None:
        try:
            import pycbsdk
        except ModuleNotFoundError:
            raise CerebusUnavailable("the cerebus source needs pycbsdk, which is not installed "
                                     "(pip install 'bciarm[cerebus]')") from None
        try:
            session = pycbsdk.Session(self.device_type)
        except OSError as exc:  # libcbsdk not found
            raise CerebusUnavailable(f"pycbsdk cannot load the CereLink library: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - RuntimeError from cbsdk_session_create
            raise CerebusUnavailable(f"cannot open a {self.device_type} session: {exc}") from None
        self._session = session

        @session.on_event("FRONTEND")
        def _spike(header: Any, _data: Any) -> None:
            try:
                t = session.device_to_monotonic(int(header.time))
            except RuntimeError:  # no clock sync yet: the receive time is the best estimate
                t = time.monotonic()
            on_spike(t, int(header.chid), int(header.type))

    def packets(self) -> int:
        return int(self._session.stats.packets_received) if self._session is not None else 0

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class CerebusSource(Node):
    """Spike counts from a Blackrock Cerebus system (registry name ``"cerebus"``).

    Outputs ``neural`` and ``event`` (kind ``stream``: ``connected``,
    ``lost``, ``unavailable``).

    Attributes
    ----------
    frames, late_spikes, spikes : int
    """

    #: Reads the wall clock: an inline session containing it is paced at real time.
    wall_clock = True

    class Params(NodeParams):
        """Parameters of the Cerebus source."""

        device_type: str = Field("NSP", description=f"pycbsdk device type: {DEVICE_TYPES}.")
        n_channels: int = Field(96, ge=1, le=1024, description="Front-end channels 1…n counted.")
        bin_s: float = Field(0.05, gt=0, le=1.0, description="Bin width of the frames, s.")
        tick_s: float | None = Field(0.01, gt=0, description="Poll period, s (<= bin_s).")
        settle_s: float = Field(0.01, ge=0, le=0.5,
                                description="Publish a bin this long after its end, s.")
        lost_after_s: float = Field(0.2, gt=0, le=10.0,
                                    description="No packet for this long: the device is lost.")
        retry_s: float = Field(2.0, gt=0, description="Retry a failed connection after, s.")

        @model_validator(mode="after")
        def _check(self) -> CerebusSource.Params:
            if self.device_type not in DEVICE_TYPES:
                raise ValueError(f"device_type must be one of {DEVICE_TYPES}, "
                                 f"got {self.device_type!r}")
            if self.tick_s is None or self.tick_s > self.bin_s + 1e-12:
                raise ValueError(f"tick_s ({self.tick_s}) must be set and <= bin_s ({self.bin_s})")
            return self

    inputs = ()
    outputs = ("neural", "event")

    def __init__(self, name: str, params: NodeParams | dict | None = None, *,
                 link: Link | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        self.link: Link = link if link is not None else CbsdkLink(self.params.device_type)
        self._lock = threading.Lock()
        self._spikes: deque[tuple[float, int]] = deque()
        self._bins: dict[int, np.ndarray] = {}
        self._next_bin: int | None = None   # first bin not yet published
        self._live = False
        self._last_packets = 0
        self._last_packet_t = 0.0
        self._started = False
        self._retry_at = 0.0
        self._connected_at = 0.0
        self._connector: threading.Thread | None = None
        self._connect_result: str | None = None
        self._ever_live = False
        self._silence_reported = False
        self.frames = 0
        self.spikes = 0
        self.late_spikes = 0
        self.error: str | None = None

    @classmethod
    def contract_instance(cls, name: str) -> CerebusSource:
        """The node on the Cerebus test double (no device needed; the contract checks)."""
        from bciarm.testing.cerebus_double import CerebusLinkDouble

        return cls(name, link=CerebusLinkDouble(rate_hz=20.0, n_channels=96))

    # -- device side (pycbsdk's callback thread)

    def _on_spike(self, t: float, channel: int, unit: int) -> None:
        if unit == NOISE_UNIT or not 1 <= channel <= self.params.n_channels:
            return
        with self._lock:
            self._spikes.append((t, channel - 1))

    # -- node side

    def _connect(self) -> None:
        """Open the link in a thread: opening a device session may block, a tick must not."""
        try:
            self.link.start(self._on_spike)
        except CerebusUnavailable as exc:
            self._connect_result = str(exc)
        except Exception as exc:  # noqa: BLE001 - anything the library throws: report, retry
            self._connect_result = f"cannot connect: {exc}"
        else:
            self._connect_result = ""

    def on_stop(self) -> None:
        if self._connector is not None:
            self._connector.join(5.0)
            self._connector = None
        if self._started or self._connect_result == "":  # connected, even if not yet seen
            self._started = False
            self._connect_result = None
            self.link.close()

    def on_tick(self, now_ns: int) -> None:
        p = self.params
        now = time.monotonic()
        if not self._started:
            if self._connector is None and now >= self._retry_at:
                self._connect_result = None
                self._connector = threading.Thread(target=self._connect, name="cerebus-connect",
                                                   daemon=True)
                self._connector.start()
            if self._connector is not None and not self._connector.is_alive():
                self._connector = None
                if self._connect_result:
                    if self.error != self._connect_result:
                        self.error = self._connect_result
                        self.log.error("%s", self._connect_result)
                        self.emit("event", Event, kind="stream",
                                  data={"node": self.name, "state": "unavailable",
                                        "reason": self._connect_result})
                    self._retry_at = now + p.retry_s
                else:
                    self._started = True
                    self.error = None
                    self._last_packet_t = now
                    self._connected_at = now
            return
        packets = self.link.packets()
        if packets != self._last_packets:
            self._last_packets = packets
            self._last_packet_t = now
            if not self._live:
                self._live = True
                self._ever_live = True
                self._bins.clear()
                self._next_bin = None
                self.emit("event", Event, kind="stream",
                          data={"node": self.name, "state": "connected",
                                "device_type": p.device_type, "channels": p.n_channels})
        elif not self._ever_live and not self._silence_reported \
                and now - self._connected_at > p.retry_s:
            # Connected to the library, but no device answers (wrong network,
            # device off): say so once; frames start if it ever does.
            self._silence_reported = True
            reason = f"no packet from a {p.device_type} in {p.retry_s:g} s"
            self.log.error("%s", reason)
            self.emit("event", Event, kind="stream",
                      data={"node": self.name, "state": "unavailable", "reason": reason})
        elif self._live and now - self._last_packet_t > p.lost_after_s:
            self._live = False
            self.emit("event", Event, kind="stream",
                      data={"node": self.name, "state": "lost",
                            "silent_s": round(now - self._last_packet_t, 3)})
        with self._lock:
            spikes = list(self._spikes)
            self._spikes.clear()
        if not self._live:
            return  # no frames, not even empty ones, while the device is silent
        if self._next_bin is None:
            self._next_bin = int(np.floor(now / p.bin_s))  # start counting from now
        for t, ch in spikes:
            k = int(np.floor(t / p.bin_s))
            if k < self._next_bin:
                self.late_spikes += 1
                continue
            counts = self._bins.get(k)
            if counts is None:
                counts = self._bins[k] = np.zeros(p.n_channels, dtype=np.uint32)
            counts[ch] += 1
            self.spikes += 1
        offset_ns = now_ns - round(now * NS_PER_S)  # monotonic → this runtime's clock
        while (self._next_bin + 1) * p.bin_s + p.settle_s <= now:
            k = self._next_bin
            counts = self._bins.pop(k, None)
            if counts is None:
                counts = np.zeros(p.n_channels, dtype=np.uint32)
            acq_ns = min(round((k + 1) * p.bin_s * NS_PER_S) + offset_ns, now_ns)
            h = self.header("neural")
            self.publish("neural", NeuralFrame(header=Header(h.seq, h.t_ns, h.src, h.seq, acq_ns),
                                               counts=counts, bin_s=p.bin_s))
            self.frames += 1
            self._next_bin = k + 1

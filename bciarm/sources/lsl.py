"""The ``lsl`` source: neural input from a Lab Streaming Layer stream (pylsl).

::

    LSL outlet (another process or machine) ──▶ LslReader thread (resolve, inlet, pull)
        ──▶ LslSource.on_tick: re-bin to the decoder's bin width ──▶ NeuralFrame on "neural"

* **Resolve** by ``stream_name`` and/or ``stream_type`` (default type
  ``SpikeCounts``), optionally ``source_id``; the first stream that matches is
  opened.
* **Input**: ``input: counts`` takes spike counts per sample (e.g. 1 kHz
  samples of per-millisecond counts) and sums every ``bin_s × srate`` samples
  into one frame, so the decoder sees its own bin width; ``input: features``
  takes one already-binned feature vector per sample (``1/srate == bin_s``).
* **Clock**: the inlet applies LSL clock correction (``time_correction``,
  ``proc_clocksync``) and dejitters timestamps (``proc_dejitter``,
  ``proc_monotonize``), so a frame's acquisition time is the remote sample
  time mapped onto this machine's LSL clock (``local_clock``, the monotonic
  clock the real-time runtime uses too).
* **Loss**: when no sample arrived for ``lost_after_s`` (or liblsl reports the
  stream lost), the node publishes an ``event`` of kind ``stream`` with
  ``state: lost``; it publishes no neural frame meanwhile, so the decoder
  publishes no intent and every effector's watchdog brakes it.  A stream that
  resumes within ``reconnect_after_s`` continues on the same inlet (nothing
  lost; ``state: connected``, ``new_inlet: false``); after that the inlet is
  closed and the stream resolved again, and when a matching stream delivers
  samples ``state: connected`` (``new_inlet: true``) is published and frames
  resume (a partial bin from before is dropped, never joined to samples
  from another connection).
* **Staleness**: a bin older than ``max_latency_s`` when it could be
  published (a backlog after a stall) is dropped and counted, never decoded
  into motion.

The node reads the wall clock through LSL, so it is a real-time source: in
the real-time runtime it runs as is; in the inline runtime a session that
contains it is paced at wall-clock speed (``wall_clock = True``, see
:class:`bciarm.session.Session`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from bciarm.bus.messages import Event, Header, NeuralFrame
from bciarm.bus.node import Node, NodeParams

log = logging.getLogger("bciarm.sources.lsl")

NS_PER_S = 1_000_000_000
#: Largest chunk pulled at once (samples); a 1 kHz stream delivers ~10-20 per pull.
MAX_CHUNK = 8192
#: The resolver forgets a stream this long after its last answer; a lost
#: stream is not reopened for this long either (unless it answers afresh).
FORGET_AFTER_S = 1.0
#: Warn (once) when no stream has delivered this long after start.
WAIT_WARN_S = 5.0


def _pylsl() -> Any:
    try:
        import pylsl
    except ModuleNotFoundError as exc:  # pragma: no cover - pylsl is a main test dependency
        raise ModuleNotFoundError(
            "the lsl source needs pylsl, which is not installed (pip install 'bciarm[lsl]')",
            name="pylsl") from exc
    return pylsl


def _lost_error(pylsl: Any) -> type[Exception]:
    """pylsl's LostError (module path differs between versions)."""
    err = getattr(pylsl, "LostError", None)
    if err is None:
        from pylsl.util import LostError as err
    return err


# ---------------------------------------------------------------------- re-binning


class Rebinner:
    """Sum every ``factor`` consecutive samples into one bin.

    Parameters
    ----------
    factor : int
        Samples per output bin (``bin_s × nominal_srate``); 1 passes samples through.

    Notes
    -----
    Binning by sample count (not by timestamp) conserves every count exactly
    and does not depend on timestamp jitter; a bin's time is its last
    sample's timestamp (counts in a sample cover the interval ending there).
    :meth:`reset` drops a partial bin (after a stream loss).
    """

    def __init__(self, factor: int) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = int(factor)
        self._rest: np.ndarray | None = None
        self._rest_t: np.ndarray | None = None

    @property
    def pending(self) -> int:
        """Samples waiting for their bin to fill."""
        return 0 if self._rest is None else len(self._rest)

    def reset(self) -> None:
        self._rest = None
        self._rest_t = None

    def add(self, data: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed ``(n, C)`` samples; return ``(bins (b, C), bin_end_times (b,))``."""
        data = np.asarray(data)
        ts = np.asarray(timestamps, dtype=np.float64)
        if self._rest is not None and len(self._rest):
            data = np.concatenate([self._rest, data])
            ts = np.concatenate([self._rest_t, ts])
        m = self.factor
        nb = len(data) // m
        used = nb * m
        self._rest, self._rest_t = data[used:].copy(), ts[used:].copy()
        if nb == 0:
            return data[:0], ts[:0]
        if m == 1:
            return data[:used], ts[:used]
        acc = np.int64 if data.dtype.kind in "iub" else np.float64
        bins = data[:used].reshape(nb, m, data.shape[1]).sum(axis=1, dtype=acc)
        return bins, ts[m - 1:used:m]


def frame_counts(bins: np.ndarray) -> np.ndarray:
    """Bins as a dtype the ``neural`` topic carries (uint32/int32 counts, float64 features)."""
    if bins.dtype.kind in "iub":
        lo, hi = (int(bins.min()), int(bins.max())) if bins.size else (0, 0)
        if lo >= 0 and hi <= np.iinfo(np.uint32).max:
            return bins.astype("<u4")
        if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
            return bins.astype("<i4")  # signed integer features
        return bins.astype("<f8")
    return np.ascontiguousarray(bins, dtype="<f8")


# ---------------------------------------------------------------------- reader thread


@dataclass(frozen=True)
class StreamDescription:
    """What the inlet found (reported in ``stream`` events)."""

    name: str
    type: str
    source_id: str
    channels: int
    srate: float
    channel_format: str
    hostname: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "source_id": self.source_id,
                "channels": self.channels, "srate": self.srate,
                "channel_format": self.channel_format, "hostname": self.hostname}


def _predicate(name: str | None, stype: str | None, source_id: str | None) -> str:
    parts = [f"{key}='{value}'" for key, value in
             (("name", name), ("type", stype), ("source_id", source_id)) if value]
    return " and ".join(parts)


class LslReader:
    """A thread that owns one pylsl inlet: resolve, open, pull, detect loss, reconnect.

    The node's thread only calls :meth:`take`, which hands over the chunks
    and state changes gathered since the last call; all pylsl calls happen
    in the reader thread (a blocking resolve never stalls a node's tick).

    Parameters
    ----------
    name, stype, source_id : str or None
        What to resolve (at least one).
    channels : int or None
        Required channel count; a stream of another width is refused.
    lost_after_s : float
        No sample for this long → the stream is lost (announced at once).
    reconnect_after_s : float
        No sample for this long → close the inlet and resolve again (a stream
        that stalls for less resumes on the same inlet, losing nothing).
    resolve_timeout_s : float
        Timeout of opening a resolved stream (and of its first clock-offset estimate).
    clock_sync, dejitter : bool
        LSL post-processing flags of the inlet.
    buffer_s : float
        Inlet buffer (liblsl keeps at most this much while nobody pulls).
    """

    def __init__(self, name: str | None, stype: str | None, source_id: str | None = None, *,
                 channels: int | None = None, lost_after_s: float = 0.2,
                 resolve_timeout_s: float = 0.5, clock_sync: bool = True,
                 dejitter: bool = True, buffer_s: float = 10.0,
                 reconnect_after_s: float = 1.0) -> None:
        self.predicate = _predicate(name, stype, source_id)
        if not self.predicate:
            raise ValueError("give a stream name, type or source_id to resolve")
        self.channels = channels
        self.lost_after_s = lost_after_s
        self.reconnect_after_s = reconnect_after_s
        self.resolve_timeout_s = resolve_timeout_s
        self.clock_sync = clock_sync
        self.dejitter = dejitter
        self.buffer_s = buffer_s
        self.state = "resolving"   # resolving | streaming | lost
        self.stream: StreamDescription | None = None
        self.samples = 0           # samples received since start, all connections
        self.connections = 0
        self._lock = threading.Lock()
        # One ordered queue of ("data", (samples, timestamps)) and
        # ("state", (state, details)) items: a loss must be seen after the
        # samples that came before it.
        self._queue: deque[tuple[str, Any]] = deque()
        self._stop = threading.Event()
        self._resolver: Any = None
        #: uid -> when it was lost: the resolver remembers a dead stream for a while
        self._dead: dict[str, float] = {}
        self._uid = ""
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # -- called from the node's thread

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lsl-reader", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def take(self) -> list[tuple[str, Any]]:
        """Everything since the last call, in order: ``("data", (samples (n, C), timestamps (n,)))``
        and ``("state", (state, details))`` items."""
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        return items

    # -- the reader thread

    def _change(self, state: str, **data: Any) -> None:
        self.state = state if state != "refused" else self.state
        with self._lock:
            self._queue.append(("state", (state, data)))

    def _open(self, pylsl: Any) -> Any | None:
        # A continuous resolver (liblsl's background queries) rather than
        # resolve_bypred: a one-shot resolve that finds nothing sometimes
        # blocks ~5 s past its timeout here, which would hold up a reconnection.
        if self._resolver is None:
            self._resolver = pylsl.ContinuousResolver(pred=self.predicate,
                                                      forget_after=FORGET_AFTER_S)
        now = time.monotonic()
        infos = [i for i in self._resolver.results()
                 if now - self._dead.get(i.uid(), -1e9) > FORGET_AFTER_S]
        if not infos:
            self._stop.wait(0.05)
            return None
        info = infos[0]
        desc = StreamDescription(info.name(), info.type(), info.source_id(),
                                 info.channel_count(), info.nominal_srate(),
                                 str(info.channel_format()), info.hostname())
        if self.channels is not None and desc.channels != self.channels:
            msg = (f"stream {desc.name!r} has {desc.channels} channels; this source expects "
                   f"{self.channels} (n_channels)")
            if self.error != msg:
                self.error = msg
                log.error("%s; not connecting", msg)
                self._change("refused", reason=msg, **desc.as_dict())
            self._stop.wait(self.resolve_timeout_s)
            return None
        flags = 0
        if self.clock_sync:
            flags |= pylsl.proc_clocksync
        if self.dejitter:
            flags |= pylsl.proc_dejitter | pylsl.proc_monotonize
        inlet = pylsl.StreamInlet(info, max_buflen=max(1, int(np.ceil(self.buffer_s))),
                                  recover=False, processing_flags=flags)
        try:
            inlet.open_stream(timeout=max(self.resolve_timeout_s, 1.0))
        except Exception as exc:  # noqa: BLE001 - liblsl raises TimeoutError or LostError
            log.warning("could not open LSL stream %s: %s", desc.name, exc)
            inlet.close_stream()
            return None
        if self.clock_sync:
            # The first clock-offset estimate takes a few round trips; get it
            # now, not inside the first pull (which would hold back samples).
            try:
                inlet.time_correction(timeout=max(self.resolve_timeout_s, 2.0))
            except Exception as exc:  # noqa: BLE001 - TimeoutError/LostError
                log.warning("LSL clock correction for %s failed: %s", desc.name, exc)
                inlet.close_stream()
                return None
        self.stream = desc
        self.error = None
        self._uid = info.uid()
        return inlet

    def _run(self) -> None:
        pylsl = _pylsl()
        inlet = None
        last_data = 0.0
        flowing = False      # samples arriving on this inlet
        fresh = False        # this inlet has not delivered yet (a new connection)
        while not self._stop.is_set():
            if inlet is None:
                try:
                    inlet = self._open(pylsl)
                except Exception:
                    log.exception("resolving the LSL stream failed")
                    self._stop.wait(self.resolve_timeout_s)
                    inlet = None
                if inlet is None:
                    continue
                last_data = time.monotonic()
                flowing, fresh = False, True
            try:
                data, ts = inlet.pull_chunk(timeout=0.01, max_samples=MAX_CHUNK, as_numpy=True)
                gone = False
            except _lost_error(pylsl):
                data, ts, gone = None, [], True
            now = time.monotonic()
            silent = now - last_data
            if len(ts):
                if not flowing:
                    flowing = True
                    self.connections += fresh
                    assert self.stream is not None
                    # new_inlet: samples before it and after it are not contiguous.
                    self._change("connected", new_inlet=fresh, **self.stream.as_dict())
                    fresh = False
                self.samples += len(ts)
                with self._lock:
                    self._queue.append(("data", (np.array(data, copy=True),
                                                 np.asarray(ts, dtype=float))))
                last_data = now
                continue
            if flowing and (gone or silent > self.lost_after_s):
                # Announce the loss at once (frames have stopped); keep the
                # inlet a while: a stalled outlet that resumes loses nothing.
                flowing = False
                self._change("lost", silent_s=round(silent, 3), samples=self.samples,
                             **(self.stream.as_dict() if self.stream else {}))
            if gone or silent > max(self.reconnect_after_s, self.lost_after_s):
                try:
                    inlet.close_stream()
                except Exception:  # noqa: BLE001, S110 - already gone
                    pass
                inlet = None
                self._dead[self._uid] = now
                if fresh and self.state != "lost":
                    # Opened but never delivered (e.g. a dead stream the
                    # resolver still remembered): one event, not one per retry.
                    self._change("lost", silent_s=round(silent, 3), samples=self.samples,
                                 **(self.stream.as_dict() if self.stream else {}))
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:  # noqa: BLE001, S110
                pass
        self._resolver = None  # liblsl stops its queries when the resolver is freed


# ---------------------------------------------------------------------- the node


class LslSource(Node):
    """Neural frames from an LSL stream (registry name ``"lsl"``).

    Output ``neural`` (one frame per ``bin_s`` of stream time) and ``event``
    (kind ``stream``: ``state`` ``connected``, ``lost`` or ``refused``, with
    the stream's name, type, source_id, channels and rate; ``waiting`` once
    when no stream delivered in the first 5 s).

    Attributes
    ----------
    reader : LslReader or None
        The inlet thread (None before ``on_start``).
    frames, dropped_stale, dropped_partial : int
        Frames published; bins dropped as stale; partial bins dropped at a loss.
    recent_bin_times : deque of float
        LSL-clock end times of the last 10 000 bins published.
    """

    #: Reads the wall clock (through LSL): an inline session that contains it
    #: is paced at real time.
    wall_clock = True

    class Params(NodeParams):
        """Parameters of the LSL source."""

        stream_name: str | None = Field(None, description="Resolve a stream of this name.")
        stream_type: str | None = Field("SpikeCounts", description="Resolve a stream of this "
                                                                   "type (None: any type).")
        source_id: str | None = Field(None, description="Also require this source_id.")
        input: Literal["counts", "features"] = Field(
            "counts", description="counts: spike counts per sample, summed into bins of bin_s; "
                                  "features: one binned feature vector per sample.")
        bin_s: float = Field(0.05, gt=0, le=1.0, description="Bin width of the frames "
                                                             "published (the decoder's), s.")
        tick_s: float | None = Field(0.01, gt=0, description="Poll period, s (<= bin_s).")
        n_channels: int | None = Field(None, ge=1, le=65536,
                                       description="Required channel count (None: any).")
        lost_after_s: float = Field(0.2, gt=0, le=10.0,
                                    description="No sample for this long: the stream is lost.")
        reconnect_after_s: float = Field(
            1.0, gt=0, le=60.0, description="No sample for this long: close the inlet and "
                                            "resolve the stream again.")
        resolve_timeout_s: float = Field(0.5, gt=0, le=30.0,
                                         description="Timeout of opening a resolved stream, s.")
        clock_sync: bool = Field(True, description="Apply LSL clock correction (time_correction).")
        dejitter: bool = Field(True, description="Dejitter and monotonize timestamps.")
        max_latency_s: float = Field(0.5, gt=0, description="Drop bins older than this when "
                                                            "published (backlog), s.")
        buffer_s: float = Field(10.0, gt=0, le=600, description="Inlet buffer, s.")

        @model_validator(mode="after")
        def _check(self) -> LslSource.Params:
            if not (self.stream_name or self.stream_type or self.source_id):
                raise ValueError("give stream_name, stream_type or source_id to resolve a stream")
            for key in ("stream_name", "stream_type", "source_id"):
                value = getattr(self, key)
                if value is not None and ("'" in value or '"' in value):
                    raise ValueError(f"{key} must not contain quotes (got {value!r})")
            if self.tick_s is None or self.tick_s > self.bin_s + 1e-12:
                raise ValueError(f"tick_s ({self.tick_s}) must be set and <= bin_s ({self.bin_s})")
            return self

    inputs = ()
    outputs = ("neural", "event")

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        self.reader: LslReader | None = None
        self._binner: Rebinner | None = None
        self._waiting_since: float | None = None
        self.frames = 0
        #: LSL-clock end times of the last bins published (diagnostics, tests).
        self.recent_bin_times: deque[float] = deque(maxlen=10_000)
        self.dropped_stale = 0
        self.dropped_partial = 0

    def on_start(self) -> None:
        _pylsl()  # a clear error now if pylsl is missing
        p = self.params
        self.reader = LslReader(p.stream_name, p.stream_type, p.source_id,
                                channels=p.n_channels, lost_after_s=p.lost_after_s,
                                resolve_timeout_s=p.resolve_timeout_s, clock_sync=p.clock_sync,
                                dejitter=p.dejitter, buffer_s=p.buffer_s,
                                reconnect_after_s=p.reconnect_after_s)
        self.reader.start()

    def on_stop(self) -> None:
        if self.reader is not None:
            self.reader.stop()

    def _binner_for(self, desc: dict[str, Any]) -> Rebinner | None:
        """The re-binner for a newly connected stream, or None (refused, with a reason logged)."""
        p = self.params
        srate = float(desc.get("srate", 0.0))
        if p.input == "features":
            if srate > 0 and abs(1.0 / srate - p.bin_s) > 1e-6 * p.bin_s + 1e-9:
                self._refuse(desc, f"features stream at {srate} Hz (bin {1 / srate:g} s) but "
                                   f"bin_s is {p.bin_s} s")
                return None
            return Rebinner(1)
        if srate <= 0:
            self._refuse(desc, "counts input needs a regular-rate stream (nominal_srate > 0)")
            return None
        factor = p.bin_s * srate
        if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
            self._refuse(desc, f"bin_s {p.bin_s} s is not a whole number of samples at "
                               f"{srate} Hz ({factor:g})")
            return None
        return Rebinner(round(factor))

    def _refuse(self, desc: dict[str, Any], reason: str) -> None:
        self.log.error("LSL stream %r refused: %s", desc.get("name"), reason)
        self.emit("event", Event, kind="stream",
                  data={"node": self.name, "state": "refused", "reason": reason,
                        **_scalars(desc)})

    def on_tick(self, now_ns: int) -> None:
        if self.reader is None:
            return
        items = self.reader.take()
        if not items:
            self._warn_if_waiting()
            return
        local_now = _pylsl().local_clock()
        # LSL time → this runtime's clock (identical in real time; the
        # simulated clock inline).
        offset_ns = now_ns - round(local_now * NS_PER_S)
        for what, item in items:
            if what == "state":
                self._on_state(*item)
            elif self._binner is not None:
                self._publish_bins(*item, local_now=local_now, now_ns=now_ns,
                                   offset_ns=offset_ns)

    def _warn_if_waiting(self) -> None:
        """Say so (log + a ``waiting`` event) when no stream has been found for a while."""
        if self.reader is None or self.reader.connections:
            return
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since > WAIT_WARN_S:
            self._waiting_since = now + 1e9  # once
            what = self.reader.predicate
            self.log.warning("no LSL stream matching %s has delivered samples in %g s; is its "
                             "outlet running and reachable (same network, multicast)?", what,
                             WAIT_WARN_S)
            self.emit("event", Event, kind="stream",
                      data={"node": self.name, "state": "waiting", "query": what})

    def _on_state(self, state: str, desc: dict[str, Any]) -> None:
        if state == "connected" and (desc.get("new_inlet", True) or self._binner is None):
            # A new connection: samples before and after are not contiguous,
            # so a partial bin from before is dropped, never joined.
            if self._binner is not None:
                self.dropped_partial += self._binner.pending > 0
            self._binner = self._binner_for(desc)
            if self._binner is None:
                return
        self.emit("event", Event, kind="stream",
                  data={"node": self.name, "state": state, **_scalars(desc)})

    def _publish_bins(self, data: np.ndarray, ts: np.ndarray, *, local_now: float, now_ns: int,
                      offset_ns: int) -> None:
        assert self._binner is not None
        if data.ndim != 2 or len(data) != len(ts):
            return
        bins, t_end = self._binner.add(data, ts)
        for counts, t in zip(bins, t_end):
            if local_now - t > self.params.max_latency_s:
                self.dropped_stale += 1
                self.counters.dropped += 1
                continue
            acq_ns = min(round(t * NS_PER_S) + offset_ns, now_ns)
            h = self.header("neural")
            self.publish("neural", NeuralFrame(header=Header(h.seq, h.t_ns, h.src, h.seq, acq_ns),
                                               counts=frame_counts(counts),
                                               bin_s=self.params.bin_s))
            self.frames += 1
            self.recent_bin_times.append(float(t))


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    """Event data: scalars only (what the codec carries in ``Event.data``)."""
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool))}

"""What the monitor page shows, folded from the message stream (no bus, no web).

:class:`LiveState` takes every decoded message (:meth:`LiveState.feed`, from
the observer's pump thread) and produces a JSON-able snapshot
(:meth:`LiveState.snapshot`, from the web server) of: effector positions,
trails and e-stop latches; the task's target, phase and running metrics
(success rate, time to target); recent decoded velocity; per-channel firing
rates; frame-to-state latency; heartbeats; the event log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from bciarm.bus.messages import (
    EffectorState,
    Event,
    Heartbeat,
    Intent,
    Message,
    NeuralFrame,
    TaskState,
)

#: Seconds of decoded velocity kept for the traces.
TRACE_S = 10.0
#: Positions kept per effector trail (one every ``TRAIL_EVERY`` states).
TRAIL_LEN, TRAIL_EVERY = 400, 3
#: Firing-rate smoothing: exponential moving average time constant (s).
RATE_TAU_S = 0.5
EVENT_LOG = 200


class LiveState:
    """Thread-safe running summary of a session's messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.effectors: dict[str, dict[str, Any]] = {}
        self.task: dict[str, Any] = {}
        self.trace: deque[tuple[float, list[float]]] = deque()
        self.rates: np.ndarray | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENT_LOG)
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.latency_ms: deque[float] = deque(maxlen=500)
        self.trials: dict[tuple[str, int], dict[str, Any]] = {}
        self.outcomes: list[dict[str, Any]] = []
        self.counts = {"messages": 0, "neural": 0, "intent": 0, "state": 0}
        self.t_s = 0.0
        self._t0_ns: int | None = None
        self.block: str = ""

    # ------------------------------------------------------------------ input

    def _t(self, t_ns: int) -> float:
        if self._t0_ns is None:
            self._t0_ns = t_ns
        return (t_ns - self._t0_ns) / 1e9

    def feed(self, topic: str, msg: Message) -> None:
        """Fold one message into the summary."""
        with self._lock:
            self.counts["messages"] += 1
            t = self._t(msg.header.t_ns)
            self.t_s = max(self.t_s, t)
            if isinstance(msg, EffectorState):
                self._state(topic.removeprefix("state."), t, msg)
            elif isinstance(msg, TaskState):
                self._task(t, msg)
            elif isinstance(msg, Intent):
                self.counts["intent"] += 1
                self.trace.append((t, [float(v) for v in msg.velocity]))
                while self.trace and self.trace[0][0] < t - TRACE_S:
                    self.trace.popleft()
            elif isinstance(msg, NeuralFrame):
                self.counts["neural"] += 1
                r = np.asarray(msg.counts, dtype=float) / max(msg.bin_s, 1e-6)
                a = min(1.0, msg.bin_s / RATE_TAU_S)
                if self.rates is None or self.rates.shape != r.shape:
                    self.rates = r
                else:
                    self.rates = (1 - a) * self.rates + a * r
            elif isinstance(msg, Event):
                if msg.kind != "hello":
                    self.events.append({"t_s": round(t, 3), "kind": msg.kind,
                                        "src": msg.header.src,
                                        "data": {k: v for k, v in msg.data.items()}})
                if msg.kind == "block_start":
                    self.block = str(msg.data.get("block", ""))
            elif isinstance(msg, Heartbeat):
                self.heartbeats[msg.node] = {
                    "state": msg.state, "t_s": t, "counters": dict(msg.counters),
                    "latency_p50_us": msg.latency_p50_us, "latency_p99_us": msg.latency_p99_us}

    def _state(self, name: str, t: float, msg: EffectorState) -> None:
        self.counts["state"] += 1
        e = self.effectors.setdefault(name, {"trail": deque(maxlen=TRAIL_LEN), "n": 0})
        e["n"] += 1
        pos = [round(float(v), 4) for v in msg.position]  # 0.1 mm: the page needs no more
        e.update(t_s=t, position=pos, speed=float(np.linalg.norm(msg.velocity)),
                 estopped=bool(msg.estopped), guards=list(msg.guards))
        if e["n"] % TRAIL_EVERY == 0:
            e["trail"].append(pos)
        # Latency of the first state that applied a frame's intent (later ticks carry the
        # same provenance while the intent is fresh: that would be its age, not latency).
        if msg.header.neural_t_ns >= 0 and msg.header.neural_seq != e.get("neural_seq"):
            e["neural_seq"] = msg.header.neural_seq
            self.latency_ms.append((msg.header.t_ns - msg.header.neural_t_ns) / 1e6)

    def _task(self, t: float, msg: TaskState) -> None:
        self.task = {"block": msg.block, "trial": msg.trial, "phase": msg.phase,
                     "mode": msg.mode, "target": [float(v) for v in msg.target],
                     "radius": float(msg.target_radius)}
        key = (msg.block, msg.trial)
        tr = self.trials.get(key)
        if tr is None and msg.phase == "reach":
            tr = self.trials[key] = {"start": t, "hold": None, "done": False}
        if tr is None or tr["done"]:
            return
        if msg.phase == "hold" and tr["hold"] is None:
            tr["hold"] = t
        elif msg.phase == "reach":
            tr["hold"] = None  # a broken hold: the last entry counts
        if msg.outcome:
            tr["done"] = True
            ttt = (tr["hold"] - tr["start"]) if (msg.outcome == "success" and tr["hold"]) else None
            self.outcomes.append({"block": msg.block, "mode": msg.mode, "outcome": msg.outcome,
                                  "ttt": ttt})

    # ------------------------------------------------------------------ output

    def metrics(self) -> dict[str, Any]:
        """Success rate and mean time to target, this block and all closed-loop trials."""
        def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
            ok = [r for r in rows if r["outcome"] == "success"]
            ttt = [r["ttt"] for r in ok if r["ttt"] is not None]
            return {"trials": len(rows), "success_rate": len(ok) / len(rows) if rows else None,
                    "mean_time_to_target_s": float(np.mean(ttt)) if ttt else None}

        return {"block": summary([r for r in self.outcomes if r["block"] == self.block]),
                "closed_loop": summary([r for r in self.outcomes if r["mode"] == "closed_loop"])}

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the session now."""
        with self._lock:
            lat = np.asarray(self.latency_ms)
            rates = self.rates
            return {
                "t_s": round(self.t_s, 3),
                "wall": time.time(),
                "counts": dict(self.counts),
                "block": self.block,
                "effectors": {k: {kk: (list(vv) if kk == "trail" else vv) for kk, vv in v.items()}
                              for k, v in self.effectors.items()},
                "task": dict(self.task),
                "trace": [[round(t, 3), v] for t, v in self.trace],
                "rates": [] if rates is None else [round(float(r), 1) for r in rates],
                "latency_ms": ({"p50": float(np.percentile(lat, 50)),
                                "p99": float(np.percentile(lat, 99))} if len(lat) else None),
                "metrics": self.metrics(),
                "events": list(self.events)[-60:],
                "heartbeats": dict(self.heartbeats),
            }

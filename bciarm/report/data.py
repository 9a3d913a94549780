"""Everything a report needs, read back from a session folder.

One pass over ``messages.bcilog`` collects the effector states, task
messages, events, intents (with their provenance headers) and neural frames;
``metrics.json``, ``trials.csv``, ``session.json``, ``config.yaml`` and, for a
plan run, ``plan.json`` are read as written.  Nothing here draws.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bciarm.bus.messages import EffectorState, Event, Intent, NeuralFrame, TaskState
from bciarm.record import LOG_NAME, LogReader

#: Event kinds shown as safety events.
SAFETY_KINDS = ("estop", "resume", "fault", "collision")
#: Effector guards that are routine (not safety interventions) and left out of the counts.
ROUTINE_GUARDS = ("idle",)


@dataclass
class Block:
    """A block as the recording shows it (``block_start`` … ``block_end``)."""

    name: str
    mode: str
    start_s: float
    end_s: float
    kind: str = "closed_loop"
    trials: int = 0


@dataclass
class SessionData:
    """A finished session folder, decoded."""

    path: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    trials: list[dict[str, Any]]
    plan: dict[str, Any] | None
    blocks: list[Block]
    #: effector name -> (t_s, position (n, 3), velocity (n, 3), estopped (n,), guards list)
    states: dict[str, dict[str, Any]]
    #: (t_s, target (3,), radius, phase, block) per task message
    task: dict[str, Any]
    events: list[dict[str, Any]]
    #: intents: t_s, velocity, neural_seq, latency_ms (frame acquisition -> intent)
    intents: dict[str, np.ndarray]
    #: neural frames: t_s (acquisition), seq, counts (n, channels), bin_s
    neural: dict[str, Any]
    #: frame acquisition -> the first effector state driven by that frame's intent, ms
    state_latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    guard_counts: Counter = field(default_factory=Counter)
    log_truncated: bool = False

    @property
    def axes(self) -> list[str]:
        return list(self.config.get("axes", ["x", "y"]))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _read_trials(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            r: dict[str, Any] = dict(row)
            for k in ("start_t_s", "end_t_s", "time_to_target_s", "path_length_m",
                      "straight_m", "distance_m", "target_radius"):
                if k in r:
                    try:
                        r[k] = float(r[k])
                    except (TypeError, ValueError):
                        r[k] = float("nan")
            out.append(r)
    return out


def load_session(path: str | Path) -> SessionData:
    """Read a session folder for a report.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a session folder (no ``messages.bcilog``).
    """
    path = Path(path)
    log_path = path / LOG_NAME
    if not log_path.is_file():
        raise FileNotFoundError(f"{path}: not a session folder (no {LOG_NAME})")
    config_path = path / "config.yaml"
    config = (yaml.safe_load(config_path.read_text(encoding="utf-8"))
              if config_path.is_file() else {})
    states: dict[str, dict[str, list]] = {}
    task: dict[str, list] = {"t_s": [], "target": [], "radius": [], "phase": [], "block": []}
    events: list[dict[str, Any]] = []
    intents: dict[str, list] = {"t_s": [], "velocity": [], "neural_seq": [], "latency_ms": []}
    neural: dict[str, list] = {"t_s": [], "seq": [], "counts": []}
    bin_s = None
    state_lat: list[float] = []
    seen_seq: set[int] = set()
    guards: Counter = Counter()
    reader = LogReader(log_path)
    for rec in reader:
        try:
            msg = rec.decode()
        except Exception:  # noqa: BLE001 - the recorder keeps only valid frames; be lenient
            continue
        h = msg.header
        if isinstance(msg, EffectorState):
            s = states.setdefault(rec.topic.removeprefix("state."),
                                  {"t_s": [], "position": [], "velocity": [], "estopped": []})
            s["t_s"].append(h.t_ns / 1e9)
            s["position"].append(msg.position)
            s["velocity"].append(msg.velocity)
            s["estopped"].append(msg.estopped)
            guards.update(g for g in msg.guards if g not in ROUTINE_GUARDS)
            # The first state that applied each intent: later ticks carry the same
            # provenance while the intent is fresh, which would count its age, not latency.
            if h.neural_t_ns >= 0 and h.neural_seq not in seen_seq:
                seen_seq.add(h.neural_seq)
                state_lat.append((h.t_ns - h.neural_t_ns) / 1e6)
        elif isinstance(msg, TaskState):
            task["t_s"].append(h.t_ns / 1e9)
            task["target"].append(msg.target)
            task["radius"].append(msg.target_radius)
            task["phase"].append(msg.phase)
            task["block"].append(msg.block)
        elif isinstance(msg, Event):
            events.append({"t_s": h.t_ns / 1e9, "kind": msg.kind, "src": h.src,
                           "data": dict(msg.data)})
        elif isinstance(msg, Intent):
            intents["t_s"].append(h.t_ns / 1e9)
            intents["velocity"].append(msg.velocity)
            intents["neural_seq"].append(h.neural_seq)
            intents["latency_ms"].append((h.t_ns - h.neural_t_ns) / 1e6
                                         if h.neural_t_ns >= 0 else np.nan)
        elif isinstance(msg, NeuralFrame):
            neural["t_s"].append(h.neural_t_ns / 1e9 if h.neural_t_ns >= 0 else h.t_ns / 1e9)
            neural["seq"].append(h.seq)
            neural["counts"].append(np.asarray(msg.counts, dtype=np.float32))
            bin_s = msg.bin_s
    trials = _read_trials(path / "trials.csv")
    blocks = _blocks(events, trials)
    return SessionData(
        path=path, meta=_read_json(path / "session.json"), config=config or {},
        metrics=_read_json(path / "metrics.json"), trials=trials,
        plan=_read_json(path / "plan.json") or None, blocks=blocks,
        states={k: {"t_s": np.asarray(v["t_s"]), "position": np.asarray(v["position"]),
                    "velocity": np.asarray(v["velocity"]), "estopped": np.asarray(v["estopped"])}
                for k, v in states.items()},
        task={"t_s": np.asarray(task["t_s"]), "target": np.asarray(task["target"]),
              "radius": np.asarray(task["radius"]), "phase": task["phase"], "block": task["block"]},
        events=events,
        intents={"t_s": np.asarray(intents["t_s"]), "velocity": np.asarray(intents["velocity"]),
                 "neural_seq": np.asarray(intents["neural_seq"], dtype=np.int64),
                 "latency_ms": np.asarray(intents["latency_ms"], dtype=float)},
        neural={"t_s": np.asarray(neural["t_s"]), "seq": np.asarray(neural["seq"], dtype=np.int64),
                "counts": (np.vstack(neural["counts"]) if neural["counts"]
                           and len({c.shape for c in neural["counts"]}) == 1 else np.zeros((0, 0))),
                "bin_s": bin_s},
        state_latency_ms=np.asarray(state_lat), guard_counts=guards,
        log_truncated=reader.truncated)


def _blocks(events: list[dict[str, Any]], trials: list[dict[str, Any]]) -> list[Block]:
    """Blocks from the recorded ``block_start``/``block_end`` events."""
    out: list[Block] = []
    open_: dict[str, Block] = {}
    for e in events:
        d = e["data"]
        if e["kind"] == "block_start" and "block" in d:
            b = Block(str(d["block"]), str(d.get("mode", "")), e["t_s"], e["t_s"],
                      kind=str(d.get("adapt", "closed_loop")))
            open_[b.name] = b
            out.append(b)
        elif e["kind"] == "block_end" and d.get("block") in open_:
            open_.pop(str(d["block"])).end_s = e["t_s"]
    last_t = max((e["t_s"] for e in events), default=0.0)
    for b in open_.values():  # a block the session never closed (stopped, crashed)
        b.end_s = last_t
    for b in out:
        b.trials = sum(1 for t in trials if t.get("block") == b.name)
    return out

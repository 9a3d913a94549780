"""Helpers for real-time runtime tests: short graphs, in-process sessions, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bciarm.config import load_config
from bciarm.record import LOG_NAME, LogReader

TICK_S = 0.01


def graph(tmp_path: Path, *, groups: dict[str, str] | None = None, cal_trials: int = 5,
          closed_trials: int = 50, hb_s: float = 0.1, extra: dict | None = None) -> Path:
    nodes: dict[str, Any] = {
        "source": {"kind": "source", "type": "simulated",
                   "params": {"n_channels": 48, "bin_s": 0.05, "feedback_delay_s": 0.15}},
        "decoder": {"kind": "decoder", "type": "kalman",
                    "params": {"transform": "none", "estimator": {"mode": "steady"}}},
        # The default arm (stop_within_s 0.1: at rest within 100 ms of the last valid intent).
        "arm": {"kind": "effector", "type": "arm",
                "params": {"driver": "pybullet_arm", "driver_params": {"scene": "arm_table"}}},
        "task": {"kind": "task", "type": "center_out", "params": {}},
    }
    for name, g in (groups or {}).items():
        nodes[name]["group"] = g
    data = {"name": "rt_test", "seed": 2, "tick_s": TICK_S, "axes": ["x", "y"], "nodes": nodes,
            "protocol": {"calibration": {"trials": cal_trials, "lag_s": 0.15},
                         "blocks": [{"name": "closed_loop_1", "trials": closed_trials}]},
            "record": {"enabled": True, "flush_every": 256},
            "realtime": {"heartbeat_s": hb_s}}
    data.update(extra or {})
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def counter(sup: Any, group: str, node: str, key: str) -> int:
    return int(sup.procs[group].info.get(node, {}).get("counters", {}).get(key, 0))


def in_closed_loop(sup: Any) -> bool:
    return sup.sticky.get("block_start", {}).get("mode") == "closed_loop"


class Actor:
    """Runs ``fn(sup)`` in a thread once every node runs; keeps its exception."""

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.fn = fn
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.sup: Any = None

    def __call__(self, sup: Any) -> None:
        self.sup = sup

        def body() -> None:
            try:
                self.fn(sup)
            except BaseException as exc:  # noqa: BLE001 - reported by check()
                self.error = exc
                sup.stop_requested = True
            finally:
                self.done.set()

        threading.Thread(target=body, daemon=True).start()

    def check(self) -> None:
        assert self.done.is_set(), "the fault-injection thread did not finish"
        if self.error is not None:
            raise self.error


def run_realtime(cfg_path: Path, out: Path, actor: Actor | None, duration_s: float | None = None):
    from bciarm.realtime_session import RealtimeSession

    cfg, _ = load_config(cfg_path)
    session = RealtimeSession(cfg, out_dir=out, duration_s=duration_s, on_started=actor)
    try:
        return session.run()
    finally:
        if session.sup is not None:
            session.sup.kill_all()


def records(session_dir: Path) -> list[tuple[str, Any]]:
    reader = LogReader(session_dir / LOG_NAME)
    out = [(r.topic, r.decode()) for r in reader]
    assert not reader.truncated, "the log does not read back cleanly"
    return out


def speed(msg: Any) -> float:
    return float(np.linalg.norm(msg.velocity))


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setenv("BCIARM_RUNTIME_DIR", str(d))
    return d


@pytest.fixture
def spawn():
    """Start subprocesses in their own process group; kill every group at the end."""
    procs: list[subprocess.Popen] = []

    def start(args: list[str], **kw: Any) -> subprocess.Popen:
        p = subprocess.Popen(args, start_new_session=True, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(10)

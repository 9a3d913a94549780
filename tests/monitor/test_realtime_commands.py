"""The operator commands the console added to the real-time runtime: `pause` holds the session
at the next block boundary until `start`; `assist` and `gain` are published (recorded)
events; out-of-range settings are refused.  Through the CLI, as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bciarm.bus.messages import Event
from tests.realtime.conftest import graph, records, runtime_dir, spawn, wait_for  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
CLI = [sys.executable, "-m", "bciarm.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30)


def test_pause_start_assist_gain(tmp_path, runtime_dir, spawn):  # noqa: F811
    # Calibration long enough (~15 s) for the `pause` CLI to land in it on a loaded machine
    # (at load 26 one `bciarm` command took 5 s to start; 4 trials were over in 6.5 s).
    cfg = graph(tmp_path, cal_trials=10, closed_trials=3)
    proc = spawn([*CLI, "run", str(cfg), "--mode", "realtime", "--out", str(tmp_path / "s")],
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    current = runtime_dir / "current.json"

    def running() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        return current.exists() and json.loads(current.read_text()).get("state") == "running"

    wait_for(running, 90, "the session to run")
    assert _cli("pause").returncode == 0

    def status() -> dict:
        out = _cli("status", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    # calibration runs to its end, then the session waits: no block running, still held
    wait_for(lambda: (lambda s: s["held"] and s["block"] is None)(status()), 120,
             "the hold after calibration")
    assert _cli("gain", "1.5").returncode == 0
    assert _cli("assist", "0.3").returncode == 0
    bad = _cli("gain", "9")
    assert bad.returncode != 0 and "0<=x<=3" in bad.stderr.replace(" ", "")
    assert status()["block"] is None  # still holding
    assert _cli("start-block").returncode == 0
    wait_for(lambda: status()["block"] == "closed_loop_1", 30, "the next block to start")
    proc.wait(120)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    session_dir = next((tmp_path / "s").iterdir())
    events = [m for _, m in records(session_dir) if isinstance(m, Event)]
    seq = [(e.kind, e.data.get("action") or e.data.get("block") or e.data.get("gain")
            or e.data.get("level")) for e in events
           if e.kind in ("operator", "gain", "assist", "block_start", "block_end")]
    assert seq == [("block_start", "calibration"), ("operator", "pause"),
                   ("block_end", "calibration"), ("gain", 1.5), ("assist", 0.3),
                   ("operator", "start"), ("block_start", "closed_loop_1"),
                   ("block_end", "closed_loop_1")], seq

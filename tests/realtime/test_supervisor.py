"""Supervisor decisions without processes: crash-loop guard."""

from __future__ import annotations

import pytest

from bciarm.bus import supervisor as supmod
from bciarm.bus.supervisor import MAX_RESTARTS, Supervisor
from bciarm.config import load_config

from .conftest import graph


@pytest.fixture
def sup(tmp_path, runtime_dir, monkeypatch):
    cfg, _ = load_config(graph(tmp_path))
    s = Supervisor(cfg, tmp_path)
    spawned, events = [], []
    monkeypatch.setattr(s, "spawn", lambda p: spawned.append(p.group))
    monkeypatch.setattr(s, "announce", lambda kind, **data: events.append((kind, data)))
    monkeypatch.setattr(s, "send_ctl", lambda p, **m: True)
    s._spawned, s._events = spawned, events
    yield s
    s.ctx.destroy(linger=0)


def test_crash_loop_gives_up_estops_and_stops(sup):
    p = sup.procs["decoder"]
    for k in range(MAX_RESTARTS):
        sup.restart(p, "exited (-9)")
    assert sup._spawned == ["decoder"] * MAX_RESTARTS
    assert not sup.stop_requested and not sup.estopped
    sup.restart(p, "exited (-9)")  # one too many within the window
    assert sup._spawned == ["decoder"] * MAX_RESTARTS  # not started again
    assert p.state == "FAILED" and p.stopping
    assert sup.estopped and sup.stop_requested
    kinds = [(k, d.get("action")) for k, d in sup._events]
    assert ("fault", "gave_up") in kinds and ("estop", None) in kinds


def test_restarts_spread_over_time_are_not_a_loop(sup, monkeypatch):
    p = sup.procs["source"]
    t = [0]
    monkeypatch.setattr(supmod.time, "monotonic_ns", lambda: t[0])
    for k in range(3 * MAX_RESTARTS):
        t[0] += int(supmod.RESTART_WINDOW_S * 1e9 / MAX_RESTARTS) + 1
        sup.restart(p, "hung")
    assert len(sup._spawned) == 3 * MAX_RESTARTS and not sup.stop_requested

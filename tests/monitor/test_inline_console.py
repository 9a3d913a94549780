"""The console on an inline session: token, commands through the protocol's control path,
block holds and confirmations, all on the record."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from bciarm.bus.messages import EffectorState, Event
from bciarm.bus.realtime import STILL_M_S, free_port
from bciarm.config import load_config
from bciarm.monitor.app import Monitor, serve
from bciarm.monitor.inline import ConsoleSession, InlineObserver
from tests.realtime.conftest import graph, records, speed, wait_for

pytestmark = pytest.mark.timeout(180)


def _req(url, body=None, **headers):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                          **headers},
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def console(tmp_path):
    cfg_path = graph(tmp_path, cal_trials=3, extra={"protocol": {
        "calibration": {"trials": 3, "lag_s": 0.15},
        "blocks": [{"name": "b1", "trials": 50, "max_duration_s": 2.0},
                   {"name": "b2", "trials": 50, "max_duration_s": 3.0}]}})
    cfg, _ = load_config(cfg_path)
    sess = ConsoleSession(cfg, out_dir=tmp_path / "s", confirm_blocks=True)
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("r", sess.run()), daemon=True)
    runner.start()
    mon = Monitor(InlineObserver(sess), token="secret-token")
    mon.start()
    port = free_port()
    server = serve(mon, port=port)
    srv = threading.Thread(target=server.run, daemon=True)
    srv.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ok(f"{base}/api/state?token=secret-token"), 30, "the monitor to serve")
    yield sess, base, result, runner
    sess.ended.set()
    server.should_exit = True
    srv.join(10)
    mon.close()
    runner.join(60)


def _ok(url):
    try:
        return _req(url)[0] == 200
    except OSError:
        return False


def _state(base):
    return _req(f"{base}/api/state?token=secret-token")[1]


def test_console_commands_holds_and_record(console):
    sess, base, result, runner = console
    tok = "?token=secret-token"
    for path in ("/", "/api/state", "/api/stream"):
        assert _req(base + path)[0] == 401
        assert _req(base + path + "?token=nope")[0] == 401
    assert _req(f"{base}/api/command", {"cmd": "estop"})[0] == 401
    assert _req(f"{base}/api/command{tok}", {"cmd": "gain", "gain": 7})[0] == 409
    assert _req(f"{base}/api/command{tok}", {"nope": 1})[0] == 400

    def waiting(block):
        return lambda: _state(base)["health"].get("waiting_for") == block

    wait_for(waiting("calibration"), 30, "the hold before calibration")
    assert _state(base)["counts"]["state"] == 0  # nothing runs before the operator's start
    assert _req(f"{base}/api/command{tok}", {"cmd": "start"})[1]["ok"]
    wait_for(waiting("b1"), 60, "the hold before b1")
    snap = _state(base)
    assert snap["counts"]["state"] > 0 and snap["counts"]["neural"] > 0
    assert snap["effectors"]["arm"]["position"] and len(snap["rates"]) == 48
    assert snap["metrics"]["block"]["trials"] == 3  # calibration trials seen live
    for body in ({"cmd": "gain", "gain": 1.5}, {"cmd": "assist", "level": 0.2},
                 {"cmd": "estop"}, {"cmd": "start"}):
        code, reply = _req(f"{base}/api/command{tok}", body)
        assert code == 200 and reply["ok"], reply
    wait_for(waiting("b2"), 60, "the hold before b2")
    assert _state(base)["health"]["estopped"] is True
    for body in ({"cmd": "resume"}, {"cmd": "start"}):
        assert _req(f"{base}/api/command{tok}", body)[1]["ok"]
    runner.join(120)
    assert not runner.is_alive()
    r = result["r"]
    recs = records(r.session_dir)
    events = [m for _, m in recs if isinstance(m, Event)]
    ops = [(e.data["action"], e.data["by"]) for e in events if e.kind == "operator"]
    assert ops == [("start", "monitor"), ("gain", "monitor"), ("assist", "monitor"),
                   ("estop", "monitor"), ("start", "monitor"), ("resume", "monitor"),
                   ("start", "monitor")]
    kinds = [e.kind for e in events]
    assert {"gain", "assist", "estop", "resume"} <= set(kinds)
    t_estop = next(e.header.t_ns for e in events if e.kind == "estop")
    t_resume = next(e.header.t_ns for e in events if e.kind == "resume")
    states = [m for _, m in recs if isinstance(m, EffectorState)]
    # (commands apply between ticks: a state stamped with the same clock reading came first)
    held = [m for m in states if t_estop < m.header.t_ns < t_resume]
    # The e-stop (applied between two ticks) latches the very next tick, for all of b1.
    assert held and all(m.estopped for m in held)
    assert max(speed(m) for m in held[5:]) < STILL_M_S
    after = [m for m in states if m.header.t_ns > t_resume]
    assert not any(m.estopped for m in after) and max(speed(m) for m in after) > 0.02
    actions = [(a["action"], a["block"]) for a in sess.actions]
    assert ("estop", "b1") in actions and ("resume", "b2") in actions
    assert _req(f"{base}/api/command{tok}", {"cmd": "estop"})[0] == 409  # ended: refused
    assert np.isfinite(r.metrics["simulated_s"])
    # The report of this session lists the e-stop and every operator action.
    from bciarm.report import build_report

    html = build_report(r.session_dir).read_text()
    assert html.count("<td>estop</td>") == 1 and html.count("<td>resume</td>") == 1
    assert html.count("<td>operator</td>") == len(ops) and "<td>gain</td>" in html

    # `bciarm monitor --replay`: the recording plays back to the same summary; read-only.
    from bciarm.monitor.live import LiveState
    from bciarm.monitor.observer import CommandError, ReplayObserver

    obs, live = ReplayObserver(r.session_dir, speed=1000.0), LiveState()
    obs.pump(live.feed, threading.Event())
    assert obs.ended()
    snap = live.snapshot()
    assert snap["counts"]["state"] == len(states)
    assert [e["kind"] for e in snap["events"] if e["kind"] in ("estop", "resume")] == [
        "estop", "resume"]
    with pytest.raises(CommandError, match="replay"):
        obs.command("estop")

"""End to end: `bciarm monitor` attached to a real-time session, driven in headless Chromium.

The page loads against the running session, its live values update, clicking
E-STOP latches every effector stopped (measured from the recorded state
stream), Resume clears it and motion comes back, the Space bar e-stops too, and
requests without the session token are refused.

Needs Debian's chromium (``.ci/run`` installs it) and the ``playwright``
Python package (test extra); Playwright drives /usr/bin/chromium, nothing is
downloaded.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from bciarm.bus.messages import EffectorState, Event
from bciarm.bus.realtime import STILL_M_S, free_port
from tests.realtime.conftest import TICK_S, graph, records, runtime_dir, spawn, speed, wait_for  # noqa: F401

# ~45 s on a quiet machine; the timeout only guards against a hang (at load 30 on 2 cores a
# run took 3.5 min).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
CLI = [sys.executable, "-m", "bciarm.cli"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Headless and light: one renderer process, no GPU process work, no extensions or
#: background services competing for the 2 cores the session and the e-stop path use.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
                 "--renderer-process-limit=1", "--disable-default-apps",
                 "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
                 "--mute-audio", "--no-default-browser-check"]
#: E-STOP press → every effector latched and at rest, from the recorded state stream:
#: the bound for EVERY press.
STOP_BOUND_MS = 100.0
#: E-STOP presses measured (click and Space bar alternately), each followed by Resume.
PRESSES = 5
#: Presses allowed in all: a press while the supervisor restarts a stalled process is
#: excluded from the measurement (the recording misses the restarting process's messages)
#: and one more is made.
MAX_PRESSES = 8


def _chromium_or_skip() -> None:
    if not os.path.exists(CHROMIUM):
        msg = "chromium is not installed (CI installs it: apt-get install -y chromium)"
        print(f"SKIP: {msg}")
        pytest.skip(msg)
    pytest.importorskip("playwright.sync_api", reason="playwright (test extra) not installed")


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _status(env: dict) -> dict:
    out = subprocess.run([*CLI, "status", "--json"], capture_output=True, text=True, timeout=30,
                         env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _press_ns(page, cmd: str) -> int:
    """When the page saw the press (its handler's clock), on this machine's monotonic clock
    (the clock of the recorded headers)."""
    page.wait_for_function("window.lastCommand && window.lastCommand.ack_ms !== null",
                           timeout=5000)
    last = page.evaluate("window.lastCommand")
    assert last["cmd"] == cmd and last["ok"], last
    assert last["via"] == "ws", last  # the open WebSocket, not a new HTTP request
    offset = time.time_ns() - time.monotonic_ns()  # wall → monotonic, same machine
    t = round(last["pressed_ms"] * 1e6) - offset
    r = last["reply"]
    print(f"{cmd}: press → monitor {(r['t_recv_ns'] - t) / 1e6:.1f} ms, monitor handled it in "
          f"{(r['t_reply_ns'] - r['t_recv_ns']) / 1e6:.1f} ms, page saw the reply after "
          f"{last['ack_ms']:.1f} ms")
    return t, r["t_recv_ns"]


def _ws_refused(url: str) -> bool:
    """True if the WebSocket handshake at ``url`` is refused (403)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, open_timeout=5):
            return False
    except InvalidStatus as exc:
        return exc.response.status_code == 403


def test_monitor_in_chromium(tmp_path, runtime_dir, spawn):  # noqa: F811
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    env = dict(os.environ, BCIARM_MONITOR_TOKEN="t0ken-" + os.urandom(6).hex())
    token = env["BCIARM_MONITOR_TOKEN"]
    cfg = graph(tmp_path, cal_trials=60)
    session = spawn([*CLI, "run", str(cfg), "--mode", "realtime", "--out", str(tmp_path / "s")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    current = runtime_dir / "current.json"

    def running() -> bool:
        assert session.poll() is None, session.stderr.read()
        return current.exists() and json.loads(current.read_text()).get("state") == "running"

    wait_for(running, 90, "the real-time session to run")
    port = free_port()
    mon = spawn([*CLI, "monitor", "--port", str(port)], stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        assert mon.poll() is None, mon.stderr.read()
        try:
            return _get(f"{base}/api/state?token={token}")[0] == 200
        except OSError:
            return False

    wait_for(serving, 30, "the monitor to serve")

    # Without the token (or with a wrong one) every route is refused, commands included.
    assert _get(f"{base}/")[0] == 401
    assert _get(f"{base}/api/state")[0] == 401
    assert _get(f"{base}/api/state?token=wrong")[0] == 401
    assert _get(f"{base}/api/stream", **{"X-Bciarm-Token": "wrong"})[0] == 401
    assert _post(f"{base}/api/command", {"cmd": "estop"}) == 401
    ws_base = base.replace("http://", "ws://")
    assert _ws_refused(f"{ws_base}/api/ws")  # the command WebSocket too
    assert _ws_refused(f"{ws_base}/api/ws?token=wrong")
    assert _status(env)["estopped"] is False  # the refused command did nothing
    assert _post(f"{base}/api/command?token={token}", {"cmd": "gain", "gain": 99}) == 409

    figures = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.goto(f"{base}/?token={token}")
            # live values: the message count and session time keep changing
            page.wait_for_function("+document.getElementById('n-msgs').textContent > 0",
                                   timeout=15000)
            n0 = int(page.text_content("#n-msgs"))
            t0 = page.text_content("#t-session")
            page.wait_for_function(f"+document.getElementById('n-msgs').textContent > {n0 + 50}",
                                   timeout=15000)
            assert page.text_content("#t-session") != t0
            assert "RUNNING" in page.text_content("#health")  # node health from the supervisor
            assert page.text_content("#banner") == "running"

            def arm_speed() -> float:
                s = json.loads(_get(f"{base}/api/state?token={token}")[1])
                return s["effectors"].get("arm", {}).get("speed", 0.0)

            presses = []  # (press, monitor received it), monotonic ns
            faults_seen = 0
            while len(presses) - faults_seen < PRESSES and len(presses) < MAX_PRESSES:
                wait_for(lambda: arm_speed() > 0.05, 30, "the arm moving (open loop)")
                if len(presses) % 2 == 0:
                    page.click("#estop")
                else:
                    page.keyboard.press("Space")  # the Space bar is an E-STOP too
                page.wait_for_function(
                    "document.getElementById('banner').textContent === 'E-STOP LATCHED'",
                    timeout=5000)
                presses.append(_press_ns(page, "estop"))
                assert _status(env)["estopped"] is True
                page.click("#resume")
                page.wait_for_function(
                    "document.getElementById('banner').textContent === 'running'", timeout=5000)
                status = _status(env)
                assert status["estopped"] is False
                faults_seen = len([f for f in status.get("faults", [])
                                   if f.get("action") == "detected"])
        finally:
            browser.close()

    assert subprocess.run([*CLI, "stop"], env=env, capture_output=True, timeout=30).returncode == 0
    session.wait(60)
    assert session.returncode == 0
    mon.terminate()
    session_dir = next((tmp_path / "s").iterdir())
    recs = records(session_dir)
    estops = [m for _, m in recs if isinstance(m, Event) and m.kind == "estop"]
    resumes = [m for _, m in recs if isinstance(m, Event) and m.kind == "resume"]
    operator = [m for _, m in recs if isinstance(m, Event) and m.kind == "operator"]
    assert len(estops) == len(resumes) == len(presses), (len(estops), len(resumes))
    assert not operator  # gain 99 was refused before reaching the session
    effectors = {t for t, m in recs if isinstance(m, EffectorState)}
    assert effectors == {"state.arm"}
    by_topic = {topic: sorted((m for t, m in recs if t == topic), key=lambda m: m.header.t_ns)
                for topic in effectors}
    stamps = {topic: [m.header.t_ns for m in ms] for topic, ms in by_topic.items()}

    def window(topic: str, t0: int, t1: int | None = None) -> list[EffectorState]:
        """``topic``'s states stamped in [t0, t1)."""
        ts = stamps[topic]
        return by_topic[topic][bisect.bisect_left(ts, t0):
                               len(ts) if t1 is None else bisect.bisect_left(ts, t1)]

    faults = json.loads((session_dir / "faults.json").read_text())
    clean = []
    for (t_press, t_recv), ev, res in zip(presses, estops, resumes, strict=True):
        assert ev.header.t_ns > t_press
        # On this shared machine a node process can stall and be restarted by the supervisor
        # (a recorded fault). An e-stop pressed then is still honoured -- the restarted
        # effector comes up latched (checked below) -- but the recording misses what the
        # restarting process published, so it does not measure the console.
        faulted = [f for f in faults if t_press - 1e9 <= f["t_ns"] <= res.header.t_ns]
        for topic in effectors:
            # From the press: the e-stop line reaches the effector before the supervisor's
            # recorded `estop` event may be published.
            states = window(topic, t_press, res.header.t_ns)
            latched = next(m for m in states if m.estopped)
            at_rest = next(m for m in states if m.estopped and speed(m) < STILL_M_S)
            # once latched, latched (and still) until the resume
            after = [m for m in states if m.header.t_ns >= latched.header.t_ns]
            assert all(m.estopped for m in after)
            assert max(speed(m) for m in after if m.header.t_ns >= at_rest.header.t_ns) \
                < 2 * STILL_M_S
            if faulted:
                # A stalled process may publish a tick stamped after the e-stop event before
                # it reads the e-stop; what must hold: it ends latched, and an incarnation
                # started meanwhile (its sequence numbers start again) comes up latched.
                assert states[-1].estopped
                restarted = [i for i in range(1, len(states))
                             if states[i].header.seq < states[i - 1].header.seq]
                assert all(m.estopped for i in restarted for m in states[i:]), \
                    "an effector restarted during the e-stop came up unlatched"
                print(f"e-stop during a process restart (excluded from the bound): {faulted}")
                continue
            clean.append((at_rest.header.t_ns - t_press) / 1e6)
            for key, value in (("press_to_monitor_ms", t_recv - t_press),
                               ("monitor_to_latched_ms", latched.header.t_ns - t_recv),
                               ("latched_to_rest_ms", at_rest.header.t_ns - latched.header.t_ns),
                               ("press_to_stopped_ms", at_rest.header.t_ns - t_press)):
                figures.setdefault(key, []).append(value / 1e6)
        # resume works: motion again after the resume, unlatched
        later = [m for topic in effectors for m in window(topic, res.header.t_ns + 1)]
        assert any(not m.estopped and speed(m) > 0.02 for m in later)
    print("monitor e-stop (click, Space alternately): " + ", ".join(
        f"{k} {np.round(v, 1).tolist()}" for k, v in figures.items()))
    # EVERY press → every effector latched and at rest, from the recorded state stream (the
    # press time is the page's, mapped to the monotonic clock the nodes stamp headers with).
    assert len(clean) >= PRESSES, f"only {len(clean)} presses measured; faults: {faults}"
    assert max(clean) <= STOP_BOUND_MS, figures

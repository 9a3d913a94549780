"""LSL input under the real-time runtime: a real pylsl outlet in another process feeds
the ``lsl`` source (its own process); killing the outlet stops intents and the arm's
watchdog brakes it; a new outlet is picked up and intents resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from tests.realtime.conftest import (
    TICK_S,
    Actor,
    graph,
    in_closed_loop,
    records,
    run_realtime,
    speed,
    wait_for,
)

pytest.importorskip("pylsl", reason="pylsl is not installed (pip install 'bciarm[lsl]')")


def _outlet(spawn, name: str):
    p = spawn([sys.executable, "-m", "bciarm.testing.lsl_outlet", "--name", name,
               "--channels", "48", "--seconds", "600", "--pattern", "poisson",
               "--wait-consumer", "60"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "READY"
    return p


@pytest.mark.slow
def test_outlet_death_stops_the_arm_and_a_new_outlet_is_picked_up(tmp_path, runtime_dir,
                                                                   spawn):
    name = f"bciarm-rt-{uuid.uuid4().hex[:8]}"
    cfg_path = graph(tmp_path, cal_trials=3, closed_trials=500)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["nodes"]["source"] = {"kind": "source", "type": "lsl",
                              "params": {"stream_name": name, "bin_s": 0.05, "n_channels": 48}}
    cfg_path.write_text(yaml.safe_dump(cfg))
    first = _outlet(spawn, name)
    marks: dict[str, float] = {}

    def act(sup):
        wait_for(lambda: in_closed_loop(sup), 90, "closed loop")
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)  # the acquisition machine dies
        marks["killed"] = time.monotonic()
        time.sleep(1.5)
        _outlet(spawn, name)
        marks["second"] = time.monotonic()
        time.sleep(4.0)  # reconnect (resolver) and a few seconds of decoding
        sup.stop_requested = True

    actor = Actor(act)
    result = run_realtime(cfg_path, tmp_path / "out", actor)
    actor.check()
    recs = records(result.session_dir)
    stream = [(m.header.t_ns, m.data) for t, m in recs if t == "event" and m.kind == "stream"
              and m.data["state"] != "waiting"]
    killed_ns = int(marks["killed"] * 1e9)  # the runtime's clock is time.monotonic
    # (A starved reader on a loaded machine may add lost/connected pairs of a
    # resumed stall before the kill; the loss that counts is the one after it.)
    t_lost = next(t for t, d in stream if d["state"] == "lost" and t >= killed_ns)
    t_back = next(t for t, d in stream
                  if d["state"] == "connected" and d["new_inlet"] and t > t_lost)
    intents = [m.header.t_ns for t, m in recs if t == "intent"]
    before = [t for t in intents if t < t_back]
    after = [t for t in intents if t > t_back]
    assert before and after, "intents before the loss and after the new outlet"
    last = max(before)
    # Intents stop with the stream: the last one comes from a frame published before the
    # loss (the decoder process may still be finishing it when the source, another
    # process, announces the loss: allow one control tick in flight).
    assert last <= t_lost + int(TICK_S * 1e9)
    # The arm: the watchdog acts after the last intent and it is at rest
    # within 100 ms (+ one tick) of it (the default arm's stop contract).
    arm = [m for t, m in recs if t == "state.arm" and last < m.header.t_ns < t_back]
    assert any("watchdog" in m.guards for m in arm)
    bound = last + int((0.1 + TICK_S) * 1e9)
    late = [speed(m) for m in arm if m.header.t_ns > bound]
    assert late and max(late) < 0.005, f"arm still moving {max(late):.4f} m/s"
    print(f"\nLSL realtime: outlet killed → last intent after {(last / 1e9 - marks['killed']):+.3f} s"
          f" (mono), lost event {(t_lost - last) / 1e6:.0f} ms after it;"
          f" new stream picked up {(t_back / 1e9 - marks['second']):.2f} s after its start;"
          f" {len(after)} intents after")

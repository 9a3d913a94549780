"""Faults on the real-time runtime: kill -9, hangs, broker death (processes, real sockets)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bciarm.bus.messages import EffectorState, NeuralFrame
from bciarm.bus.realtime import STILL_M_S

from .conftest import (
    TICK_S,
    Actor,
    counter,
    graph,
    in_closed_loop,
    records,
    run_realtime,
    speed,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
#: Effector at zero after the last intent: the contract (stop_within_s, default 100 ms)
#: and issue 3's acceptance, 100 ms + one tick.  It holds on a loaded machine because the
#: effector process runs under SCHED_FIFO where allowed (realtime.effector_priority;
#: CI runs as root), replacement processes import at a higher nice value
#: (realtime.spawn_nice), and the stop ramp is anchored at the last intent, not at the
#: tick that noticed it missing.
BOUND_NS = round((0.100 + TICK_S) * 1e9)


def _faults(recs, node, action):
    return [m for t, m in recs if t == "event" and m.kind == "fault"
            and m.data.get("node") == node and m.data.get("action") == action]


def _stop_after_intent(recs, t_cut_ns):
    """(t of the last valid intent the arm acted on before it stopped, t of the first state
    after it in which the arm's motion has stopped) — both from the recording.

    The last intent acted on is the one named by the provenance (neural frame) of the arm's
    last state before its watchdog stop that follows ``t_cut_ns`` (the fault); its time is
    the decoder's publish stamp, the states' times the arm's own.  Stopped: the measured
    velocity along the direction it was moving in has fallen below STILL_M_S (5 mm/s).
    After the stop the arm's station keeping may pull it back toward the stopping point at
    a few mm/s; that is not the motion the watchdog is there to end.
    """
    states = [m for t, m in recs if isinstance(m, EffectorState)]
    trip = min(i for i, m in enumerate(states)
               if m.header.t_ns > t_cut_ns and "watchdog" in m.guards)
    used = [m for m in states[:trip] if m.header.neural_t_ns >= 0][-1].header
    t_last = max(m.header.t_ns for t, m in recs if t == "intent"
                 and (m.header.neural_seq, m.header.neural_t_ns) == (used.neural_seq,
                                                                    used.neural_t_ns)
                 and m.header.t_ns <= states[trip].header.t_ns)
    before = [m for m in states if m.header.t_ns <= t_last][-1]
    u = before.velocity / max(speed(before), 1e-12)
    zero = [m.header.t_ns for m in states
            if m.header.t_ns > t_last and (speed(m) < STILL_M_S or m.velocity @ u < STILL_M_S)]
    assert zero, "the arm never came to rest after the last intent"
    return t_last, min(zero)


def _logged_fault(session_dir, node, action) -> bool:
    """A fault event is in the (live) log; read only up to its last complete record."""
    from bciarm.record import LOG_NAME, LogReader

    for r in LogReader(session_dir / LOG_NAME):
        if r.topic == "event":
            m = r.decode()
            if m.kind == "fault" and (m.data.get("node"), m.data.get("action")) == (node, action):
                return True
    return False


def _timeline(recs, t_last, t_zero):
    """The arm's states from the last intent to its stop: (ms after the intent, speed mm/s,
    guards) — printed with every stop figure, so a slow stop shows where the time went."""
    rows = [f"{(m.header.t_ns - t_last) / 1e6:6.1f} ms {speed(m) * 1e3:6.1f} mm/s "
            f"{','.join(m.guards) or '-'}" for t, m in recs
            if isinstance(m, EffectorState) and t_last - 20e6 <= m.header.t_ns <= t_zero]
    return "\n  ".join(rows)


def test_kill_decoder_recorder_and_task_mid_session(tmp_path, runtime_dir):
    marks: dict[str, int] = {}

    def act(sup):
        wait_for(lambda: in_closed_loop(sup) and counter(sup, "decoder", "decoder", "sent") >= 20,
                 60, "the decoder driving the arm")
        marks["decoder_kill"] = time.monotonic_ns()
        os.kill(sup.procs["decoder"].popen.pid, signal.SIGKILL)
        wait_for(lambda: sup.procs["decoder"].restarts == 1
                 and sup.procs["decoder"].state == "RUNNING", 10, "the decoder back")
        wait_for(lambda: counter(sup, "decoder", "decoder", "sent") >= 10, 10,
                 "the new decoder publishing")
        # scheduling in force (bciarm.bus.sched): the effector first, the next spare last
        marks["sched"] = {
            "arm_fifo": os.sched_getscheduler(sup.procs["arm"].popen.pid) == os.SCHED_FIFO,
            "decoder_nice": os.getpriority(os.PRIO_PROCESS, sup.procs["decoder"].popen.pid),
            "spare_nice": os.getpriority(os.PRIO_PROCESS, sup.spare.pid)}
        # The recorder has the decoder's restart on disk before it dies in turn (it hands
        # every batch to the OS): the events below are then checked in the recording.
        wait_for(lambda: _logged_fault(sup.session_dir, "decoder", "restarted"), 10,
                 "the decoder's restart in the log")
        marks["recorder_kill"] = time.monotonic_ns()
        os.kill(sup.procs["recorder"].popen.pid, signal.SIGKILL)
        wait_for(lambda: sup.procs["recorder"].restarts == 1
                 and sup.procs["recorder"].state == "RUNNING", 10, "the recorder back")
        # the task: its finished trials must survive it (restored from its saved state)
        wait_for(lambda: any(m.outcome and m.block == "closed_loop_1" for m in sup.task_msgs),
                 30, "a finished closed-loop trial")
        before = {(m.block, m.trial) for m in sup.task_msgs if m.outcome}
        os.kill(sup.procs["task"].popen.pid, signal.SIGKILL)
        wait_for(lambda: sup.procs["task"].restarts == 1
                 and sup.procs["task"].state == "RUNNING", 10, "the task back")
        marks["task_trials_before"] = before

    actor = Actor(act)
    result = run_realtime(graph(tmp_path), tmp_path / "s", actor, duration_s=10.0)
    actor.check()
    recs = records(result.session_dir)

    # the effector process ran under SCHED_FIFO where the OS allows it (root here in CI);
    # the replacement decoder left the spare's nice value behind, the next spare has it
    if os.geteuid() == 0:
        assert marks["sched"] == {"arm_fifo": True, "decoder_nice": 0, "spare_nice": 10}
    else:
        print(f"\nnot root: scheduling {marks['sched']} (SCHED_FIFO needs privilege)")
    # the effector stopped within 100 ms + one tick of the last intent
    t_last, t_zero = _stop_after_intent(recs, marks["decoder_kill"])
    assert marks["decoder_kill"] - 200_000_000 < t_last < marks["decoder_kill"], \
        "the arm's last intent is not the dead decoder's last"
    print(f"\ndecoder kill, the arm from its last intent to rest:\n  {_timeline(recs, t_last, t_zero)}")
    assert t_zero - t_last <= BOUND_NS, f"arm at zero {(t_zero - t_last) / 1e6:.1f} ms after " \
                                        f"the last intent"
    # the decoder is back (publishing intents again) within 2 s of the kill
    t_back = min(m.header.t_ns for t, m in recs if t == "intent"
                 and m.header.t_ns > marks["decoder_kill"])
    print(f"\ndecoder kill: arm at rest {(t_zero - t_last) / 1e6:.1f} ms after the last intent; "
          f"decoder publishing again {(t_back - marks['decoder_kill']) / 1e6:.0f} ms after the kill")
    assert t_back - marks["decoder_kill"] <= 2e9, f"decoder back after {(t_back - marks['decoder_kill']) / 1e9:.2f} s"
    # faults and restarts are in the recording
    assert _faults(recs, "decoder", "detected") and _faults(recs, "decoder", "restarted")
    restarted = _faults(recs, "recorder", "restarted")
    assert restarted
    # every neural frame published while a recorder was alive is in the log
    frames = {m.header.seq: m.header.t_ns for t, m in recs if isinstance(m, NeuralFrame)}
    seqs = sorted(frames)
    missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    assert seqs[0] == 0
    period_ns = 50_000_000
    t_dead = marks["recorder_kill"] - 5_000_000   # in flight when it died (< 1/10 of a bin)
    t_alive = restarted[0].header.t_ns              # the new recorder is RUNNING
    for s in missing:
        # the frame was published between the kill and the new recorder's start
        prev = max(k for k in seqs if k < s)
        t_est = frames[prev] + (s - prev) * period_ns
        assert t_dead - period_ns <= t_est <= t_alive + period_ns, \
            f"neural frame {s} missing outside the recorder's outage"
    print(f"recorder kill: {len(missing)} neural frames published during its "
          f"{(t_alive - marks['recorder_kill']) / 1e6:.0f} ms outage are missing; all others logged")
    late = [s for s in seqs if frames[s] > t_alive]
    assert late and late == list(range(late[0], seqs[-1] + 1))
    # the trials finished before the task was killed are in the session's results, once
    import csv

    with (result.session_dir / "trials.csv").open() as f:
        rows = [(r["block"], int(r["index"])) for r in csv.DictReader(f)]
    assert marks["task_trials_before"] <= set(rows), "trials lost with the task process"
    assert len(rows) == len(set(rows)), "a trial index was used twice after the restart"
    print(f"task kill: {len(marks['task_trials_before'])} trials finished before it, "
          f"{len(rows)} in the results")
    # the session completed its protocol
    assert (result.session_dir / "metrics.json").is_file()
    assert [b.name for b in result.blocks] == ["calibration", "closed_loop_1"]
    assert any(t == "event" and m.kind == "session_end" for t, m in recs)


def test_hung_source_is_detected_and_broker_death_stops_the_arm(tmp_path, runtime_dir):
    """SIGSTOP (a hang) → detected within 3 heartbeats; kill -9 broker → arm at zero (held by
    the supervisor), broker restarted, observers reconnect.  Data do not cross the broker:
    nothing published during its outage is lost.  (The arm and the recorder share a process
    here: groups work as well.)"""
    hb_s = 0.1
    marks: dict[str, int] = {}

    def act(sup):
        wait_for(lambda: in_closed_loop(sup) and counter(sup, "decoder", "decoder", "sent") >= 20,
                 60, "the decoder driving the arm")
        pid = sup.procs["source"].popen.pid
        # The hang starts when SIGSTOP has been sent (stamped after the call: a stamp taken
        # before it would count this thread's own wait for the CPU, up to tens of ms here).
        marks["before_hang"] = time.monotonic_ns()
        os.kill(pid, signal.SIGSTOP)
        marks["hang"] = time.monotonic_ns()
        wait_for(lambda: sup.procs["source"].restarts == 1
                 and sup.procs["source"].state == "RUNNING", 10, "the source back")
        wait_for(lambda: counter(sup, "decoder", "decoder", "received") > 40, 10, "frames again")
        sent0 = counter(sup, "decoder", "decoder", "sent")
        wait_for(lambda: counter(sup, "decoder", "decoder", "sent") >= sent0 + 10, 10, "intents")
        marks["broker_kill"] = time.monotonic_ns()
        os.kill(sup.broker.popen.pid, signal.SIGKILL)
        wait_for(lambda: sup.broker.restarts == 1, 5, "the broker restarted")
        sent1 = counter(sup, "decoder", "decoder", "sent")
        wait_for(lambda: counter(sup, "decoder", "decoder", "sent") >= sent1 + 10, 10,
                 "intents after the broker restart")

    actor = Actor(act)
    cfg = graph(tmp_path, groups={"arm": "recorder"}, hb_s=hb_s)
    result = run_realtime(cfg, tmp_path / "s", actor, duration_s=8.0)
    actor.check()
    recs = records(result.session_dir)

    detected = [e for e in result.metrics["faults"]
                if e["node"] == "source" and e["action"] == "detected"]
    assert detected and "hung" in detected[0]["reason"]
    assert detected[0]["t_ns"] > marks["before_hang"], \
        f"the source was taken for hung before it hung: {detected[0]}"
    print(f"\nhung source detected {(detected[0]['t_ns'] - marks['hang']) / 1e6:.0f} ms after "
          f"SIGSTOP (heartbeat {hb_s * 1e3:.0f} ms)")
    assert detected[0]["t_ns"] - marks["hang"] <= 3 * hb_s * 1e9, \
        f"hang detected after {(detected[0]['t_ns'] - marks['hang']) / 1e6:.0f} ms"

    # Intents keep flowing on the direct path until the supervisor sees the broker dead and
    # holds the effectors (over the control channel); the arm's last intent is the last one
    # it acted on (its states' provenance), wherever the hold caught up with the stream.
    detected = _faults(recs, "broker", "detected")
    assert detected
    print(f"broker death detected {(detected[0].header.t_ns - marks['broker_kill']) / 1e6:.1f}"
          f" ms after the kill")
    t_last, t_zero = _stop_after_intent(recs, marks["broker_kill"])
    assert t_last > marks["broker_kill"] - 200_000_000, "the arm was not driven up to the kill"
    print(f"the arm's last intent was published {(t_last - detected[0].header.t_ns) / 1e6:.1f}"
          f" ms after the detection (the hold on its way)")
    print(f"broker kill, the arm from its last intent to rest:\n  {_timeline(recs, t_last, t_zero)}")
    assert t_zero - t_last <= BOUND_NS, f"arm at zero {(t_zero - t_last) / 1e6:.1f} ms after " \
                                        f"the last intent"
    print(f"broker kill: arm at rest {(t_zero - t_last) / 1e6:.1f} ms after the last intent")
    back = _faults(recs, "broker", "restarted")
    assert back
    print(f"broker back (our heartbeat through it, effectors released) after "
          f"{back[0].data['down_ms']:.0f} ms")
    # the direct data path: every neural frame around and during the outage was recorded
    # The window starts no earlier than the source's hang: frames of its first incarnation (whose
    # seq restarts at 0 in the second) would otherwise be mixed in when the broker is killed
    # within a second of the source's restart.
    t0 = max(marks["broker_kill"] - 10**9, marks["hang"])
    t1 = back[0].header.t_ns + 10**9
    seqs = sorted(m.header.seq for m in (m for t, m in recs if isinstance(m, NeuralFrame))
                  if t0 <= m.header.t_ns <= t1)
    assert seqs and seqs == list(range(seqs[0], seqs[-1] + 1)), "neural frames lost"
    print(f"broker outage: {len(seqs)} consecutive neural frames recorded around it, none lost")
    # nodes reconnected: intents and neural frames flow again after the restart
    assert any(t == "intent" and m.header.t_ns > t_zero for t, m in recs)
    assert any(isinstance(m, NeuralFrame) and m.header.t_ns > t_zero for t, m in recs)
    assert [b.name for b in result.blocks] == ["calibration", "closed_loop_1"]

"""LiveState: the monitor's running summary, checked against hand-computed values."""

import numpy as np

from bciarm.bus.messages import EffectorState, Event, Header, Intent, NeuralFrame, TaskState
from bciarm.monitor.live import TRACE_S, LiveState


def _h(t_s, src="x", seq=0, neural_t_s=None):
    nt = -1 if neural_t_s is None else round(neural_t_s * 1e9)
    return Header(seq, round(t_s * 1e9), src, 0 if neural_t_s is not None else -1, nt)


def _task(t, trial, phase, outcome="", block="b1", mode="closed_loop"):
    return TaskState(header=_h(t, "task"), block=block, trial=trial, phase=phase, mode=mode,
                     target=np.array([0.1, 0.0, 0.0]), outcome=outcome)


def test_trials_time_to_target_and_success():
    live = LiveState()
    live.feed("event", Event(header=_h(0.0, "protocol"), kind="block_start",
                             data={"block": "b1", "mode": "closed_loop"}))
    seq = [(0.0, 0, "reach", ""), (1.0, 0, "hold", ""), (1.2, 0, "reach", ""),  # broken hold
           (1.5, 0, "hold", ""), (2.0, 0, "done", "success"),                      # ttt 1.5
           (2.0, 1, "reach", ""), (12.0, 1, "done", "timeout"),
           (12.0, 2, "reach", ""), (12.7, 2, "hold", ""), (13.2, 2, "done", "success")]  # 0.7
    for t, trial, phase, outcome in seq:
        live.feed("task", _task(t, trial, phase, outcome))
    m = live.snapshot()["metrics"]
    assert m["block"]["trials"] == 3
    assert m["block"]["success_rate"] == 2 / 3
    assert np.isclose(m["block"]["mean_time_to_target_s"], (1.5 + 0.7) / 2)
    assert m["closed_loop"]["trials"] == 3
    assert live.snapshot()["events"][0]["kind"] == "block_start"


def test_rates_trace_latency_and_latch():
    live = LiveState()
    for k in range(200):  # 10 s of constant 3 counts per 50 ms bin = 60 Hz
        live.feed("neural", NeuralFrame(header=_h(k * 0.05, "source", k, k * 0.05),
                                        counts=np.full(4, 3, np.uint16), bin_s=0.05))
    assert np.allclose(live.snapshot()["rates"], 60.0)
    for k in range(300):
        live.feed("intent", Intent(header=_h(k * 0.05, "decoder"), velocity=np.array([0.1, -0.1])))
    trace = live.snapshot()["trace"]
    assert trace[-1][0] - trace[0][0] <= TRACE_S
    live.feed("state.arm", EffectorState(header=_h(20.02, "arm", 0, 20.0),
                                         position=np.array([0.1, 0.2, 0.3]),
                                         velocity=np.array([0.0, 0.3, 0.4]),
                                         joint_position=np.zeros(7), joint_velocity=np.zeros(7),
                                         estopped=True, guards=("estop",)))
    snap = live.snapshot()
    arm = snap["effectors"]["arm"]
    assert arm["estopped"] and np.isclose(arm["speed"], 0.5) and arm["guards"] == ["estop"]
    assert np.isclose(snap["latency_ms"]["p50"], 20.0)

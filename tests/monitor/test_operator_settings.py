"""Operator settings the console sends: decoder gain and computer assistance (decoder node),
and their validation (observer and supervisor share the bounds)."""

import numpy as np
import pytest

from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import EffectorState, Event, TaskState
from bciarm.bus.supervisor import OPERATOR_SETTINGS
from bciarm.monitor.observer import COMMANDS, CommandError, check_command
from tests.test_decoder_node import SumDecoder, _block, _frame, _node


def _setting(h, kind, **data):
    h.send("event", h.make("event", Event, kind=kind, data=data))


def _running():
    node = _node(transform="none", assist_speed=0.1)
    node.set_decoder(SumDecoder())
    h = NodeHarness(node)
    _block(h, "closed_loop")
    return node, h


def _last_intent(h, counts=(1, 1, 0, 0)):
    h.clear()
    h.send("neural", _frame(h, list(counts)))
    (intent,) = h.sent("intent")
    return intent.velocity


def test_gain_scales_the_decoded_velocity_and_bad_values_are_refused():
    node, h = _running()
    assert _last_intent(h).tolist() == [2.0, -2.0]
    _setting(h, "gain", gain=0.5)
    assert _last_intent(h).tolist() == [1.0, -1.0]
    for bad in (-1.0, 4.0, "x"):
        _setting(h, "gain", gain=bad)
    _setting(h, "gain", gain=float("nan"))  # the codec already rejects NaN on the bus
    assert node.gain == 0.5  # unchanged
    assert node.counters.rejected_by_reason["bad_gain"] == 3
    assert _last_intent(h).tolist() == [1.0, -1.0]


def test_assist_blends_toward_the_target():
    node, h = _running()
    # Effector at the origin, target 0.2 m along +y (far: full assist_speed toward it).
    h.send("state.arm", h.make("state.arm", EffectorState, position=np.zeros(3),
                               velocity=np.zeros(3), joint_position=np.zeros(7),
                               joint_velocity=np.zeros(7)))
    h.send("task", h.make("task", TaskState, block="b", trial=0, phase="reach",
                          mode="closed_loop", target=np.array([0.0, 0.2, 0.0])))
    _setting(h, "assist", level=0.25)
    decoded = np.array([2.0, -2.0])
    ideal = np.array([0.0, 0.1])
    np.testing.assert_allclose(_last_intent(h), 0.75 * decoded + 0.25 * ideal)
    _setting(h, "assist", level=1.0)
    np.testing.assert_allclose(_last_intent(h), ideal)
    # Within 0.1 m the ideal speed falls linearly (no overshoot at the target).
    h.send("state.arm", h.make("state.arm", EffectorState, position=np.array([0.0, 0.15, 0.0]),
                               velocity=np.zeros(3), joint_position=np.zeros(7),
                               joint_velocity=np.zeros(7)))
    np.testing.assert_allclose(_last_intent(h), [0.0, 0.05])
    # No trial running (idle): no target, assistance does nothing.
    h.send("task", h.make("task", TaskState, block="b", trial=0, phase="idle",
                          mode="closed_loop", target=np.zeros(3)))
    np.testing.assert_allclose(_last_intent(h), decoded)


def test_console_and_supervisor_agree_on_commands():
    for cmd, (key, hi) in OPERATOR_SETTINGS.items():
        assert COMMANDS[cmd] == (key, hi)
        assert check_command(cmd, {key: hi}) == {key: hi}
        with pytest.raises(CommandError):
            check_command(cmd, {key: hi + 0.01})
    with pytest.raises(CommandError, match="unknown command"):
        check_command("self_destruct", {})
    with pytest.raises(CommandError, match="needs a number"):
        check_command("gain", {})


def test_supervisor_refuses_bad_settings_and_replays_good_ones_to_restarted_nodes(tmp_path):
    from bciarm.bus.supervisor import Supervisor
    from bciarm.config import load_config
    from tests.realtime.conftest import graph

    cfg, _ = load_config(graph(tmp_path))
    sup = Supervisor(cfg, tmp_path)
    sent = []
    sup.voice.emit = lambda topic, cls, **kw: sent.append(kw)  # no bus in this test
    try:
        assert sup._on_operator(b'{"cmd": "gain", "gain": 1.5}') == {"ok": True, "gain": 1.5}
        assert sup._on_operator(b'{"cmd": "assist", "level": 0.4}')["ok"]
        for bad in (b'{"cmd": "gain", "gain": 3.5}', b'{"cmd": "assist"}',
                    b'{"cmd": "gain", "gain": "NaN"}'):
            assert sup._on_operator(bad)["ok"] is False
        assert [(k["kind"], k["data"]) for k in sent] == [
            ("gain", {"gain": 1.5, "by": "operator"}), ("assist", {"level": 0.4, "by": "operator"})]
        assert sup._on_operator(b'{"cmd": "pause"}') == {"ok": True, "held": True}
        assert sup.status()["held"] is True
        assert sup._on_operator(b'{"cmd": "start"}') == {"ok": True, "held": False}
        # a decoder restarted later gets the operator's settings again
        replay = sup.group_spec(sup.procs["decoder"])["replay"]
        assert {"kind": "gain", "data": {"gain": 1.5, "by": "operator"}} in replay
        assert {"kind": "assist", "data": {"level": 0.4, "by": "operator"}} in replay
    finally:
        sup.ctx.destroy(linger=0)

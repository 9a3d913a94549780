"""End to end: the built-in drink session, shortened, and its safety record (slow).

Runs ``arm_drink`` (calibration, fit of the 7-D Kalman and the click decoder,
closed loop) with fewer trials and reads the session's message log back:
the glass, while held, never tilts past the task's spill limit, and inside the
mouth zone the hand never moves faster than the zone's reduced speed (the
velocity in the log is J(q)·q̇ of the measured joint velocities).
"""

import json
import math

import numpy as np
import pytest

from bciarm.bus.messages import EffectorState
from bciarm.config import load_config
from bciarm.effectors.arm import ARM_EXTRA, EXTRA_INDEX
from bciarm.effectors.grasp import CLOSED
from bciarm.record import LOG_NAME, read_messages
from bciarm.session import Session


def _short(config, calibration: int, trials: int):
    proto = config.protocol
    proto = proto.model_copy(update={
        "calibration": proto.calibration.model_copy(update={"trials": calibration}),
        "blocks": [proto.blocks[0].model_copy(update={"trials": trials,
                                                      "max_duration_s": 120.0})]})
    return config.model_copy(update={"protocol": proto})


@pytest.mark.slow
def test_drink_session_keeps_the_glass_upright_and_slows_near_the_mouth(tmp_path):
    config, _ = load_config("arm_drink")
    result = Session(_short(config, calibration=12, trials=3), seed=0, out_dir=tmp_path).run()
    m = result.metrics
    assert set(result.json_keys) == {"trials", "success_rate", "blocks_per_min",
                                     "grasp_success_rate", "drops", "session_dir"}
    assert m["trials"] >= 1 and m["success_rate"] >= 0.5, m
    arm = config.nodes["arm"].params
    zone = arm["speed_zones"][0]
    centre, radius, v_max = np.array(zone["centre"]), zone["radius"], zone["max_speed"]
    tilt_limit = config.nodes["task"].params["tilt_limit_deg"]
    cup = len(ARM_EXTRA)  # first tracked object: x, y, z, tilt
    held_tilts, zone_speeds = [], []
    for _, msg in read_messages(result.session_dir / LOG_NAME, ("state.arm",)):
        assert isinstance(msg, EffectorState)
        e = msg.extra
        if e[EXTRA_INDEX["hand_mode"]] == CLOSED and e[EXTRA_INDEX["holding"]] > 0.5:
            held_tilts.append(np.degrees(e[cup + 3]))
        if np.linalg.norm(msg.position - centre) <= radius:
            zone_speeds.append(np.linalg.norm(msg.velocity))
    assert held_tilts and zone_speeds, "the glass was carried into the mouth zone"
    assert max(held_tilts) < tilt_limit
    assert max(zone_speeds) <= v_max
    saved = json.loads((result.session_dir / "metrics.json").read_text())
    assert saved["drops"] == m["drops"]
    assert (result.session_dir / "grasp.png").is_file()


@pytest.mark.slow
def test_gestures_session_runs_the_named_poses_in_order(tmp_path):
    """The built-in ``arm_gestures`` config, shortened: the poses come in sequence order, the
    keys are the other reach-and-grasp tasks' and the per-step times are recorded.

    (Closed-loop success is not asserted: with this config the simulated participant did
    not yet hold the poses -- see the README, "Reach and grasp".)
    """
    config, _ = load_config("arm_gestures")
    result = Session(_short(config, calibration=8, trials=2), seed=0, out_dir=tmp_path).run()
    m = result.metrics
    assert set(result.json_keys) == {"trials", "success_rate", "blocks_per_min",
                                     "grasp_success_rate", "drops", "session_dir"}
    assert m["trials"] == 2 and m["drops"] == 0 and math.isnan(m["grasp_success_rate"]), m
    import csv

    with (result.session_dir / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    sequence = list(config.nodes["task"].params["sequence"])
    # Open loop (the autopilot): every other trial a gesture, all reached; the
    # sequence then carries on in closed loop.
    calib = [r for r in rows if r["mode"] == "open_loop"]
    assert all(r["outcome"] == "success" for r in calib)
    k = len(calib) // 2
    assert [r["item"] for r in calib if r["item"] != "pose"] == sequence[:k]
    closed = [r for r in rows if r["mode"] == "closed_loop"]
    assert [r["item"] for r in closed] == [sequence[(k + i) % len(sequence)] for i in range(2)]
    assert all(r["step_s"].startswith(r["item"] + "=") for r in closed)

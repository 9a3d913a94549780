"""A task's finished trials survive its process: snapshot → JSON → restore (no processes)."""

from __future__ import annotations

import json
import math

import numpy as np

from bciarm.bus.messages import Event, Header
from bciarm.tasks.center_out import CenterOutTask
from bciarm.tasks.metrics import TrialRecord


def _trial(block: str, index: int, outcome: str = "success") -> TrialRecord:
    return TrialRecord(block=block, mode="closed_loop", index=index, target_id=2,
                       start_t_s=1.0 + index, end_t_s=2.5 + index,
                       start_position=np.array([0.4, 0.0, 0.3]),
                       target=np.array([0.5, 0.1, 0.3]), target_radius=0.02, outcome=outcome,
                       time_to_target_s=math.nan if outcome != "success" else 1.2,
                       path_length_m=0.15, straight_m=math.nan, distance_m=0.14, holds_broken=0)


def test_trials_round_trip_through_json_and_numbering_goes_on():
    old = CenterOutTask("task")
    old.trials = [_trial("cal", 0), _trial("b1", 0), _trial("b1", 2, "timeout")]
    text = json.dumps(old.state_snapshot())   # what the runtime writes
    new = CenterOutTask("task")
    assert new.state_version == 0
    new.restore_snapshot(json.loads(text))
    assert new.state_version == 3
    for a, b in zip(old.trials, new.trials):
        for f in ("block", "mode", "index", "target_id", "outcome", "holds_broken"):
            assert getattr(a, f) == getattr(b, f)
        np.testing.assert_array_equal(a.start_position, b.start_position)
        np.testing.assert_array_equal(a.target, b.target)
        assert (math.isnan(a.time_to_target_s) and math.isnan(b.time_to_target_s)) \
            or a.time_to_target_s == b.time_to_target_s
    # back in block b1 (the replayed block_start): the next trial is 3, not 0
    assert new.next_index("b1") == 3 and new.next_index("b2") == 0
    new.on_message("event", Event(Header(0, 0, "protocol"), "block_start",
                                  {"block": "b1", "mode": "closed_loop"}))
    assert new._n_in_block == 3

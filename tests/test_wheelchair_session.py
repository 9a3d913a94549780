"""End to end: a short wheelchair_nav session (calibration, fit, closed loop)."""

import json

import numpy as np
import pytest

from bciarm.config import load_config
from bciarm.session import Session

NAV_JSON_KEYS = ("goals", "goal_success_rate", "collisions", "near_misses", "path_length_ratio",
                 "mean_abs_jerk", "session_dir")


def _short_config(cal=4, goals=2):
    cfg, _ = load_config("wheelchair_nav")
    protocol = cfg.protocol.model_copy(update={
        "calibration": cfg.protocol.calibration.model_copy(update={"trials": cal}),
        "blocks": [cfg.protocol.blocks[0].model_copy(update={"trials": goals,
                                                             "max_duration_s": 200})],
    })
    return cfg.model_copy(update={"protocol": protocol})


@pytest.mark.slow
def test_short_wheelchair_session_reaches_goals_without_collisions(tmp_path):
    result = Session(_short_config(), seed=0, out_dir=tmp_path).run()
    m = result.metrics
    assert result.json_keys == NAV_JSON_KEYS
    print({k: m[k] for k in NAV_JSON_KEYS if k != "session_dir"})
    assert m["calibration"]["goals"] == 4 and m["calibration"]["goal_success_rate"] == 1.0
    assert m["goals"] == 2 and m["goal_success_rate"] >= 0.5
    assert m["collisions"] == 0 and m["calibration"]["collisions"] == 0
    assert m["path_length_ratio"] is None or m["path_length_ratio"] >= 1.0
    saved = json.loads((result.session_dir / "metrics.json").read_text())
    assert set(NAV_JSON_KEYS) <= set(saved)
    assert (result.session_dir / "trajectories.png").is_file()
    rows = (result.session_dir / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("block,mode,index,goal") and len(rows) == 1 + 4 + m["goals"]
    assert np.isfinite(m["mean_abs_jerk"])

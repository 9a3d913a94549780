"""Block kinds (closed_loop | refit | clda) and the configs that use them."""

from __future__ import annotations

import numpy as np
import pytest

from bciarm.config import ConfigError, load_config
from bciarm.decoders.adapt import moving_speed, normalise_speed


def test_existing_and_new_built_in_configs_load():
    cfg, _ = load_config("arm_center_out")
    assert [b.kind for b in cfg.protocol.blocks] == ["closed_loop", "closed_loop"]
    refit, _ = load_config("arm_refit")
    assert [b.kind for b in refit.protocol.blocks] == ["refit", "closed_loop"]
    # the published label rule, with the two documented deviations (README, issue 4)
    first = refit.protocol.blocks[0]
    assert first.label_speed == "decoded" and first.position_feedback
    assert first.process_noise_scale == 4.0 and first.gain == 1.7
    fixed, _ = load_config("arm_refit_fixed")  # its baseline: same graph, no refit
    assert [b.kind for b in fixed.protocol.blocks] == ["closed_loop", "closed_loop"]
    assert fixed.nodes == refit.nodes and fixed.seed == refit.seed
    clda, _ = load_config("arm_clda")
    assert clda.protocol.blocks[0].kind == "clda"
    assert clda.nodes["source"].params["drift"]["dropout_per_min"] > 0


def _write(tmp_path, block: str, source_params: str = "{}") -> str:
    text = f"""
name: t
nodes:
  source: {{kind: source, type: simulated, params: {source_params}}}
  decoder: {{kind: decoder, type: kalman}}
  arm: {{kind: effector, type: arm, params: {{driver: pybullet_arm, driver_params: {{scene: arm_table}}}}}}
  task: {{kind: task, type: center_out}}
protocol:
  blocks:
    - {block}
"""
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return str(path)


def test_bad_block_kind_names_file_key_and_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "{name: a, kind: refitt}"))
    msg = str(err.value)
    assert "t.yaml" in msg and "kind" in msg and "refit" in msg


def test_adaptation_needs_a_closed_loop_block(tmp_path):
    with pytest.raises(ConfigError, match="mode: closed_loop"):
        load_config(_write(tmp_path, "{name: a, kind: clda, mode: open_loop}"))


@pytest.mark.parametrize("option", ["process_noise_scale: 0", "gain: 5"])
def test_bad_refit_option_names_file_and_key(tmp_path, option):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, f"{{name: a, kind: refit, {option}}}"))
    msg = str(err.value)
    assert "t.yaml" in msg and option.split(":")[0] in msg


def test_bad_drift_key_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="drift"):
        load_config(_write(tmp_path, "{name: a}", "{drift: {dropout: 0.1}}"))


def test_speed_normalisation_keeps_direction_and_profile():
    V = np.array([[0.0, 0.0], [0.02, 0.0], [0.0, 0.04], [0.005, 0.0]])
    assert moving_speed(V) == pytest.approx(0.03)  # 0.005 is below 0.01 m/s: not moving
    W = normalise_speed(V, 0.06)
    assert moving_speed(W) == pytest.approx(0.06)
    np.testing.assert_allclose(W, 2 * V)
    np.testing.assert_array_equal(normalise_speed(V, 0.0), V)

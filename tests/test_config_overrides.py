"""``bciarm run --set KEY=VALUE``: overrides applied before validation."""

import pytest

from bciarm.config import ConfigError, apply_overrides, load_config


def test_overrides_set_nested_values_with_yaml_types():
    cfg, _ = load_config("exo_reach", ["nodes.source.params.n_channels=48",
                                       "nodes.exo.params.assist.level=0.5", "seed=7"])
    assert cfg.nodes["source"].params["n_channels"] == 48
    assert cfg.nodes["exo"].params["assist"]["level"] == 0.5
    assert cfg.seed == 7


def test_bad_overrides_name_the_key():
    with pytest.raises(ConfigError, match=r"nodes\.source\.params\.n_chanels: Extra inputs.*"
                                          r"did you mean 'n_channels'"):
        load_config("exo_reach", ["nodes.source.params.n_chanels=48"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["n_channels"], "x.yaml")
    with pytest.raises(ConfigError, match=r"--set seed\.x: seed is not a mapping"):
        apply_overrides({"seed": 1}, ["seed.x=2"], "x.yaml")

"""Config errors name the file, the key and the fix."""

import textwrap

import pytest
from pydantic import Field

from bciarm import registry
from bciarm.bus.node import Node, NodeParams
from bciarm.config import ConfigError, dump_config, load_config, parse_config


class FakeSource(Node):
    class Params(NodeParams):
        n_channels: int = Field(192, gt=0)
        axes: list[str] = Field(default_factory=lambda: ["x", "y"])


class FakeEffector(Node):
    class Params(NodeParams):
        max_speed: float = Field(0.25, gt=0)


@pytest.fixture(autouse=True)
def fakes():
    registry.register("source", "fake", f"{__name__}:FakeSource")
    registry.register("effector", "fake", f"{__name__}:FakeEffector")
    registry.register("task", "fake", f"{__name__}:FakeEffector")
    yield
    for kind in ("source", "effector", "task"):
        registry.unregister(kind, "fake")


GOOD = """
name: t
axes: [x, z]
nodes:
  source: {kind: source, type: fake, params: {n_channels: 8}}
  arm: {kind: effector, type: fake}
  task: {kind: task, type: fake}
"""


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_loads_and_graph_axes_reach_nodes(tmp_path):
    cfg, path = load_config(_write(tmp_path, GOOD))
    assert list(cfg.nodes) == ["source", "arm", "task"]
    dumped = dump_config(cfg)
    assert "n_channels: 8" in dumped and "- z" in dumped  # axes injected, defaults filled


@pytest.mark.parametrize("edit,expect", [
    (("n_channels: 8", "n_channels: -4"),
     ["c.yaml", "nodes.source.params.n_channels", "greater than 0", "Fix"]),
    (("n_channels: 8", "n_chanels: 8"),
     ["nodes.source.params.n_chanels", "did you mean 'n_channels'"]),
    (("type: fake, params", "type: nonexistent, params"),
     ["nodes.source.type", "no source named 'nonexistent'", "fake"]),
    (("axes: [x, z]", "axes: [x, w]"), ["axes.1", "Fix: use one of"]),
    (("name: t", "nme: t"), ["name", "Fix: add the key 'name'"]),
    (("task: {kind: task, type: fake}", ""), ["needs a node of kind 'task'"]),
])
def test_errors_name_file_key_and_fix(tmp_path, edit, expect):
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    for piece in expect:
        assert piece in msg, msg


def test_yaml_syntax_error_gives_line(tmp_path):
    path = _write(tmp_path, "name: t\nnodes: [\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+"):
        load_config(path)


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(ConfigError, match="arm_center_out"):
        load_config("no_such_config")


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        parse_config([1, 2], "x.yaml")


def test_refit_kf_block_needs_position_feedback_on_the_decoder_node(tmp_path):
    from bciarm.config import resolve_config_path

    text = resolve_config_path("arm_refit").read_text(encoding="utf-8")
    assert "position_feedback: true" in text  # the shipped ReFIT-KF config
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("      position_feedback: true\n", "", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml: protocol.blocks.0.position_feedback: .*"
                                          r"Fix: set nodes.decoder.params.position_feedback"):
        load_config(path)

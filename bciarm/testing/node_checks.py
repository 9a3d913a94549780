"""Checks every registered source and task node must pass."""

from __future__ import annotations

from typing import Callable

from bciarm.bus import codec
from bciarm.bus.harness import NodeHarness
from bciarm.bus.node import Node


def check_node(make_node: Callable[[], Node], seconds: float = 1.0) -> None:
    """Construct a node with defaults, run it alone, and check its contract.

    Checks: ``Params`` forbids unknown keys; it runs ``seconds`` of simulated
    time without any input and without raising; whatever it publishes is on
    a declared output topic and survives the codec; ``on_stop`` may be
    called twice.

    Raises
    ------
    AssertionError
        Naming the node and the broken promise.
    """
    node = make_node()
    label = f"{type(node).__name__} {node.name!r}"
    try:
        type(node).Params(no_such_parameter_xyz=1)
    except Exception:
        pass
    else:
        raise AssertionError(f"{label}: Params accepts unknown keys (use extra='forbid')")
    h = NodeHarness(node)
    h.advance(seconds)
    for topic, msg in h.capture.messages:
        assert any(topic == o or (o.endswith("*") and topic.startswith(o[:-1]))
                   for o in node.outputs), f"{label} published on undeclared topic {topic!r}"
        codec.roundtrip(topic, msg)
    h.close()
    node.on_stop()

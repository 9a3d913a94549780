"""The fastest a simulated session allows: a decoder that reads the user's mind.

A measurement aid, not a decoder for use: :class:`OracleDecoderNode` is a
decoder node that, in closed loop, publishes for each neural frame the
*intended* velocity the simulated user put into that frame (the simulated
source's own record), instead of decoding the counts. Everything else -- the
user's feedback delay and motor noise, the bus, the arm's speed and
acceleration limits, the task's timing -- is the session's. Its time to target
is the floor any decoder approaches by decoding the intention perfectly
(a decoder with more gain than the user's intention can still beat it).

    python -m bciarm.decoders.refit_compare --seeds 0 1 --oracle
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bciarm.bus.messages import GRASP_NONE, Intent, Message, NeuralFrame
from bciarm.bus.node import Node
from bciarm.decoders.node import DecoderNode
from bciarm.session import Session
from bciarm.sources.simulated import SimulatedSource

__all__ = ["OracleDecoderNode", "OracleSession", "oracle_block_metrics"]


class OracleDecoderNode(DecoderNode):
    """A decoder node whose closed-loop output is the simulated user's intention.

    Parameters
    ----------
    source : SimulatedSource
        The session's simulated source (same process: inline runtime only).
    """

    def __init__(self, name: str = "decoder", *, source: SimulatedSource, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.source = source

    def on_message(self, topic: str, msg: Message) -> None:
        if not isinstance(msg, NeuralFrame) or self.decoder is None:
            super().on_message(topic, msg)
            return
        if not self.closed_loop:
            return
        seqs = self.source.history_seq
        # The frame just published is the source's newest record.
        i = len(seqs) - 1
        while i >= 0 and seqs[i] != msg.header.seq:
            i -= 1
        if i < 0:
            raise RuntimeError(f"oracle: no intention recorded for frame {msg.header.seq}")
        velocity = np.asarray(self.source.history_velocity[i], dtype=np.float64)
        self.emit("intent", Intent, derived_from=msg.header,
                  velocity=np.ascontiguousarray(velocity), space=self._space, grasp=GRASP_NONE)


class OracleSession(Session):
    """A :class:`~bciarm.session.Session` whose decoder node is an :class:`OracleDecoderNode`."""

    def build_nodes(self) -> list[Node]:
        nodes = super().build_nodes()
        sources = [n for n in nodes if isinstance(n, SimulatedSource)]
        if len(sources) != 1:
            raise ValueError("the oracle needs exactly one simulated source")
        out: list[Node] = []
        for node in nodes:
            if isinstance(node, DecoderNode):
                params = node.params.model_dump()
                node = OracleDecoderNode(node.name, source=sources[0], **params)
            out.append(node)
        return out


def oracle_block_metrics(config: str, seed: int, out_dir: str | Path,
                         overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``config`` with the oracle decoder; per-block metrics as in refit_compare."""
    from bciarm.config import load_config

    cfg, _ = load_config(config, overrides)
    result = OracleSession(cfg, seed=seed, out_dir=out_dir, argv=["oracle"]).run()
    return {name: dict(m) for name, m in result.metrics["blocks"].items()}

"""Decoder node: neural frames in, movement intent out.

Wraps any registered decoder (scikit-learn contract with ``step``).  Until a
fitted decoder is installed (:meth:`DecoderNode.set_decoder`) and a
closed-loop block is running, it publishes nothing: during open-loop
calibration the task drives the effector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from bciarm import registry
from bciarm.bus.messages import Event, Intent, Message, NeuralFrame
from bciarm.bus.node import Node, NodeParams
from bciarm.decoders.features import transform_counts
from bciarm.space import Axis, intent_space


class DecoderNode(Node):
    """Decode each neural frame into an :class:`Intent` carrying the frame's provenance.

    Parameters (``Params``)
    -----------------------
    decoder : str
        Registry name of the decoder class (``"kalman"``).
    estimator : dict
        Hyper-parameters handed to the decoder's constructor.
    transform : {"none", "sqrt"}
        Count transform applied before the decoder (and at calibration).
    axes : list of str
        Task axes; the intent carries one velocity per axis.
    """

    class Params(NodeParams):
        decoder: str = "kalman"
        estimator: dict[str, Any] = Field(default_factory=dict)
        transform: Literal["none", "sqrt"] = "none"
        axes: list[Axis] = Field(default_factory=lambda: ["x", "y"])

        @field_validator("decoder")
        @classmethod
        def _known(cls, name: str) -> str:
            if name not in registry.names("decoder"):
                raise ValueError(f"unknown decoder {name!r}; registered: {registry.names('decoder')}")
            return name

        @field_validator("axes")
        @classmethod
        def _space(cls, axes: list[str]) -> list[str]:
            intent_space(axes)
            return axes

    inputs = ("neural", "event")
    outputs = ("intent",)

    def __init__(self, name: str = "decoder", **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        # Intents speak the space of the task axes: "cartesian" or "drive".
        self._space = intent_space(self.params.axes)
        self.decoder: Any = None
        self.closed_loop = False
        self.wrong_size = 0

    def make_estimator(self) -> Any:
        """A fresh, unfitted decoder with the configured hyper-parameters."""
        cls = registry.resolve("decoder", self.params.decoder)
        return cls(**self.params.estimator)

    def features(self, counts: np.ndarray) -> np.ndarray:
        return transform_counts(counts, self.params.transform)

    def set_decoder(self, decoder: Any) -> None:
        """Install a fitted decoder (its filter state is reset)."""
        decoder.reset()
        self.decoder = decoder

    def load_decoder(self, path: str | Path) -> None:
        """Load and install a saved decoder (relative paths are in the session folder)."""
        path = Path(path)
        if not path.is_absolute() and self.ctx is not None and self.ctx.session_dir is not None:
            path = Path(self.ctx.session_dir) / path
        cls = registry.resolve("decoder", self.params.decoder)
        self.set_decoder(cls.load(path))

    def on_message(self, topic: str, msg: Message) -> None:
        if isinstance(msg, Event):
            if msg.kind == "decoder_update":
                # Decoder updates travel as events naming the saved file, so a
                # decoder in another process (or a replay) installs exactly
                # the decoder that was recorded.
                if msg.data.get("node", self.name) == self.name and "path" in msg.data:
                    try:
                        self.load_decoder(str(msg.data["path"]))
                    except (OSError, ValueError) as exc:
                        self.counters.errors += 1
                        self.log.error("cannot load decoder %s: %s", msg.data["path"], exc)
            elif msg.kind == "block_start":
                self.closed_loop = msg.data.get("mode") == "closed_loop"
                if self.decoder is not None:
                    self.decoder.reset()
            elif msg.kind == "block_end":
                self.closed_loop = False
            return
        if not isinstance(msg, NeuralFrame) or self.decoder is None:
            return
        if msg.counts.shape[0] != self.decoder.n_channels_:
            # A frame of the wrong width is rejected here, not fed to the filter.
            self.wrong_size += 1
            self.counters.rejected += 1
            self.counters.rejected_by_reason["shape"] += 1
            self.log.warning("neural frame %d has %d channels; decoder expects %d",
                             msg.header.seq, msg.counts.shape[0], self.decoder.n_channels_)
            return
        state = self.decoder.step(self.features(msg.counts))
        if not self.closed_loop:
            return  # keep the filter warm, but the task drives in open loop
        k = len(self.params.axes)
        self.emit("intent", Intent, derived_from=msg.header,
                  velocity=np.ascontiguousarray(state[-k:], dtype=np.float64),
                  space=self._space)

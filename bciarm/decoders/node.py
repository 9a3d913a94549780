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
from bciarm.bus.messages import (GRASP_NONE, EffectorState, Event, Intent, Message, NeuralFrame,
                                 TaskState)
from bciarm.bus.node import Node, NodeParams
from bciarm.decoders.features import FeatureTransformer, transform_counts
from bciarm.space import TaskAxis, axis_indices, intent_space


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
        axes: list[TaskAxis] = Field(default_factory=lambda: ["x", "y"])
        features: dict[str, Any] | None = Field(
            None, description="FeatureTransformer hyper-parameters (bin_factor, count_transform, "
                              "zscore, lag, history, min_rate_hz, ...): fitted at calibration, "
                              "saved beside the decoder and run on every frame. None: only "
                              "`transform` is applied (no fitted feature stage).")
        assist_speed: float = Field(
            0.1, gt=0, description="computer assistance (`assist` event, level a in [0, 1]): "
                                   "intent = (1 - a) * decoded + a * this speed (m/s) toward "
                                   "the target (slower within 0.1 m of it)")
        position_feedback: bool = Field(
            False, description="Set the decoder's position states to the effector's actual "
                               "position on every state message (ReFIT-KF); needs a decoder "
                               "with set_position and include_position.")
        click: dict[str, Any] | None = Field(
            None, description="Grasp/release (click) decoder hyper-parameters (shrinkage, "
                              "p_close, p_open, close_dwell_s, open_dwell_s; see "
                              "bciarm.decoders.click): fitted at calibration on the hand state, "
                              "its command rides on every intent. None: no click decoder.")

        @field_validator("click")
        @classmethod
        def _valid_click(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
            if value is not None:
                from bciarm.decoders.click import ClickDecoder

                unknown = sorted(set(value) - set(ClickDecoder._PARAM_NAMES))
                if unknown:
                    raise ValueError(f"unknown click parameter(s) {unknown}; valid: "
                                     f"{list(ClickDecoder._PARAM_NAMES)}")
                ClickDecoder(**value)._validate()
            return value

        @field_validator("features")
        @classmethod
        def _valid_features(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
            if value is not None:
                unknown = sorted(set(value) - set(FeatureTransformer._PARAM_NAMES))
                if unknown:
                    raise ValueError(f"unknown feature parameter(s) {unknown}; valid: "
                                     f"{list(FeatureTransformer._PARAM_NAMES)}")
                FeatureTransformer(**value)._validate()
            return value

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
        self._axis_idx = None
        if self._space == "cartesian" and all(a in ("x", "y", "z") for a in self.params.axes):
            self._axis_idx = axis_indices(self.params.axes)
        if self.params.click is not None and self.params.features is not None:
            raise ValueError("a click decoder works on the plain count transform: set "
                             "`features: null` (or drop `click`)")
        self.click: Any = None
        if self.params.position_feedback:
            if self._axis_idx is None:
                raise ValueError("position_feedback needs Cartesian task axes (x, y, z), "
                                 f"not {self.params.axes}")
        self.decoder: Any = None
        self.feature_stage: FeatureTransformer | None = None
        self._features_file: str | None = None
        self.closed_loop = False
        self.wrong_size = 0
        # Operator settings (events `gain`, `assist`; see on_message): output gain and
        # computer-assistance level, with the target and position assistance needs.
        self.gain = 1.0
        self.assist = 0.0
        self._target: np.ndarray | None = None
        self._position: np.ndarray | None = None
        if self._axis_idx is not None:  # positions for position_feedback and assistance
            self.inputs = (*type(self).inputs, "task", "state.*")

    def make_estimator(self) -> Any:
        """A fresh, unfitted decoder with the configured hyper-parameters."""
        cls = registry.resolve("decoder", self.params.decoder)
        return cls(**self.params.estimator)

    def features(self, counts: np.ndarray) -> np.ndarray:
        """The stateless count transform (the path without a fitted feature stage)."""
        return transform_counts(counts, self.params.transform)

    def make_feature_stage(self) -> FeatureTransformer | None:
        """A fresh, unfitted feature stage, or None if ``features`` is not configured."""
        if self.params.features is None:
            return None
        return FeatureTransformer(**self.params.features)

    def _n_inputs(self) -> int:
        if self.feature_stage is not None:
            return int(self.feature_stage.n_channels_in_)
        return int(self.decoder.n_channels_)

    def set_decoder(self, decoder: Any) -> None:
        """Install a fitted decoder (its filter state is reset)."""
        decoder.reset()
        self.decoder = decoder

    def load_decoder(self, path: str | Path) -> None:
        """Load and install a saved decoder (relative paths are in the session folder)."""
        cls = registry.resolve("decoder", self.params.decoder)
        self.set_decoder(cls.load(self._session_path(path)))

    def _session_path(self, path: str | Path) -> Path:
        path = Path(path)
        if not path.is_absolute() and self.ctx is not None and self.ctx.session_dir is not None:
            path = Path(self.ctx.session_dir) / path
        return path

    def on_message(self, topic: str, msg: Message) -> None:
        if isinstance(msg, Event):
            if msg.kind == "decoder_update":
                # Decoder updates travel as events naming the saved file, so a
                # decoder in another process (or a replay) installs exactly
                # the decoder that was recorded.
                if msg.data.get("node", self.name) == self.name and "path" in msg.data:
                    try:
                        # The feature stage is reloaded only when the event names a
                        # new file: an adapted decoder keeps the running history.
                        if "features" in msg.data and msg.data["features"] != self._features_file:
                            self.feature_stage = FeatureTransformer.load(
                                self._session_path(str(msg.data["features"])))
                            self._features_file = str(msg.data["features"])
                        self.load_decoder(str(msg.data["path"]))
                        if "click" in msg.data:
                            from bciarm.decoders.click import ClickDecoder

                            self.click = ClickDecoder.load(self._session_path(str(msg.data["click"])))
                    except (OSError, ValueError) as exc:
                        self.counters.errors += 1
                        self.log.error("cannot load decoder %s: %s", msg.data["path"], exc)
            elif msg.kind == "block_start":
                self.closed_loop = msg.data.get("mode") == "closed_loop"
                if self.decoder is not None:
                    self.decoder.reset()
                if self.feature_stage is not None:
                    self.feature_stage.reset()
                if self.click is not None:
                    self.click.reset()
            elif msg.kind == "block_end":
                self.closed_loop = False
            elif msg.kind in ("gain", "assist"):
                self._operator_setting(msg)
            return
        if isinstance(msg, TaskState):
            self._target = np.asarray(msg.target, dtype=float)[self._axis_idx] \
                if msg.phase in ("reach", "hold") else None
            return
        if isinstance(msg, EffectorState):
            self._position = np.asarray(msg.position, dtype=float)[self._axis_idx]
            if (self.params.position_feedback and self.decoder is not None
                    and hasattr(self.decoder, "set_position")):
                self.decoder.set_position(np.asarray(msg.position, dtype=float)[self._axis_idx])
            return
        if not isinstance(msg, NeuralFrame) or self.decoder is None:
            return
        if msg.counts.shape[0] != self._n_inputs():
            # A frame of the wrong width is rejected here, not fed to the filter.
            self.wrong_size += 1
            self.counters.rejected += 1
            self.counters.rejected_by_reason["shape"] += 1
            self.log.warning("neural frame %d has %d channels; decoder expects %d",
                             msg.header.seq, msg.counts.shape[0], self._n_inputs())
            return
        if self.feature_stage is not None:
            z = self.feature_stage.step(msg.counts)
            if z is None:
                return  # re-binning: the feature bin is not complete yet
        else:
            z = self.features(msg.counts)
        state = self.decoder.step(z)
        grasp = self.click.step(z) if self.click is not None else GRASP_NONE
        if not self.closed_loop:
            return  # keep the filter warm, but the task drives in open loop
        k = len(self.params.axes)
        velocity = self.gain * np.asarray(state[-k:], dtype=np.float64)
        if self.assist > 0 and self._target is not None and self._position is not None:
            velocity = (1 - self.assist) * velocity + self.assist * self._assist_velocity()
        self.emit("intent", Intent, derived_from=msg.header,
                  velocity=np.ascontiguousarray(velocity, dtype=np.float64),
                  space=self._space, grasp=grasp)

    def _assist_velocity(self) -> np.ndarray:
        """The ideal velocity: ``assist_speed`` toward the target, slowing within 0.1 m."""
        assert self._target is not None and self._position is not None
        d = self._target - self._position
        dist = float(np.linalg.norm(d))
        if dist < 1e-9:
            return np.zeros_like(d)
        return d / dist * self.params.assist_speed * min(1.0, dist / 0.1)

    def _operator_setting(self, msg: Event) -> None:
        """``gain`` (data ``gain`` in [0, 3]) scales the decoded velocity; ``assist`` (data
        ``level`` in [0, 1], Cartesian axes only) blends it with the ideal velocity."""
        key, hi = ("gain", 3.0) if msg.kind == "gain" else ("level", 1.0)
        try:
            value = float(msg.data[key])
        except (KeyError, TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value) or not 0.0 <= value <= hi:
            self.counters.rejected += 1
            self.counters.rejected_by_reason[f"bad_{msg.kind}"] += 1
            self.log.warning("ignored %s event with %s=%r (allowed 0..%g)", msg.kind, key,
                             msg.data.get(key), hi)
            return
        if msg.kind == "gain":
            self.gain = value
        elif self._axis_idx is not None:
            self.assist = value

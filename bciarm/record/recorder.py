"""Recorder node: every good frame on the bus, byte for byte, into the session log."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from bciarm.bus.messages import Message
from bciarm.bus.node import Node, NodeParams
from bciarm.record.log import LogWriter

LOG_NAME = "messages.bcilog"


class Recorder(Node):
    """Subscribes to every topic and appends each frame to ``messages.bcilog``.

    Frames arrive encoded (``raw_inputs``): what is stored is exactly what
    travelled, so a recording replays bit for bit.  Rejected frames never reach
    it; they are counted by the runtime.
    """

    class Params(NodeParams):
        path: Path | None = Field(None, description="log file; default <session_dir>/messages.bcilog")
        flush_every: int = Field(256, gt=0)

    inputs = ("*",)
    raw_inputs = True

    def __init__(self, name: str = "recorder", **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.writer: LogWriter | None = None

    @property
    def path(self) -> Path:
        if self.params.path is not None:
            return self.params.path
        if self.ctx is None or self.ctx.session_dir is None:
            raise RuntimeError("Recorder needs a path or a session directory")
        return Path(self.ctx.session_dir) / LOG_NAME

    def on_start(self) -> None:
        self.writer = LogWriter(self.path, flush_every=self.params.flush_every)

    def on_frame(self, topic: str, payload: bytes, msg: Message | None) -> None:
        assert self.writer is not None
        self.writer.write(topic, payload, self.now_ns())

    def sync(self) -> None:
        """Flush and fsync (called at block boundaries)."""
        if self.writer is not None and not self.writer.closed:
            self.writer.sync()

    def on_stop(self) -> None:
        if self.writer is not None:
            self.writer.close()

"""The ``replay`` source: neural frames from a recording, one per bin, in order.

Reads an NWB file (a ``bciarm export`` or another file with a spike-count
TimeSeries, through :func:`bciarm.record.nwb.read_nwb`), a bciarm session
folder (its recorded neural frames) or a StevensonV2-style ``.mat`` file,
and publishes its bins as :class:`~bciarm.bus.messages.NeuralFrame` at the
recording's own bin width (the node's tick).  For open-loop decoder checks,
demos and offline replays of a session's neural input through a new graph.

At the end of the recording it publishes an ``event`` of kind ``stream``
with ``state: ended`` and then nothing (downstream, intents stop and the
effectors' watchdogs brake), unless ``loop`` is set.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from bciarm.bus.messages import Event, Header, NeuralFrame
from bciarm.bus.node import Node, NodeParams


class ReplayError(ValueError):
    """The recording cannot be replayed; the message says why."""


def load_counts(path: str | Path) -> tuple[np.ndarray, float]:
    """Binned counts ``(T, N)`` and the bin width of a recording (NWB, session folder, .mat)."""
    path = Path(path)
    if path.is_dir():
        from bciarm.bus.messages import NeuralFrame as _NF
        from bciarm.record import LOG_NAME, read_messages

        if not (path / LOG_NAME).exists():
            raise ReplayError(f"{path}: not a bciarm session folder (no {LOG_NAME})")
        frames = [m for _t, m in read_messages(path / LOG_NAME, ("neural",))
                  if isinstance(m, _NF)]
        if not frames:
            raise ReplayError(f"{path}: no neural frames recorded")
        return np.vstack([f.counts for f in frames]), float(frames[0].bin_s)
    if not path.exists():
        raise ReplayError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".nwb":
        from bciarm.record.nwb import NwbError, read_nwb

        try:
            data = read_nwb(path)
        except NwbError as exc:
            raise ReplayError(str(exc)) from None
        return data.counts, float(data.bin_s)
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        mat = loadmat(path)
        if "spikes" not in mat or "timeBase" not in mat:
            raise ReplayError(f"{path}: need variables spikes (N, T) and timeBase")
        return np.asarray(mat["spikes"], dtype=np.float64).T, float(np.squeeze(mat["timeBase"]))
    raise ReplayError(f"{path}: give an .nwb file, a bciarm session folder or a .mat file")


class ReplaySource(Node):
    """Replays a recording's binned counts on ``neural`` (registry name ``"replay"``).

    The node ticks at the recording's bin width (``bin_s``, if given, must
    match it).  Integer counts go out as uint16/uint32, anything else as
    float64.
    """

    class Params(NodeParams):
        """Parameters of the replay source."""

        path: str = Field(..., description="An .nwb file, a bciarm session folder or a .mat file.")
        bin_s: float | None = Field(None, gt=0, description="Expected bin width, s (checked "
                                                            "against the recording's).")
        start_s: float = Field(0.0, ge=0, description="Skip this much of the recording, s.")
        loop: bool = Field(False, description="Start over at the end instead of stopping.")

        @field_validator("path")
        @classmethod
        def _exists(cls, value: str) -> str:
            if not Path(value).exists():
                raise ValueError(f"no such file or folder: {value!r} (give an .nwb file, a "
                                 f"bciarm session folder or a .mat file)")
            return value

    inputs = ()
    outputs = ("neural", "event")

    def __init__(self, name: str, params: NodeParams | dict | None = None, **kwargs: object):
        super().__init__(name, params, **kwargs)
        p = self.params
        counts, bin_s = load_counts(p.path)
        if p.bin_s is not None and abs(p.bin_s - bin_s) > 1e-9:
            raise ReplayError(f"{p.path}: bins are {bin_s:g} s but bin_s is {p.bin_s:g}")
        whole = np.all(np.mod(counts, 1) == 0) and counts.min(initial=0) >= 0
        dtype = ("<u2" if counts.max(initial=0) <= 65535 else "<u4") if whole else "<f8"
        self.counts = np.ascontiguousarray(counts, dtype=dtype)
        self.bin_s = bin_s
        self.position = round(p.start_s / bin_s)
        self.ended = False

    @property
    def tick_s(self) -> float:
        return self.bin_s

    @classmethod
    def contract_instance(cls, name: str) -> ReplaySource:
        """A replay of a small generated ``.mat`` recording (the contract checks)."""
        from scipy.io import savemat

        folder = Path(tempfile.mkdtemp(prefix="bciarm-replay-"))
        rng = np.random.default_rng(0)
        savemat(folder / "tiny.mat", {"spikes": rng.poisson(1.0, size=(8, 100)).astype(float),
                                      "timeBase": 0.05})
        return cls(name, path=str(folder / "tiny.mat"))

    def on_tick(self, now_ns: int) -> None:
        if self.position >= len(self.counts):
            if not self.params.loop:
                if not self.ended:
                    self.ended = True
                    self.emit("event", Event, kind="stream",
                              data={"node": self.name, "state": "ended",
                                    "frames": len(self.counts)})
                return
            self.position = 0
        row = self.counts[self.position]
        self.position += 1
        h = self.header("neural")
        self.publish("neural", NeuralFrame(header=Header(h.seq, h.t_ns, h.src, h.seq, h.t_ns),
                                           counts=row, bin_s=self.bin_s))

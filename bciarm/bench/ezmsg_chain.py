"""The bus benchmark's chain in ezmsg (extra ``bench``): source, decoder, effector units,
one process each.  ``python -m bciarm.bench.ezmsg_chain OUT.npz FRAMES RATE CHANNELS PORT``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import numpy as np

try:
    import ezmsg.core as ez
except ImportError as exc:  # pragma: no cover
    raise ImportError("the ezmsg comparison needs the benchmark extra: "
                      "pip install 'bciarm[bench]'") from exc


@dataclass
class Frame:
    seq: int
    t_ns: int
    counts: np.ndarray = field(repr=False)


@dataclass
class Cmd:
    seq: int
    t_ns: int
    velocity: np.ndarray = field(repr=False)


class SrcSettings(ez.Settings):
    frames: int = 1000
    rate: float = 1000.0
    channels: int = 1024


class Source(ez.Unit):
    SETTINGS = SrcSettings
    OUTPUT = ez.OutputStream(Frame)

    @ez.publisher(OUTPUT)
    async def run(self) -> AsyncGenerator:
        s = self.SETTINGS
        await asyncio.sleep(2.0)  # subscribers connect
        counts = np.zeros(s.channels, "<u2")
        period = 1.0 / s.rate
        t = time.monotonic()
        for n in range(s.frames):
            counts[n % s.channels] += 1
            yield self.OUTPUT, Frame(n, time.monotonic_ns(), counts.copy())
            t += period
            await asyncio.sleep(max(0.0, t - time.monotonic()))
        yield self.OUTPUT, Frame(-2, 0, counts[:0])
        # The effector ends the run once the last frame reached it (its results written):
        # a NormalTermination here ends the whole graph and, on a busy machine, cut the
        # chain off while frames were still in flight (no results).  Fallback: 60 s.
        await asyncio.sleep(60.0)
        raise ez.NormalTermination


class DecSettings(ez.Settings):
    channels: int = 1024


class Decoder(ez.Unit):
    SETTINGS = DecSettings
    INPUT = ez.InputStream(Frame)
    OUTPUT = ez.OutputStream(Cmd)

    async def initialize(self) -> None:
        from bciarm.bench.nodes import decode_weights

        self.w = decode_weights(self.SETTINGS.channels)

    @ez.subscriber(INPUT)
    @ez.publisher(OUTPUT)
    async def on_frame(self, msg: Frame) -> AsyncGenerator:
        v = self.w @ msg.counts if msg.seq >= 0 else np.zeros(2)
        yield self.OUTPUT, Cmd(msg.seq, msg.t_ns, v)


class EffSettings(ez.Settings):
    out: str = "ezmsg.npz"


class Effector(ez.Unit):
    SETTINGS = EffSettings
    INPUT = ez.InputStream(Cmd)

    async def initialize(self) -> None:
        self.lat: list[int] = []
        self.seqs: list[int] = []

    @ez.subscriber(INPUT)
    async def on_cmd(self, msg: Cmd) -> None:
        if msg.seq == -2:
            np.savez(self.SETTINGS.out, lat=np.asarray(self.lat, np.int64),
                     seqs=np.asarray(self.seqs, np.int64))
            raise ez.NormalTermination
        np.clip(msg.velocity, -0.25, 0.25)
        self.lat.append(time.monotonic_ns() - msg.t_ns)
        self.seqs.append(msg.seq)


def main(argv: list[str]) -> int:
    out, frames, rate, channels, port = argv
    src = Source(SrcSettings(frames=int(frames), rate=float(rate), channels=int(channels)))
    dec = Decoder(DecSettings(channels=int(channels)))
    eff = Effector(EffSettings(out=out))
    # A private graph server on a random port (not ezmsg's shared default 25978).
    from ezmsg.core.graphserver import GraphService
    from ezmsg.core.netprotocol import Address

    server = GraphService(Address("127.0.0.1", int(port))).create_server()
    try:
        ez.run(components={"SRC": src, "DEC": dec, "EFF": eff},
               connections=((src.OUTPUT, dec.INPUT), (dec.OUTPUT, eff.INPUT)),
               process_components=(src, dec, eff), graph_address=("127.0.0.1", int(port)))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

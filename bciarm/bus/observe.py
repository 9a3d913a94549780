"""Watch a running real-time session: every topic, from the broker's observer feed.

Node processes talk to each other directly; each also publishes on the
broker, whose XPUB is the one endpoint where a tool (a monitor, a web
dashboard, a notebook) subscribes to any or every topic without touching the
data path.  :class:`Observer` finds the session (``$BCIARM_RUNTIME_DIR/
current.json`` or ``SESSION_DIR/runtime.json``), connects there — as a CURVE
client when the session runs with ``security: curve`` — and hands out
validated messages.

Example
-------
>>> with Observer(topics=("intent", "state.")) as obs:    # doctest: +SKIP
...     for topic, msg in obs.messages(seconds=1.0):
...         print(topic, msg.header.seq)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import zmq

from bciarm.bus import codec
from bciarm.bus.messages import Message
from bciarm.bus.realtime import configure_curve


def runtime_info(session: str | Path | None = None) -> dict[str, Any]:
    """The running session's ``runtime.json`` (the current one if ``session`` is None)."""
    from bciarm.bus.supervisor import runtime_dir

    path = Path(session) / "runtime.json" if session is not None else runtime_dir() / "current.json"
    if not path.exists():
        raise FileNotFoundError(f"no running session: {path} does not exist")
    return json.loads(path.read_text())


class Observer:
    """A subscriber on the broker's feed of a running session.

    Parameters
    ----------
    session : path, optional
        Session folder; default the current session.
    topics : sequence of str
        Topic prefixes (``""``: everything).
    security : dict, optional
        CURVE client settings (as in a process spec); default the session's,
        with its ``node`` key pair.
    """

    def __init__(self, session: str | Path | None = None, topics: Sequence[str] = ("",),
                 security: dict[str, Any] | None = None) -> None:
        info = runtime_info(session)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        configure_curve(self.sock, security if security is not None else info.get("security"))
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(info["endpoints"]["xpub"])
        #: frames that failed validation, by reason
        self.rejected: dict[str, int] = {}

    def recv(self, timeout_s: float = 1.0) -> tuple[str, Message] | None:
        """The next valid message, or None after ``timeout_s`` without one."""
        end = time.monotonic() + timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000))):
                return None
            parts = self.sock.recv_multipart()
            try:
                if len(parts) != 2:
                    raise codec.CodecError("garbage", f"{len(parts)} parts")
                return codec.decode(*parts)
            except codec.CodecError as exc:
                self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1

    def messages(self, seconds: float) -> Iterator[tuple[str, Message]]:
        """Every valid message for ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            got = self.recv(left)
            if got is not None:
                yield got

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

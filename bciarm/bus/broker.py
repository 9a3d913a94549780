"""The bus broker: an XSUB/XPUB proxy in its own process, the observer feed.

Data between nodes do not cross it (each process binds its own data PUB and
subscribers connect straight to it, see :mod:`bciarm.bus.realtime`); every
process also publishes to the broker's XSUB, so the broker's XPUB is the one
endpoint where a monitor or tool subscribes to *every* topic.  Publishers
send it only the topics some observer subscribed to.

``python -m bciarm.bus.broker SPEC.json`` binds ``xsub`` (publishers connect)
and ``xpub`` (subscribers connect) and forwards frames and subscriptions
between them (``zmq.proxy``).  It never decodes anything; a publisher that
sends a message larger than ``max_msg_bytes`` is disconnected
(``ZMQ_MAXMSGSIZE``).  With ``security.mode == "curve"`` both sockets are
CURVE servers and a ZAP authenticator admits only the public keys in
``security.clients_dir``.

The supervisor runs it as a child so it can restart it on the same endpoints;
ZeroMQ peers reconnect by themselves.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import zmq


def run_broker(spec: dict[str, Any]) -> None:
    ctx = zmq.Context()
    auth = None
    sec = spec.get("security") or {}
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        s.linger = 0
        s.sndhwm = 100000
        s.rcvhwm = 100000
    xsub.setsockopt(zmq.MAXMSGSIZE, int(spec.get("max_msg_bytes", 16 * 1024 * 1024)))
    if sec.get("mode") == "curve":
        from bciarm.bus.security import serve_curve

        auth = serve_curve(ctx, [xsub, xpub], sec)
    xsub.bind(spec["xsub"])
    xpub.bind(spec["xpub"])
    try:
        zmq.proxy(xsub, xpub)
    except zmq.ContextTerminated:  # pragma: no cover
        pass
    finally:
        if auth is not None:
            auth.stop()
        ctx.destroy(linger=0)


def main(argv: list[str] | None = None) -> int:
    from bciarm.bus.realtime import die_with_parent

    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(Path(argv[0]).read_text())
    from bciarm.bus import sched

    sched.apply(int(spec.get("priority", 0)), int(spec.get("nice", 0)))
    run_broker(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Operator commands for a running real-time session, keys, and the bus benchmark.

``bciarm status | stop | estop | resume`` find the session through
``runtime.json``: ``--session DIR`` reads ``DIR/runtime.json``; without it
they read ``$BCIARM_RUNTIME_DIR/current.json`` (default
``/tmp/bciarm-<uid>/current.json``), which the supervisor writes when it
starts and removes when it ends.  Both name the supervisor's operator endpoint
(REQ/REP on 127.0.0.1).

An e-stop (:func:`send_estop`, shared by ``bciarm estop`` and ``bciarm
monitor``) takes two paths at once: pushed straight to every local effector
process over its e-stop line (``runtime.json`` ``estop``), which latches and
publishes its stopped state at once, and through the supervisor, which keeps
the latch (a restarted effector comes up latched), tells every effector over
the control channel as well and records the ``estop`` event.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def find_runtime(session: Path | None) -> dict[str, Any]:
    from bciarm.bus.supervisor import runtime_dir

    path = (session / "runtime.json") if session is not None else runtime_dir() / "current.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise click.ClickException(f"no running session: {path} does not exist") from None
    if info.get("state") == "ended":
        raise click.ClickException(f"the session in {info.get('session_dir')} has ended")
    return info


def operator_request(info: dict[str, Any], cmd: str, timeout_s: float = 3.0,
                     context: Any = None, **args: Any) -> dict[str, Any]:
    """Send one command (with ``args``) to the supervisor; raise ClickException if it does
    not answer.  A long-lived caller (the monitor) passes its own ``context``."""
    import zmq

    own = context is None
    ctx = zmq.Context() if own else context
    s = ctx.socket(zmq.REQ)
    s.linger = 0
    s.rcvtimeo = int(timeout_s * 1000)
    s.sndtimeo = int(timeout_s * 1000)
    try:
        s.connect(info["operator"])
        s.send(json.dumps({"cmd": cmd, **args}).encode())
        return json.loads(s.recv())
    except zmq.Again:
        raise click.ClickException(
            f"the supervisor (pid {info.get('pid')}) did not answer within {timeout_s} s") from None
    finally:
        if own:
            ctx.destroy(linger=0)
        else:
            s.close(linger=0)


class EstopLine:
    """PUSH sockets to every local effector process's e-stop line.

    Long-lived callers (the monitor) keep one connected, so a press costs one
    send per effector; a one-shot caller closes it after sending (``linger``
    lets a send still waiting for its connection out).

    Parameters
    ----------
    info : dict
        The session's ``runtime.json``.
    context : zmq.Context, optional
    """

    def __init__(self, info: dict[str, Any], context: Any = None, linger_ms: int = 200) -> None:
        import zmq

        from bciarm.bus.realtime import configure_curve

        self._own = context is None
        self.ctx = zmq.Context() if self._own else context
        self.socks = []
        for ep in info.get("estop", []):
            s = self.ctx.socket(zmq.PUSH)
            s.linger = linger_ms
            s.sndhwm = 16
            configure_curve(s, info.get("security"))
            s.connect(ep)
            self.socks.append(s)
        self._seq = 0

    def send(self, reason: str) -> int:
        """Push one ``estop`` event to every effector process; return how many took it."""
        import time

        import zmq

        from bciarm.bus import codec
        from bciarm.bus.messages import Event, Header

        frame = codec.encode("event", Event(Header(self._seq, time.monotonic_ns(), "operator"),
                                            "estop", {"reason": reason}))
        self._seq += 1
        sent = 0
        for s in self.socks:
            try:
                s.send_multipart(frame, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:  # not connected (process restarting): the supervisor's path holds
                pass
        return sent

    def close(self) -> None:
        for s in self.socks:
            s.close()
        if self._own:
            self.ctx.term()


def send_estop(info: dict[str, Any], reason: str = "operator", line: EstopLine | None = None,
               context: Any = None) -> dict[str, Any]:
    """E-stop the session: the e-stop line first, then the supervisor (see the module doc).

    Returns the supervisor's reply plus ``direct``: the effector processes the e-stop
    line reached.  Raises ClickException if the supervisor does not answer (the
    effectors on the line are latched by then)."""
    own = line is None
    if own:
        line = EstopLine(info, context)
    try:
        direct = line.send(reason)
        reply = operator_request(info, "estop", context=context)
    finally:
        if own:
            line.close()
    return {**reply, "direct": direct}


_session_opt = click.option("--session", type=click.Path(file_okay=False, path_type=Path),
                            help="Session folder (default: the current session, see README).")
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")


def _fmt(v: Any, spec: str = ".0f") -> str:
    return "—" if v is None else format(v, spec)


@click.command()
@_session_opt
@_json_opt
def status(session: Path | None, as_json: bool) -> None:
    """Every process and node of the running session: pid, state, heartbeat age, counters,
    loop-latency percentiles."""
    reply = operator_request(find_runtime(session), "status")
    if as_json:
        click.echo(json.dumps(reply))
        return
    click.echo(f"session {reply['session_dir']}  e-stop {'LATCHED' if reply['estopped'] else 'clear'}")
    click.echo(f"{'group':<10} {'node':<10} {'pid':>7} {'state':<9} {'hb age':>7} "
               f"{'recv':>8} {'sent':>8} {'rej':>5} {'drop':>5} {'p50 µs':>8} {'p99 µs':>8} rst")
    for g, p in reply["groups"].items():
        nodes = p["nodes"] or {"": {}}
        for name, n in nodes.items():
            c = n.get("counters", {})
            click.echo(f"{g:<10} {name:<10} {_fmt(p['pid'], 'd'):>7} {p['state']:<9} "
                       f"{_fmt(p['hb_age_ms']) + ' ms' if p['hb_age_ms'] is not None else '—':>7} "
                       f"{c.get('received', ''):>8} {c.get('sent', ''):>8} "
                       f"{c.get('rejected', ''):>5} {c.get('dropped', ''):>5} "
                       f"{_fmt(n.get('latency_p50_us')):>8} {_fmt(n.get('latency_p99_us')):>8} "
                       f"{p['restarts']}")
    for f in reply.get("faults", []):
        click.echo(f"fault: {f}")


@click.command()
@_session_opt
def stop(session: Path | None) -> None:
    """Stop the running session in order: effectors to zero first, recording flushed last."""
    operator_request(find_runtime(session), "stop")
    click.echo("stopping")


@click.command()
@_session_opt
def estop(session: Path | None) -> None:
    """Latch every effector to stopped (within one control tick) until `bciarm resume`."""
    send_estop(find_runtime(session), "operator (bciarm estop)")
    click.echo("e-stop latched")


@click.command()
@_session_opt
def resume(session: Path | None) -> None:
    """Clear the e-stop latch (motion needs a fresh intent)."""
    operator_request(find_runtime(session), "resume")
    click.echo("e-stop cleared")


@click.group()
def keys() -> None:
    """CURVE keys for `security: curve`."""


@keys.command("generate")
@click.argument("keys_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--client", "clients", multiple=True, default=("node",), show_default=True,
              help="Client key pair(s) to create (repeatable).")
def keys_generate(keys_dir: Path, clients: tuple[str, ...]) -> None:
    """Write the broker's key pair and client key pairs into KEYS_DIR."""
    from bciarm.bus.security import generate_keys

    d = generate_keys(keys_dir, clients)
    click.echo(f"keys in {d}: server.key(_secret), clients/*.key (admitted), private/*.key_secret")


# `bciarm bench bus`: attached to the `bench` group of bciarm.commands.bench by bciarm.cli.
@click.command("bus")
@click.option("--seconds", type=float, default=30.0, show_default=True)
@click.option("--rate", type=float, default=1000.0, show_default=True, help="frames per second")
@click.option("--channels", type=int, default=1024, show_default=True)
@click.option("--no-ezmsg", is_flag=True, help="Skip the ezmsg run.")
@click.option("--rt-priority", type=click.IntRange(0, 99), default=0, show_default=True,
              help="SCHED_FIFO priority for every variant's processes (root); 0: normal.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def bench_bus(seconds: float, rate: float, channels: int, no_ezmsg: bool, rt_priority: int,
              as_json: bool) -> None:
    """End-to-end latency source → decoder → effector, three processes: bciarm bus,
    bare pyzmq (the floor) and ezmsg (extra `bench`)."""
    from bciarm.bench.bus import run_all

    figures = run_all(seconds=seconds, rate=rate, channels=channels, ezmsg=not no_ezmsg,
                      progress=lambda s: click.echo(s, err=True), rt_priority=rt_priority)
    if as_json:
        click.echo(json.dumps(figures))
    else:
        for k, v in figures.items():
            click.echo(f"{k:<16} {v}")
    sys.stdout.flush()

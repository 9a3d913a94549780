"""``bciarm monitor``: the clinician's web console attached to a running session, and the
operator commands it adds to the command line (``bciarm pause | start-block | assist | gain``)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from bciarm.commands.realtime import find_runtime, operator_request

#: Environment variable that fixes the session token (else a random one is made).
TOKEN_ENV = "BCIARM_MONITOR_TOKEN"


def run_monitor(observer: Any, host: str, port: int, token: str | None,
                on_url: Any = None) -> None:
    """Serve the monitor for ``observer`` until Ctrl-C (blocking)."""
    from bciarm.monitor.app import Monitor, serve

    mon = Monitor(observer, token=token)
    mon.start()
    server = serve(mon, host=host, port=port)
    url = f"http://{host}:{port}/?token={mon.token}"
    (on_url or (lambda u: click.echo(f"monitor: {u}", err=True)))(url)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: bound to {host}: anyone who can reach it and has the token "
                   "can e-stop and steer the session", err=True)
    try:
        server.run()
    finally:
        mon.close()


@click.command("monitor")
@click.option("--session", type=click.Path(file_okay=False, path_type=Path),
              help="Real-time session folder to attach to (default: the current session).")
@click.option("--run", "run_config", metavar="CONFIG",
              help="Instead of attaching: run CONFIG inline in this process (paced at real "
                   "time) and monitor it.")
@click.option("--replay", "replay", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Instead of attaching: play a finished session folder's log back "
                   "(read-only).")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="With --replay: playback speed.")
@click.option("--seed", type=int, help="With --run: the session seed.")
@click.option("--duration", type=float, help="With --run: simulated closed-loop seconds.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("sessions"),
              show_default=True, help="With --run: where the session folder goes.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (keep 127.0.0.1 unless the network is trusted).")
@click.option("--port", type=int, default=8765, show_default=True)
def monitor(session: Path | None, run_config: str | None, replay: Path | None, speed: float,
            seed: int | None, duration: float | None, out: Path, host: str, port: int) -> None:
    """Web console for a running session: node health, effector and target, decoded
    velocity, firing rates, task metrics, event log; E-STOP (button or Space), resume,
    pause/start block, assist level, decoder gain. Prints the URL with its session token."""
    from bciarm.monitor.observer import CommandError, RealtimeObserver

    token = os.environ.get(TOKEN_ENV) or None
    if replay is not None:
        from bciarm.monitor.observer import ReplayObserver

        try:
            run_monitor(ReplayObserver(replay, speed), host, port, token)
        except CommandError as exc:
            raise click.ClickException(str(exc)) from None
        return
    if run_config is None:
        try:
            observer = RealtimeObserver(session)
        except CommandError as exc:
            raise click.ClickException(f"{exc} (start one with `bciarm run CONFIG --mode "
                                       "realtime`, or use `bciarm monitor --run CONFIG`)") from None
        run_monitor(observer, host, port, token)
        return
    from bciarm.config import ConfigError, load_config
    from bciarm.monitor.inline import ConsoleSession, InlineObserver

    try:
        cfg, _ = load_config(run_config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    sess = ConsoleSession(cfg, seed=seed, out_dir=out, duration_s=duration, pace=1.0,
                          argv=sys.argv)
    thread = threading.Thread(target=_run_session, args=(sess,), daemon=True)
    thread.start()
    run_monitor(InlineObserver(sess), host, port, token)


def _run_session(sess: Any) -> None:
    try:
        result = sess.run()
        click.echo(f"session ended; saved in {result.session_dir} (Ctrl-C quits the monitor; "
                   f"`bciarm report {result.session_dir}` writes the report)", err=True)
    except Exception as exc:  # noqa: BLE001 - shown, the monitor keeps the last state
        click.echo(f"session failed: {exc}", err=True)


# ---------------------------------------------------------------- command-line operator commands

_session_opt = click.option("--session", type=click.Path(file_okay=False, path_type=Path),
                            help="Session folder (default: the current session).")


def _send(session: Path | None, cmd: str, **args: Any) -> dict[str, Any]:
    reply = operator_request(find_runtime(session), cmd, **args)
    if not reply.get("ok"):
        raise click.ClickException(str(reply.get("error")))
    return reply


@click.command("pause")
@_session_opt
def pause(session: Path | None) -> None:
    """Hold the running real-time session before its next block (until `bciarm start-block`)."""
    _send(session, "pause")
    click.echo("holding at the next block boundary")


@click.command("start-block")
@_session_opt
def start_block(session: Path | None) -> None:
    """Release a hold: the next block starts."""
    _send(session, "start")
    click.echo("next block released")


@click.command("assist")
@click.argument("level", type=click.FloatRange(0, 1))
@_session_opt
def assist(level: float, session: Path | None) -> None:
    """Set the computer-assistance level (0 = none, 1 = full) of the running session."""
    _send(session, "assist", level=level)
    click.echo(f"assist level {level}")


@click.command("gain")
@click.argument("gain", type=click.FloatRange(0, 3))
@_session_opt
def gain(gain: float, session: Path | None) -> None:
    """Scale the decoded velocity of the running session by GAIN (1 = as decoded)."""
    _send(session, "gain", gain=gain)
    click.echo(f"decoder gain {gain}")

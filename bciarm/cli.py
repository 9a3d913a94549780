"""Command line: ``bciarm run | configs | log``.

Human-readable output (progress bar, tables) goes to stderr; with ``--json``
stdout's last line is one JSON object, so scripts can parse it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import bciarm
from bciarm import registry
from bciarm.commands import load_command
from bciarm.config import ConfigError, load_config
from bciarm.drivers.base import DriverError

err_console = Console(stderr=True)


#: Table columns when a task declares none: (key, header, format).
DEFAULT_COLUMNS = (("trials", "trials", "{}"), ("success_rate", "success", "{:.1%}"))


def _metrics_table(metrics: dict[str, Any],
                   columns: tuple[tuple[str, str, str], ...] = ()) -> Table:
    """The session's metrics, one row per block; columns as the task declares them."""
    columns = tuple(columns) or DEFAULT_COLUMNS
    table = Table(title="Session performance", title_justify="left",
                  caption="* open loop: the effector moved by itself while the user watched",
                  caption_justify="left")
    table.add_column("block", no_wrap=True)
    for _, header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)

    def row(name: str, m: dict[str, Any]) -> None:
        cells = []
        for key, _, fmt in columns:
            value = m.get(key)
            cells.append("—" if value is None else fmt.format(value))
        table.add_row(name, *cells)

    row("calibration*", metrics["calibration"])
    for name, m in metrics["blocks"].items():
        row(name, m)
    table.add_section()
    row("closed loop", metrics)
    return table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(bciarm.__version__, prog_name="bciarm")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """bciarm: decoded brain activity to safe, smooth motion of assistive effectors."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


@main.command()
@click.argument("config")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Simulated seconds of closed-loop control (split over the blocks); "
                   "default: each block runs its configured number of trials.")
@click.option("--seed", type=int, help="Session seed (default: the config's).")
@click.option("--gui", is_flag=True, help="Show the pybullet GUI, paced at real time.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("sessions"),
              show_default=True, help="Folder that receives the session folder.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the metrics as one JSON object on the last line of stdout.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value before validation (repeatable), e.g. "
                   "--set nodes.source.params.n_channels=48")
@click.option("--mode", type=click.Choice(["inline", "realtime"]), default="inline",
              show_default=True, help="inline: one process, simulated clock, deterministic; "
                                      "realtime: a process per node, ZeroMQ bus, wall clock.")
def run(config: str, duration: float | None, seed: int | None, gui: bool, out: Path,
        as_json: bool, overrides: tuple[str, ...] = (), mode: str = "inline") -> None:
    """Run a session from CONFIG (a YAML path or a built-in name, e.g. arm_center_out)."""
    from bciarm.session import Session

    if mode == "realtime":
        from bciarm.realtime_session import RealtimeSession as Session  # noqa: N814

    try:
        cfg, path = load_config(config, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    progress = Progress(TextColumn("[bold]{task.description:<14}"), BarColumn(),
                        TextColumn("{task.fields[trials]}"),
                        TextColumn("sim {task.fields[sim]:>6.1f} s"), TimeElapsedColumn(),
                        console=err_console, transient=False)
    bar = progress.add_task("starting", total=None, sim=0.0, trials="")
    state = {"last": -1.0}

    def on_progress(block: str, done: int, total: int | None, sim_s: float) -> None:
        if sim_s - state["last"] >= 0.5:  # redraw at most every half simulated second
            state["last"] = sim_s
            trials = f"{done}/{total} trials" if total else f"{done} trials"
            progress.update(bar, description=block, completed=done, total=total, sim=sim_s,
                            trials=trials)

    session = Session(cfg, seed=seed, out_dir=out, duration_s=duration, gui=gui,
                      progress=on_progress, argv=sys.argv)
    err_console.print(f"[bold]bciarm {bciarm.__version__}[/bold]: {cfg.name} from {path}, "
                      f"seed {session.config.seed}")
    try:
        with progress:
            result = session.run()
            # The last trial ends a block between two redraws: show the final count.
            done = sum(b.trials for b in result.blocks)
            progress.update(bar, completed=done, total=max(done, progress.tasks[0].total or 0),
                            trials=f"{done} trials", sim=result.metrics.get("simulated_s", 0.0))
    except KeyboardInterrupt:
        err_console.print("[red]interrupted: effectors stopped, recording closed[/red]")
        sys.exit(130)
    except (DriverError, registry.RegistryError, ConfigError) as exc:
        # Expected, user-fixable failures: say what and where, no traceback.
        where = f" (partial session in {session.session_dir})" if session.session_dir else ""
        raise click.ClickException(f"{exc}{where}") from None
    m = result.metrics
    err_console.print(_metrics_table(m, result.table_columns))
    err_console.print(f"realtime factor {m['realtime_factor']:.1f}× "
                      f"({m['simulated_s']:.0f} s simulated in {m['wall_s']:.1f} s)")
    err_console.print(f"session saved in [bold]{result.session_dir}[/bold]")
    if as_json:
        # Each task names its own keys (center_out: trials, success_rate, ...;
        # navigation: goals, goal_success_rate, ...), session_dir last.
        # NaN (e.g. grasp_success_rate of a task without grasps) is no JSON: null.
        click.echo(json.dumps({k: (None if isinstance(m[k], float) and not math.isfinite(m[k])
                                   else m[k]) for k in result.json_keys}))


@main.command("configs")
def list_configs() -> None:
    """List the built-in configs and registered components."""
    click.echo("built-in configs: " + ", ".join(registry.config_names()))
    for kind in registry.KINDS:
        click.echo(f"{kind}s: " + ", ".join(registry.names(kind)))


@main.command("log")
@click.argument("session", type=click.Path(exists=True, path_type=Path))
def show_log(session: Path) -> None:
    """Summarise a session's message log (topics, counts, integrity)."""
    from collections import Counter

    from bciarm.record import LOG_NAME, LogReader

    path = session / LOG_NAME if session.is_dir() else session
    reader = LogReader(path)
    counts = Counter(rec.topic for rec in reader)
    for topic, n in sorted(counts.items()):
        click.echo(f"{topic:<20} {n:>9}")
    click.echo(f"{reader.records} records, {reader.valid_bytes} bytes"
               + (" — TRUNCATED tail (crash?); everything above is intact" if reader.truncated else ""))


from bciarm.commands import realtime as _rt  # noqa: E402  (real-time runtime commands)

main.add_command(_rt.status)
main.add_command(_rt.stop)
main.add_command(_rt.estop)
main.add_command(_rt.resume)
main.add_command(_rt.keys)
main.add_command(load_command("bciarm.commands.decode:decode"))
main.add_command(load_command("bciarm.commands.check_driver:check_driver"))
main.add_command(load_command("bciarm.commands.report:report"))  # issue 9: clinician's console
main.add_command(load_command("bciarm.commands.monitor:monitor"))
main.add_command(load_command("bciarm.commands.session:session"))
for _op in ("pause", "start_block", "assist", "gain"):  # operator commands beside estop/resume
    main.add_command(load_command(f"bciarm.commands.monitor:{_op}"))
main.add_command(load_command("bciarm.commands.export:export"))
_bench = load_command("bciarm.commands.bench:bench")
_bench.add_command(_rt.bench_bus)  # bciarm bench bus
main.add_command(_bench)



def run() -> None:
    """The ``bciarm`` console entry point: :func:`main`, then the process's exit.

    A device library may leave a call running in a thread (the Franka Hand's,
    see :func:`bciarm.drivers.franka_hand.exit_if_calls_pending`); then the
    process exits at once with the command's status rather than through
    interpreter shutdown, which would abort it.
    """
    try:
        main()
    except SystemExit as exc:
        hand = sys.modules.get("bciarm.drivers.franka_hand")
        if hand is not None:
            hand.exit_if_calls_pending(exc.code)
        raise


if __name__ == "__main__":  # pragma: no cover
    run()

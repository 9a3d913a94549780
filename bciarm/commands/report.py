"""``bciarm report SESSION``: a self-contained HTML report of a finished session."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("session", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML (default: SESSION/report.html).")
def report(session: Path, out: Path | None) -> None:
    """Write an HTML report of SESSION: trajectories, success over time, time to target,
    tuning curves, latency, safety events and a metrics table per block."""
    from bciarm.report import build_report

    try:
        path = build_report(session, out)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))

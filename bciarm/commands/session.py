"""``bciarm session PLAN.yaml``: a multi-block clinical session with operator confirmations."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import click


@click.command("session")
@click.argument("plan_path", metavar="PLAN", type=click.Path(exists=True, dir_okay=False,
                                                             path_type=Path))
@click.option("--yes", "unattended", is_flag=True,
              help="Unattended: start every block without asking (recorded as '--yes').")
@click.option("--monitor", "with_monitor", is_flag=True,
              help="Serve the web monitor; confirm blocks there ('Start block'). The session "
                   "then runs at real time.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Monitor address.")
@click.option("--port", type=int, default=8765, show_default=True, help="Monitor port.")
@click.option("--seed", type=int, help="Session seed (default: the plan's, else the config's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("sessions"),
              show_default=True)
@click.option("--report", "write_report", is_flag=True, help="Write report.html at the end.")
def session(plan_path: Path, unattended: bool, with_monitor: bool, host: str, port: int,
            seed: int | None, out: Path, write_report: bool) -> None:
    """Run the blocks of PLAN (calibration, closed loop, ReFIT/CLDA, assessment), waiting for
    the operator before each block (terminal prompt, or the monitor with --monitor) unless
    --yes. The plan, each block's decoder and every operator action are recorded."""
    from bciarm.cli import _metrics_table, err_console
    from bciarm.config import ConfigError
    from bciarm.plans import PlanSession, load_plan

    try:
        plan, cfg = load_plan(plan_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None

    def on_hold(block: str) -> None:
        if with_monitor:
            click.echo(f"waiting for the operator: 'Start block' in the monitor starts {block!r}",
                       err=True)
            return
        # Terminal confirmation (in the session thread: nothing moves meanwhile).
        answer = click.prompt(f"start block {block!r}? [Enter = start, q = stop]", default="",
                              show_default=False, err=True)
        if answer.strip().lower() in ("q", "quit", "stop"):
            raise click.Abort()
        sess.post("start", by="terminal")

    sess = PlanSession(plan, cfg, plan_path=plan_path, unattended=unattended, seed=seed,
                       out_dir=out, pace=1.0 if with_monitor else None, on_hold=on_hold,
                       argv=sys.argv)
    kinds = ", ".join(f"{b.name} ({b.kind})" for b in plan.blocks)
    err_console.print(f"[bold]plan {plan.name}[/bold]: {kinds}; subject "
                      f"{cfg.privacy.subject_id}, seed {sess.config.seed}")
    result: dict[str, Any] = {}
    if with_monitor:
        import os

        from bciarm.commands.monitor import TOKEN_ENV, run_monitor
        from bciarm.monitor.inline import InlineObserver

        def body() -> None:
            try:
                result["r"] = sess.run()
                err_console.print(f"session ended: {result['r'].session_dir} "
                                  "(Ctrl-C quits the monitor)")
            except BaseException as exc:  # noqa: BLE001
                result["error"] = exc
                err_console.print(f"[red]session failed: {exc}[/red]")

        threading.Thread(target=body, daemon=True).start()
        run_monitor(InlineObserver(sess), host, port, os.environ.get(TOKEN_ENV) or None)
        if "r" not in result:
            raise click.ClickException("the session did not finish")
    else:
        try:
            result["r"] = sess.run()
        except click.Abort:
            where = f" (partial session in {sess.session_dir})" if sess.session_dir else ""
            raise click.ClickException(f"stopped by the operator before block "
                                       f"{sess.waiting_for!r}{where}") from None
    r = result["r"]
    err_console.print(_metrics_table(r.metrics, r.table_columns))
    err_console.print(f"session saved in [bold]{r.session_dir}[/bold] (plan record: plan.json)")
    if write_report:
        from bciarm.report import build_report

        click.echo(str(build_report(r.session_dir)))
    else:
        click.echo(str(r.session_dir))

"""``bciarm check-driver NAME [--param k=v ...]``: the shipped driver checks against a device.

For a rehab team before a session: connect, read the state, a small safe
motion, stop within the bound, the driver's watchdog, bad commands, close —
each reported in plain language; exit status 0 when every check passed, 1
when one failed, 2 when the driver could not be set up (unknown name,
missing extra, bad parameter).

``--param simulate=true`` runs the checks against the driver's own
simulated rig (``contract_instance()``: CANopen drives on a virtual bus,
franky-sim for the Franka, the ur_rtde test double for the UR) instead of
hardware.
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any, Callable

import click
import yaml
from rich.console import Console
from rich.markup import escape

from bciarm import registry
from bciarm.drivers.base import Driver
from bciarm.testing.driver_checks import CheckStep, DriverCheckReport, run_driver_checks

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_MARK = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[yellow]SKIP[/yellow]"}


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("host=127.0.0.1", "node_ids=[1, 2]")`` → ``{"host": "127.0.0.1", "node_ids": [1, 2]}``.

    Values are read as YAML scalars/lists (numbers, true/false, lists); an
    address such as ``127.0.0.1`` stays a string.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. host=127.0.0.1)",
                                     param_hint="--param")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        params[key] = value
    return params


def driver_factory(name: str, params: dict[str, Any]) -> tuple[Callable[[], Driver], str]:
    """A factory for driver ``name`` with ``params``, and a description of the target.

    Raises
    ------
    click.UsageError
        Unknown parameter (the message lists the driver's parameters), or
        ``simulate=true`` for a driver that has no simulated rig.
    registry.RegistryError
        Unknown driver or missing optional dependency.
    """
    cls = registry.resolve("driver", name)
    simulate = bool(params.pop("simulate", False))
    if simulate:
        make = getattr(cls, "contract_instance", None)
        if make is None:
            raise click.UsageError(
                f"driver {name!r} has no simulated rig (contract_instance); it is itself "
                f"{'a simulation' if getattr(cls, 'simulated', False) else 'hardware only'}: "
                "drop simulate=true")
        if params:
            raise click.UsageError(f"simulate=true takes no other parameters (got "
                                   f"{', '.join(sorted(params))})")
        return make, f"{cls.__name__} on its simulated rig"
    sig = inspect.signature(cls)
    accepted = [p for p in sig.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names = {p.name for p in accepted}
    unknown = sorted(set(params) - names)
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        listing = ", ".join(f"{p.name}={p.default!r}" for p in accepted) or "(none)"
        raise click.UsageError(f"driver {name!r} has no parameter {', '.join(unknown)}; its "
                               f"parameters (with defaults) are: {listing}")
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return (lambda: cls(**params)), f"{cls.__name__}" + (f" ({shown})" if shown else "")


def _print_step(step: CheckStep) -> None:
    err_console.print(f"  {_MARK[step.ok]}  {step.name:<13} {escape(step.detail)}")


def _summary(name: str, report: DriverCheckReport) -> str:
    ran = [s for s in report.steps if s.ok is not None]
    skipped = len(report.steps) - len(ran)
    extra = f" ({skipped} skipped)" if skipped else ""
    if report.passed:
        return f"PASSED: {len(ran)} of {len(ran)} checks{extra}; {name} is ready."
    failed = ", ".join(s.name for s in report.failures)
    return (f"FAILED: {len(report.failures)} check(s) failed ({failed}); do not run a session "
            f"on {name} until this is fixed.")


@click.command("check-driver")
@click.argument("name")
@click.option("--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="Driver parameter (repeatable), e.g. --param host=127.0.0.1; "
                   "simulate=true uses the driver's simulated rig.")
@click.option("--stop-within", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, metavar="S",
              help="Bound on coming to rest after stop() (and after the watchdog's timeout), s.")
@click.option("--speed-limit", is_flag=True,
              help="Also check that a 10x command is clamped (moves every joint at its full "
                   "speed limit for ~50 ms).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as one JSON object on the last line of stdout.")
def check_driver(name: str, pairs: tuple[str, ...], stop_within: float, speed_limit: bool,
                 as_json: bool) -> None:
    """Check driver NAME against its device: connect, read, move a little, stop, watchdog, close.

    The device MOVES (about 0.04 rad per joint): keep the workspace clear and
    the emergency stop at hand.  Exit status 0: every check passed; 1: a
    check failed; 2: the driver could not be set up.
    """
    try:
        make, target = driver_factory(name, parse_params(pairs))
    except registry.RegistryError as exc:
        raise click.UsageError(str(exc)) from None
    err_console.print(f"[bold]bciarm check-driver {name}[/bold]: {escape(target)}")
    report = run_driver_checks(make, stop_within_s=stop_within, speed_limit=speed_limit,
                               progress=_print_step)
    summary = _summary(name, report)
    err_console.print(("[green]" if report.passed else "[red]") + escape(summary)
                      + ("[/green]" if report.passed else "[/red]"))
    for step in report.failures:
        err_console.print(f"[red]{escape(step.name)}[/red]: {escape(step.detail)}")
    if as_json:
        click.echo(json.dumps({"name": name, "target": target, **report.as_dict(),
                               "summary": summary}))
    sys.exit(0 if report.passed else 1)

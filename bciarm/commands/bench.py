"""``bciarm bench decoder|bus [--json]``: benchmarks that print figures and JSON.

``bench decoder`` (here) times one Kalman step; ``bench bus`` (in
:mod:`bciarm.commands.realtime`) times the real-time bus end to end.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

err_console = Console(stderr=True)


@click.group("bench")
def bench() -> None:
    """Benchmarks."""


def _sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give comma-separated integers, e.g. 96,192") from None


@bench.command("decoder")
@click.option("--channels", default="96,192,1024,4096,10000", show_default=True,
              help="Comma-separated channel counts N.")
@click.option("--state-dims", default="3,5,7", show_default=True,
              help="Comma-separated state dimensions d (kinematics + constant).")
@click.option("--impl", "impls", multiple=True, metavar="NAME",
              help="Only these implementations (repeatable); default: all.")
@click.option("--budget", type=click.FloatRange(0.01, 10), default=0.25, show_default=True,
              help="Seconds of timing per implementation and size.")
@click.option("--blas-threads", type=click.IntRange(0), default=1, show_default=True,
              help="Threads of every BLAS/OpenMP pool for the whole run, the same for all "
                   "implementations; 0 leaves the pools' own defaults.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"results": [...]} as one JSON object on the last line of stdout.')
def decoder(channels: str, state_dims: str, impls: tuple[str, ...], budget: float,
            blas_threads: int, as_json: bool) -> None:
    """Per-step latency (median, p99) of bciarm's steady/full updates and references.

    Every implementation runs with the same BLAS threading (reported on
    stderr); a timing sample is the fewest consecutive steps lasting 5 us,
    divided by their number. The references (filterpy, pykalman,
    neural-decoding) come with the benchmark-only extra: pip install 'bciarm[bench]'.
    """
    from bciarm.decoders.bench import IMPLS, ratios, run_bench

    chosen = list(impls) or list(IMPLS)
    try:
        results = run_bench(_sizes(channels), _sizes(state_dims), chosen, budget_s=budget,
                            progress=lambda line: err_console.print(line, highlight=False),
                            blas_threads=blas_threads or None)
    except ModuleNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--impl") from None
    table = Table(title="Kalman step latency (µs)", title_justify="left")
    for col in ("impl", "N", "d", "median", "p99"):
        table.add_column(col, justify="right" if col != "impl" else "left")
    for r in results:
        table.add_row(r["impl"], str(r["n_channels"]), str(r["state_dim"]),
                      f"{r['median_us']:.2f}", f"{r['p99_us']:.2f}")
    err_console.print(table)
    for name, value in ratios(results).items():
        err_console.print(f"{name} (d=7): " + ("n/a" if value is None else f"{value:.1f}×"))
    if as_json:
        click.echo(json.dumps({"results": results}))


@bench.command("lsl")
@click.option("--seconds", type=click.FloatRange(0.5, 3600), default=20.0, show_default=True,
              help="Length of the stream, s.")
@click.option("--rate", type=click.FloatRange(1, 100000), default=1000.0, show_default=True,
              help="Sample rate of the outlet, Hz.")
@click.option("--channels", type=click.IntRange(1, 65536), default=256, show_default=True)
@click.option("--bin-s", type=click.FloatRange(0.001, 1.0), default=0.01, show_default=True,
              help="Bin width the source re-bins to, s.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the figures as one JSON object on the last line of stdout.")
def lsl(seconds: float, rate: float, channels: int, bin_s: float, as_json: bool) -> None:
    """A real LSL outlet (another process) into the lsl source: every sample counted.

    Exits non-zero if a sample was lost or a frame does not hold the samples it must.
    """
    from bciarm.bench.lsl import run_lsl_bench

    try:
        figures = run_lsl_bench(seconds=seconds, rate=rate, channels=channels, bin_s=bin_s,
                                progress=lambda line: err_console.print(line, highlight=False))
    except (RuntimeError, ModuleNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title="LSL input", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, str(value))
    err_console.print(table)
    if as_json:
        click.echo(json.dumps(figures))
    if figures["lost_samples"] or figures["bad_frames"] or figures["out_of_order"] or \
            figures["frames"] + figures["stale_dropped"] != figures["frames_expected"]:
        raise click.ClickException("samples were lost or frames are wrong (see the table)")

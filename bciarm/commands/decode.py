"""``bciarm decode DATA [--decoder NAME] [--json]``: offline decoder evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

err_console = Console(stderr=True)

#: Keys of the JSON line, in order (per-dimension lists follow their means).
JSON_KEYS = ("kalman_mean_r2", "kalman_r2", "kalman_corr",
             "best_mean_r2", "best_decoder", "best_r2", "best_corr",
             "reference_kf_mean_r2", "reference_kf_r2", "reference_kf_corr",
             "reference_wiener_mean_r2", "reference_wiener_r2", "reference_wiener_corr")


def _table(result: dict) -> Table:
    table = Table(title=f"Velocity decoding, last {result['n_test']} of {result['n_bins']} bins "
                        f"({result['data']})", title_justify="left")
    for col in ("decoder", "R² per dim", "corr per dim", "mean R²", "chosen by CV (train only)"):
        table.add_column(col)

    def fmt(xs: list[float] | None) -> str:
        return "—" if xs is None else " / ".join(f"{x:.3f}" for x in xs)

    for name, d in result["decoders"].items():
        table.add_row(name + (" (best)" if name == result["best_decoder"] else ""),
                      fmt(d["r2"]), fmt(d["corr"]), f"{d['mean_r2']:.3f}", d["chosen"])
    for key, label in (("reference_kf", "ref: neural-decoding KF"),
                       ("reference_wiener", "ref: Wiener, 10 bins, LS")):
        if result.get(f"{key}_mean_r2") is not None:
            table.add_row(label, fmt(result[f"{key}_r2"]), fmt(result[f"{key}_corr"]),
                          f"{result[f'{key}_mean_r2']:.3f}", "")
    return table


@click.command("decode")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--decoder", "decoder_names", multiple=True, metavar="NAME",
              help="Evaluate only this decoder (repeatable; default: all with a search grid).")
@click.option("--train-fraction", type=click.FloatRange(0.1, 0.95), default=0.8, show_default=True)
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True,
              help="Blocked cross-validation folds inside the training part.")
@click.option("--no-references", is_flag=True,
              help="Skip the reference decoders (neural-decoding KF needs the 'bench' extra).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the results as one JSON object on the last line of stdout.")
def decode(data: Path, decoder_names: tuple[str, ...], train_fraction: float, folds: int,
           no_references: bool, as_json: bool) -> None:
    """Evaluate decoders offline on DATA (.mat, session folder or .nwb)."""
    from bciarm.decoders.datasets import RecordingError, load_recording
    from bciarm.decoders.evaluate import DEFAULT_GRIDS, evaluate

    unknown = sorted(set(decoder_names) - set(DEFAULT_GRIDS))
    if unknown:
        raise click.BadParameter(f"{unknown}: decoders with a search grid are {sorted(DEFAULT_GRIDS)}",
                                 param_hint="--decoder")
    try:
        rec = load_recording(data)
    except RecordingError as exc:
        raise click.ClickException(str(exc)) from None
    err_console.print(f"{rec.source}: {rec.counts.shape[0]} bins of {rec.dt * 1000:.0f} ms, "
                      f"{rec.counts.shape[1]} channels, {rec.velocity.shape[1]}-D velocity")
    try:
        result = evaluate(rec, list(decoder_names) or None, train_fraction, folds,
                          references=not no_references)
    except ModuleNotFoundError as exc:
        raise click.ClickException(f"{exc} (or pass --no-references)") from None
    err_console.print(_table(result))
    for name, d in result["decoders"].items():
        ch = d["channels"]
        if ch and ch["excluded"]:
            err_console.print(f"{name}: excluded channels {ch['excluded']} "
                              f"(dead {ch['dead']}, noisy {ch['noisy']})")
    err_console.print(f"done in {result['wall_s']:.1f} s")
    if as_json:
        out = {k: result.get(k) for k in JSON_KEYS}
        out["decoders"] = result["decoders"]
        click.echo(json.dumps(out))

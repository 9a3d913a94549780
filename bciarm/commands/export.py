"""``bciarm export SESSION --nwb OUT.nwb``: a session folder as one NWB file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console

err_console = Console(stderr=True)


def inspect_nwb(path: Path) -> list[dict[str, Any]]:
    """nwbinspector's findings on ``path`` (importance, check, location, message)."""
    try:
        from nwbinspector import inspect_nwbfile
    except ModuleNotFoundError:
        raise click.ClickException("--inspect needs nwbinspector (pip install nwbinspector)") \
            from None
    out = []
    for msg in inspect_nwbfile(nwbfile_path=str(path)):
        if msg is None:
            continue
        out.append({"importance": msg.importance.name, "check": msg.check_function_name,
                    "object": f"{msg.object_type} {msg.object_name}",
                    "location": msg.location or "", "message": msg.message})
    return out


@click.command("export")
@click.argument("session", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--nwb", "nwb_out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              metavar="OUT.nwb", help="The NWB file to write.")
@click.option("--subject-id", help="Pseudonymous subject id (default: a hash of the config "
                                   "name and the source's population_seed). Never a name.")
@click.option("--species", help="Subject species, e.g. 'Homo sapiens' (NWB metadata).")
@click.option("--age", help="Subject age, ISO 8601 duration or range (default 'P18Y/': an "
                            "adult, exact age withheld).")
@click.option("--experimenter", multiple=True, help="'Last, First' (repeatable).")
@click.option("--institution", help="Institution (NWB metadata).")
@click.option("--overwrite", is_flag=True, help="Replace OUT.nwb if it exists.")
@click.option("--inspect", "run_inspector", is_flag=True,
              help="Run nwbinspector on the file; exit non-zero on a CRITICAL finding.")
@click.option("--json", "as_json", is_flag=True,
              help="Print what was written (and the inspector's counts) as one JSON object.")
def export(session: Path, nwb_out: Path, subject_id: str | None, species: str | None,
           age: str | None, experimenter: tuple[str, ...], institution: str | None, overwrite: bool,
           run_inspector: bool, as_json: bool) -> None:
    """Export SESSION (a session folder) to NWB: neural counts, decoded intent, effector
    kinematics, trials, blocks and session metadata."""
    from bciarm.record.nwb import NwbError, export_session

    try:
        summary = export_session(session, nwb_out, subject_id=subject_id, species=species,
                                 age=age, experimenter=list(experimenter) or None,
                                 institution=institution, overwrite=overwrite,
                                 progress=lambda s: err_console.print(s, highlight=False))
    except NwbError as exc:
        raise click.ClickException(str(exc)) from None
    err_console.print(
        f"wrote [bold]{nwb_out}[/bold]: {summary['neural_frames']} frames × "
        f"{summary['channels']} channels, {summary['intents']} decoded intents, {summary['states']} "
        f"effector states ({', '.join(summary['effectors']) or 'none'}), {summary['trials']} "
        f"trials, {summary['epochs']} blocks; subject {summary['subject_id']}")
    critical = 0
    if run_inspector:
        findings = inspect_nwb(nwb_out)
        counts: dict[str, int] = {}
        for f in findings:
            counts[f["importance"]] = counts.get(f["importance"], 0) + 1
            err_console.print(f"  {f['importance']}: {f['check']} — {f['object']} "
                              f"{f['location']}: {f['message']}", highlight=False)
        critical = counts.get("CRITICAL", 0) + counts.get("ERROR", 0)
        err_console.print(f"nwbinspector: {len(findings)} finding(s) {counts or ''}; "
                          f"{'no CRITICAL issue' if not critical else 'CRITICAL issues'}")
        summary["inspector"] = counts
    if as_json:
        click.echo(json.dumps(summary))
    if critical:
        raise click.ClickException("nwbinspector found CRITICAL issues (see above)")

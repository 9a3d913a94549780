"""NWB (Neurodata Without Borders) export and reading of bciarm sessions, with pynwb.

:func:`export_session` turns a session folder into one ``.nwb`` file:

=====================================================  =============================================
NWB location                                           content
=====================================================  =============================================
``processing/ecephys/SpikeCounts``                     neural frames: (T, N) counts, one row per bin,
                                                       stamped with the bin's acquisition time
``processing/behavior/DecodedIntent``                  the decoder's intent (T, k), task axes
``processing/behavior/AutopilotIntent``                the task's autopilot intent (calibration)
``processing/behavior/Position/<effector>_position``   effector end point / base, world frame, m
``processing/behavior/<effector>_velocity``            its measured velocity, m/s
``processing/behavior/<effector>_joint_position``      joint positions (URDF joint order), rad
``processing/behavior/<effector>_joint_velocity``      joint velocities, rad/s
``trials``                                             one row per trial (``trials.csv``): start,
                                                       stop, block, mode, target, outcome, ...
``epochs``                                             calibration and closed-loop blocks
``subject``                                            a pseudonymous subject id (never a name)
``session_start_time``, ``session_id``, ``source_script``,
``data_collection`` (the resolved config YAML), ``notes`` (``session.json``)
=====================================================  =============================================

Times are seconds on the session clock: the simulated clock of an inline
session (0 at its start), or the monotonic clock of a real-time session
minus its first recorded message.

:func:`read_nwb` reads such a file back (and, as far as it can, a foreign
one) into plain arrays; :mod:`bciarm.decoders.datasets` (``bciarm decode``)
and the ``replay`` source use it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import bciarm
from bciarm.bus.messages import EffectorState, Event, Intent, NeuralFrame

__all__ = ["NwbError", "NwbSession", "export_session", "pseudonymous_subject_id", "read_nwb"]

NS = 1e9
#: Datasets larger than this (bytes) are gzip-compressed.
COMPRESS_ABOVE = 64 * 1024


class NwbError(ValueError):
    """Not a session folder / not a readable NWB file; the message says why and what to do."""


def _pynwb() -> Any:
    try:
        import pynwb
    except ModuleNotFoundError:
        raise NwbError("NWB needs pynwb, which is not installed (pip install 'bciarm[nwb]')") \
            from None
    return pynwb


# ---------------------------------------------------------------------- export


@dataclass
class _Collected:
    """Everything read from the message log, as arrays."""

    neural_t: list[int] = field(default_factory=list)
    neural_pub: list[int] = field(default_factory=list)
    neural: list[np.ndarray] = field(default_factory=list)
    bin_s: float | None = None
    intent_t: list[int] = field(default_factory=list)
    intent: list[np.ndarray] = field(default_factory=list)
    intent_src: list[str] = field(default_factory=list)
    intent_space: str = "cartesian"
    states: dict[str, dict[str, list]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    first_t: int | None = None


def _collect(log_path: Path, progress: Callable[[str], None]) -> _Collected:
    from bciarm.record import read_messages

    c = _Collected()
    n = 0
    for topic, msg in read_messages(log_path):
        n += 1
        if n % 50_000 == 0:
            progress(f"  read {n} messages")
        t = msg.header.t_ns
        if c.first_t is None or t < c.first_t:
            c.first_t = t
        if isinstance(msg, NeuralFrame):
            c.neural_t.append(msg.header.neural_t_ns if msg.header.neural_t_ns >= 0 else t)
            c.neural_pub.append(t)
            c.neural.append(msg.counts)
            c.bin_s = c.bin_s or float(msg.bin_s)
        elif isinstance(msg, Intent):
            c.intent_t.append(t)
            c.intent.append(msg.velocity)
            c.intent_src.append(msg.header.src)
            c.intent_space = msg.space
        elif isinstance(msg, EffectorState):
            s = c.states[topic.removeprefix("state.")]
            s["t"].append(t)
            s["position"].append(msg.position)
            s["velocity"].append(msg.velocity)
            s["joint_position"].append(msg.joint_position)
            s["joint_velocity"].append(msg.joint_velocity)
        elif isinstance(msg, Event):
            c.events.append((t, msg.kind, dict(msg.data)))
    progress(f"  read {n} messages")
    return c


def pseudonymous_subject_id(config: dict[str, Any], meta: dict[str, Any]) -> str:
    """A stable pseudonym for the session's subject: never a name.

    ``session.json`` may name one (``subject_id``); otherwise it is a hash of
    the config name and the source's ``population_seed`` (the simulated
    "subject"), or of the config name alone.
    """
    if meta.get("subject_id"):
        return str(meta["subject_id"])
    seeds = [spec.get("params", {}).get("population_seed")
             for spec in (config.get("nodes") or {}).values() if spec.get("kind") == "source"]
    key = f"{config.get('name', 'bciarm')}:{seeds[0] if seeds and seeds[0] is not None else ''}"
    return "sub-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _start_time(meta: dict[str, Any], folder: Path) -> datetime:
    text = meta.get("started")
    if text:
        for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
            try:
                dt = datetime.strptime(text, fmt)
                return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
            except ValueError:
                pass
    return datetime.fromtimestamp((folder / "config.yaml").stat().st_mtime, tz=UTC)


def _data(array: np.ndarray) -> Any:
    """Wrap large arrays for gzip compression (nwbinspector's advice)."""
    if array.nbytes > COMPRESS_ABOVE:
        from hdmf.backends.hdf5 import H5DataIO

        return H5DataIO(array, compression="gzip", compression_opts=4)
    return array


def _regular(t: np.ndarray, period: float) -> bool:
    return len(t) > 1 and bool(np.allclose(np.diff(t), period, rtol=0, atol=1e-9))


def _timing(t: np.ndarray) -> dict[str, Any]:
    """``rate`` + ``starting_time`` when ``t`` is regular (to the ns), else ``timestamps``."""
    if len(t) > 1:
        period = round(float(np.median(np.diff(t))) * 1e9) / 1e9  # to the ns: 0.05, not 0.0499…
        if period > 0 and _regular(t, period):
            return {"rate": 1.0 / period, "starting_time": float(t[0])}
    return {"timestamps": _data(t)}


def _series(pynwb: Any, name: str, data: np.ndarray, t: np.ndarray, unit: str,
            description: str, cls: Any = None, **kw: Any) -> Any:
    """A TimeSeries (or ``cls``) with rate + starting_time when regular, timestamps otherwise."""
    return (cls or pynwb.TimeSeries)(name=name, data=_data(data), unit=unit,
                                     description=description, **_timing(t), **kw)


def _trial_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _vector(text: str) -> list[float] | None:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            return [float(x) for x in json.loads(text)]
        except (ValueError, TypeError):
            return None
    return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _add_trials(nwbfile: Any, rows: list[dict[str, str]], t0: float) -> int:
    """trials.csv → the NWB trials table; vectors become ``<name>_x/_y/_z`` columns."""
    if not rows or "start_t_s" not in rows[0] or "end_t_s" not in rows[0]:
        return 0
    columns: dict[str, str] = {}   # name -> "float" | "int" | "str" | "vector"
    for key in rows[0]:
        if key in ("start_t_s", "end_t_s"):
            continue
        values = [r[key] for r in rows]
        if all(_vector(v) is not None for v in values):
            columns[key] = "vector"
        elif all(v.lstrip("-").isdigit() for v in values):
            columns[key] = "int"
        elif all(_number(v) is not None for v in values):
            columns[key] = "float"
        else:
            columns[key] = "str"
    docs = {"block": "protocol block the trial ran in", "mode": "open_loop (autopilot, "
            "calibration) or closed_loop (decoder)", "index": "trial index within the block",
            "target_id": "outer target number, -1 for the centre target",
            "target": "target centre, world frame, m", "start_position": "effector position "
            "at target onset, world frame, m", "target_radius": "acceptance radius, m",
            "outcome": "success or timeout", "time_to_target_s": "onset to the start of the "
            "successful hold, s (NaN for failures)", "path_length_m": "path travelled, m",
            "straight_m": "straight-line distance to the acquisition point, m (NaN for "
            "failures)", "distance_m": "distance to the target centre at onset, m",
            "holds_broken": "times the effector left the target during a hold"}
    names: list[tuple[str, str, int | None]] = []
    for key, kind in columns.items():
        desc = docs.get(key, key.replace("_", " "))
        if kind == "vector":
            width = len(_vector(rows[0][key]) or [])
            for i, axis in enumerate("xyz"[:width] if width <= 3 else range(width)):
                col = f"{key}_{axis}"
                nwbfile.add_trial_column(name=col, description=f"{desc} ({axis})")
                names.append((col, key, i))
        else:
            nwbfile.add_trial_column(name=key, description=desc)
            names.append((key, key, None))
    for r in rows:
        extra: dict[str, Any] = {}
        for col, key, i in names:
            kind = columns[key]
            if kind == "vector":
                extra[col] = float((_vector(r[key]) or [np.nan] * (i + 1))[i])
            elif kind == "int":
                extra[col] = int(r[key])
            elif kind == "float":
                extra[col] = float(r[key])
            else:
                extra[col] = r[key]
        nwbfile.add_trial(start_time=float(r["start_t_s"]) - t0,
                          stop_time=float(r["end_t_s"]) - t0, **extra)
    return len(rows)


def _add_epochs(nwbfile: Any, events: list[tuple[int, str, dict[str, Any]]], t0: float,
                end_s: float) -> int:
    open_blocks: dict[str, tuple[float, str]] = {}
    n = 0
    for t, kind, data in events:
        block = str(data.get("block", ""))
        if kind == "block_start" and block:
            open_blocks[block] = (t / NS - t0, str(data.get("mode", "")))
        elif kind == "block_end" and block in open_blocks:
            start, mode = open_blocks.pop(block)
            stop = t / NS - t0
            if stop > start:
                nwbfile.add_epoch(start_time=start, stop_time=stop, tags=[block, mode])
                n += 1
    for block, (start, mode) in open_blocks.items():  # a session cut short
        if end_s > start:
            nwbfile.add_epoch(start_time=start, stop_time=end_s, tags=[block, mode, "unfinished"])
            n += 1
    return n


def export_session(session: str | Path, out: str | Path, *, subject_id: str | None = None,
                   species: str | None = None, age: str | None = None,
                   experimenter: list[str] | None = None,
                   institution: str | None = None, overwrite: bool = False,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write a session folder as one NWB file.

    Parameters
    ----------
    session : path
        A session folder (``messages.bcilog``, ``config.yaml``, ``session.json``,
        ``trials.csv``).
    out : path
        The ``.nwb`` file to write.
    subject_id : str, optional
        Pseudonymous subject id; default :func:`pseudonymous_subject_id`.
    species, experimenter, institution : optional
        NWB metadata the session folder does not hold.
    age : str, optional
        ISO 8601 duration or range; default ``session.json``'s ``subject_age``,
        else ``"P18Y/"`` (an adult, exact age withheld: pseudonymisation).
    overwrite : bool
        Replace ``out`` if it exists.

    Returns
    -------
    dict
        What was written: counts of frames, intents, states, trials, epochs.

    Raises
    ------
    NwbError
        Not a session folder, ``out`` exists, or pynwb missing.
    """
    import yaml

    from bciarm.record import LOG_NAME

    say = progress or (lambda _s: None)
    pynwb = _pynwb()
    from pynwb.behavior import Position, SpatialSeries
    from pynwb.file import Subject

    folder = Path(session)
    out = Path(out)
    log_path = folder / LOG_NAME
    if not folder.is_dir() or not log_path.exists():
        raise NwbError(f"{folder}: not a bciarm session folder (no {LOG_NAME}); give the folder "
                       f"`bciarm run` printed")
    if out.exists() and not overwrite:
        raise NwbError(f"{out} exists; pass --overwrite to replace it")
    config_text = (folder / "config.yaml").read_text(encoding="utf-8") \
        if (folder / "config.yaml").exists() else ""
    config = yaml.safe_load(config_text) or {}
    meta = json.loads((folder / "session.json").read_text(encoding="utf-8")) \
        if (folder / "session.json").exists() else {}
    say(f"reading {log_path}")
    c = _collect(log_path, say)
    if not c.neural:
        raise NwbError(f"{log_path}: no neural frames recorded; nothing to export")
    realtime = (folder / "runtime.json").exists()
    # Session clock: the simulated clock starts at 0; a real-time session's
    # monotonic clock is taken from its first recorded message.
    t0 = (c.first_t or 0) / NS if realtime else 0.0
    start = _start_time(meta, folder)
    version = meta.get("versions", {}).get("bciarm", bciarm.__version__)
    nwbfile = pynwb.NWBFile(
        session_description=str(config.get("description") or config.get("name") or "bciarm"),
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL,
                                  f"bciarm:{folder.name}:{meta.get('started', '')}")),
        session_start_time=start,
        session_id=folder.name.replace("/", "_"),
        experiment_description=(f"bciarm session `{config.get('name', '?')}`, seed "
                                f"{meta.get('seed', config.get('seed'))}: calibration (open loop), "
                                f"decoder fit, closed-loop blocks"),
        keywords=["brain-computer interface", "intracortical", "decoding", "bciarm",
                  str(config.get("name", ""))],
        source_script=f"bciarm {version}" + (f" (git {meta['git_commit']})"
                                             if meta.get("git_commit") else ""),
        source_script_file_name="bciarm",
        data_collection=config_text or None,
        notes=json.dumps(meta, indent=1) if meta else None,
        experimenter=experimenter or None,
        institution=institution,
    )
    nwbfile.subject = Subject(subject_id=subject_id or pseudonymous_subject_id(config, meta),
                              species=species,
                              age=age or str(meta.get("subject_age") or "P18Y/"),
                              description="pseudonymous subject id (bciarm); a simulated "
                                          "participant when the source is `simulated`",
                              sex="U")

    # Neural counts, stamped with acquisition times.
    say(f"writing {len(c.neural)} neural frames")
    counts = np.vstack(c.neural)
    t_neural = np.asarray(c.neural_t, dtype=np.float64) / NS - t0
    bin_s = c.bin_s or 0.05
    ecephys = nwbfile.create_processing_module("ecephys", "binned spike counts (bciarm neural "
                                                          "frames)")
    ecephys.add(_series(pynwb, "SpikeCounts", counts, t_neural, "counts",
                        f"spike counts per channel in bins of {bin_s:g} s; a row's time is the "
                        f"end of its bin (acquisition time)", comments=f"bin_s={bin_s:g}"))

    axes = [str(a) for a in config.get("axes", [])]
    decoders = sorted(n for n, spec in (config.get("nodes") or {}).items()
                      if spec.get("kind") == "decoder")
    behavior = nwbfile.create_processing_module(
        "behavior", "decoded intent and effector kinematics (bciarm effector state, after the "
                    "safety chain)")
    unit = "m/s" if c.intent_space == "cartesian" else "fraction of profile limit"
    from_decoder = np.isin(np.asarray(c.intent_src, dtype=str), decoders)
    for name, keep, what in (
            ("DecodedIntent", from_decoder, "decoded intent (the decoder)"),
            ("AutopilotIntent", ~from_decoder,
             "intent of the task's autopilot (open-loop calibration)")):
        if c.intent and keep.any():
            rows = np.flatnonzero(keep)
            behavior.add(_series(pynwb, name, np.vstack([c.intent[i] for i in rows]),
                                 np.asarray(c.intent_t, dtype=np.float64)[rows] / NS - t0, unit,
                                 f"{what}, {c.intent_space} space, axes {axes}",
                                 comments=f"axes={','.join(axes)}; space={c.intent_space}"))
    if c.states:
        position = Position(name="Position")
        for eff, s in sorted(c.states.items()):
            t = np.asarray(s["t"], dtype=np.float64) / NS - t0
            position.add_spatial_series(_series(
                pynwb, f"{eff}_position", np.vstack(s["position"]), t, "meters",
                f"{eff}: end-effector (arm) or base (mobile) position", cls=SpatialSeries,
                reference_frame="world frame of the pybullet scene / device base; x, y, z in m"))
            behavior.add(_series(pynwb, f"{eff}_velocity", np.vstack(s["velocity"]), t, "m/s",
                                 f"{eff}: measured velocity, x y z"))
            joints = [np.asarray(j) for j in s["joint_position"]]
            if joints and joints[0].size and all(j.size == joints[0].size for j in joints):
                behavior.add(_series(pynwb, f"{eff}_joint_position", np.vstack(joints), t,
                                     "radians", f"{eff}: joint positions in URDF joint order"))
                behavior.add(_series(pynwb, f"{eff}_joint_velocity",
                                     np.vstack(s["joint_velocity"]), t, "radians/s",
                                     f"{eff}: joint velocities in URDF joint order"))
        behavior.add(position)

    end_s = float(t_neural[-1])
    n_trials = _add_trials(nwbfile, _trial_rows(folder / "trials.csv"), t0)
    n_epochs = _add_epochs(nwbfile, c.events, t0, end_s)
    say(f"writing {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial.nwb")
    with pynwb.NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwbfile)
    tmp.replace(out)  # never leave a half-written file under the final name
    return {"path": str(out), "neural_frames": len(c.neural), "channels": int(counts.shape[1]),
            "intents": int(from_decoder.sum()), "autopilot_intents": int((~from_decoder).sum()), "effectors": sorted(c.states),
            "states": sum(len(s["t"]) for s in c.states.values()), "trials": n_trials,
            "epochs": n_epochs, "subject_id": nwbfile.subject.subject_id}


# ---------------------------------------------------------------------- reading


@dataclass
class NwbSession:
    """Arrays read from an NWB file.

    Attributes
    ----------
    counts : (T, N) ndarray
        Binned spike counts.
    counts_t : (T,) ndarray
        Time of each bin (its end), s.
    bin_s : float
    velocity, velocity_t : ndarray or None
        Effector / hand velocity (M, k) and its times (M,), s.
    intent, intent_t : ndarray or None
        Decoded intent and its times (bciarm files).
    config : dict
        The resolved bciarm config (from ``data_collection``), or empty.
    source : str
    """

    counts: np.ndarray
    counts_t: np.ndarray
    bin_s: float
    velocity: np.ndarray | None
    velocity_t: np.ndarray | None
    intent: np.ndarray | None = None
    intent_t: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _times(series: Any) -> np.ndarray:
    n = len(series.data)
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=np.float64)
    return float(series.starting_time or 0.0) + np.arange(n) / float(series.rate)


def read_nwb(path: str | Path) -> NwbSession:
    """Read binned counts and kinematics from an NWB file (a bciarm export or similar).

    A bciarm export is read by name (``processing/ecephys/SpikeCounts``,
    ``processing/behavior/<effector>_velocity``); other files by the first
    TimeSeries in ``acquisition`` or ``processing`` named like
    ``*spike*``/``*count*`` and one named like ``*vel*``.

    Raises
    ------
    NwbError
        pynwb missing, unreadable file, or no spike-count series.
    """
    import yaml

    pynwb = _pynwb()
    path = Path(path)
    if not path.exists():
        raise NwbError(f"{path}: no such file")
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - h5py/hdmf raise many kinds
        raise NwbError(f"{path}: not a readable NWB file ({exc})") from None
    with io:
        nwb = io.read()
        series: dict[str, Any] = {}
        for container in (nwb.acquisition, *(m.data_interfaces for m in nwb.processing.values())):
            for name, obj in container.items():
                if hasattr(obj, "data"):
                    series[name] = obj
                elif hasattr(obj, "spatial_series"):  # Position
                    series.update(obj.spatial_series)
        low = {k.lower(): v for k, v in series.items()}
        spikes = series.get("SpikeCounts") or next(
            (s for n, s in low.items() if "spike" in n or "count" in n), None)
        if spikes is None:
            raise NwbError(f"{path}: no spike-count TimeSeries (SpikeCounts, *spike*, *count*); "
                           f"found {sorted(series)}")
        vel = next((s for n, s in series.items() if n.endswith("_velocity")
                    and not n.endswith("joint_velocity")), None) or next(
            (s for n, s in low.items() if "vel" in n and "joint" not in n), None)
        counts = np.asarray(spikes.data[:], dtype=np.float64)
        counts_t = _times(spikes)
        bin_s = round(1.0 / float(spikes.rate), 9) if spikes.rate else (
            float(np.median(np.diff(counts_t))) if len(counts_t) > 1 else 0.05)
        intent = series.get("DecodedIntent")
        config: dict[str, Any] = {}
        if nwb.data_collection:
            try:
                loaded = yaml.safe_load(nwb.data_collection)
                config = loaded if isinstance(loaded, dict) else {}
            except yaml.YAMLError:
                config = {}
        return NwbSession(
            counts=counts, counts_t=counts_t, bin_s=bin_s,
            velocity=None if vel is None else np.asarray(vel.data[:], dtype=np.float64),
            velocity_t=None if vel is None else _times(vel),
            intent=None if intent is None else np.asarray(intent.data[:], dtype=np.float64),
            intent_t=None if intent is None else _times(intent),
            config=config, source=f"{path.name} (NWB)")

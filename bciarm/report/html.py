"""``bciarm report SESSION``: one self-contained HTML file (PNG figures inlined as base64).

The report shows what the session folder holds and nothing more: the
subject's pseudonymous ID (``privacy.subject_id``), never a host or user name
unless the session recorded one because its config asked for it.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

import bciarm
from bciarm.report import figures
from bciarm.report.data import SAFETY_KINDS, SessionData, load_session
from bciarm.report.template import TEMPLATE

#: Metric columns of the per-block table, in this order when present: (key, header, format).
COLUMNS = (
    ("trials", "trials", "{:d}"), ("success_rate", "success", "{:.1%}"),
    ("mean_time_to_target_s", "time to target (s)", "{:.2f}"),
    ("path_efficiency", "path efficiency", "{:.2f}"), ("bitrate_bps", "bitrate (bit/s)", "{:.2f}"),
    ("goals", "goals", "{:d}"), ("goal_success_rate", "goal success", "{:.1%}"),
    ("collisions", "collisions", "{:d}"), ("near_misses", "near misses", "{:d}"),
    ("path_length_ratio", "path length ratio", "{:.2f}"),
)
#: session.json keys shown in the header (host/user only exist if the config asked for them).
META_KEYS = ("subject_id", "config", "seed", "started", "git_commit", "host", "user")


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    try:
        return spec.format(int(value) if spec == "{:d}" else value)
    except (TypeError, ValueError):
        return str(value)


def block_rows(data: SessionData) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of the per-block metrics table (calibration, blocks, closed loop)."""
    m = data.metrics
    per_block: dict[str, dict[str, Any]] = {}
    if isinstance(m.get("calibration"), dict):
        per_block["calibration"] = m["calibration"]
    per_block.update(m.get("blocks", {}) or {})
    present = [c for c in COLUMNS if any(c[0] in v for v in per_block.values())]
    kinds = {b.name: (b.kind if b.mode == "closed_loop" else "open loop") for b in data.blocks}
    plan_kinds = {b["name"]: b["kind"] for b in (data.plan or {}).get("blocks", [])}
    decoders = decoder_per_block(data)
    rows = []
    for name, v in per_block.items():
        rows.append({"name": name, "kind": plan_kinds.get(name, kinds.get(name, "")),
                     "decoder": decoders.get(name, ""), "total": False,
                     "cells": [_fmt(v.get(k), f) for k, _, f in present]})
    if isinstance(m.get("closed_loop"), dict):
        rows.append({"name": "closed loop (all)", "kind": "", "decoder": "", "total": True,
                     "cells": [_fmt(m["closed_loop"].get(k), f) for k, _, f in present]})
    return [h for _, h, _ in present], rows


def decoder_per_block(data: SessionData) -> dict[str, str]:
    """The decoder file in force at each block's start (last ``decoder_update`` before it)."""
    out: dict[str, str] = {}
    current = ""
    ups = [e for e in data.events if e["kind"] == "decoder_update"]
    for b in data.blocks:
        for e in ups:
            if e["t_s"] <= b.start_s:
                current = str(e["data"].get("path", ""))
        out[b.name] = current
    return out


def _b64(png: bytes | None) -> str | None:
    return base64.b64encode(png).decode("ascii") if png else None


def build_report(session: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) for a session folder and return its path."""
    data = load_session(session)
    out = Path(out) if out is not None else data.path / "report.html"
    fits, tuning_png = figures.tuning(data)
    header, rows = block_rows(data)
    lat_i = data.intents["latency_ms"]
    lat_i = lat_i[np.isfinite(lat_i)]
    latency = []
    for name, v in (("neural frame → intent", lat_i),
                    ("neural frame → effector state", data.state_latency_ms)):
        if len(v):
            p50, p99 = np.percentile(v, [50, 99])
            latency.append({"name": name, "n": len(v), "p50": f"{p50:.2f}", "p99": f"{p99:.2f}",
                            "max": f"{np.max(v):.2f}"})
    safety_events = [e for e in data.events if e["kind"] in SAFETY_KINDS]
    operator = [e for e in data.events if e["kind"] in ("operator", "assist", "gain")]
    tuned = None
    if fits:
        depth = fits["depth_hz"]
        tuned = {"channels": len(depth), "bins": fits["n_bins"],
                 "modulated": int(np.sum(fits["r2"] > 0.05)),
                 "median_depth": f"{np.median(depth):.1f}"}
    meta = {k: data.meta[k] for k in META_KEYS if k in data.meta}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        title=f"bciarm session report — {data.meta.get('subject_id', 'subject ?')}",
        meta=meta, session_name=data.path.name, version=bciarm.__version__,
        header=header, rows=rows,
        fig_traj=_b64(figures.trajectories(data)),
        fig_success=_b64(figures.success_over_time(data)),
        fig_ttt=_b64(figures.time_to_target(data)),
        fig_tuning=_b64(tuning_png), tuned=tuned,
        fig_latency=_b64(figures.latency(data)), latency=latency,
        fig_safety=_b64(figures.safety(data)), safety_events=safety_events,
        guards=sorted(data.guard_counts.items(), key=lambda kv: -kv[1]),
        operator=operator, plan=data.plan, truncated=data.log_truncated,
        mode=data.metrics.get("mode", "inline"),
        faults=data.metrics.get("faults", []))
    out.write_text(html, encoding="utf-8")
    return out

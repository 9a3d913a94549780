"""The report's figures: matplotlib (Agg) → PNG bytes.

Each function takes a :class:`~bciarm.report.data.SessionData` and returns a
PNG (bytes) or None when the session holds nothing to draw (e.g. no decoded
intents in a calibration-only run); the report says so instead of a figure.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bciarm.report.data import SAFETY_KINDS, SessionData  # noqa: E402
from bciarm.space import AXIS_INDEX  # noqa: E402

#: Channels shown in the tuning-curve panel (the most strongly modulated).
TUNING_CHANNELS = 8
DIRECTION_BINS = 8


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plane(data: SessionData) -> list[int]:
    names = [a for a in data.axes if a in AXIS_INDEX] or ["x", "y"]
    if "forward" in data.axes or "turn" in data.axes:  # a drive task moves on the floor
        names = ["x", "y"]
    return [AXIS_INDEX[a] for a in names][:2] if len(names) >= 2 else [0, 1]


def trajectories(data: SessionData) -> bytes | None:
    """End-effector paths and targets, one panel per block."""
    if not data.states or not data.blocks:
        return None
    name = next(iter(data.states))
    s = data.states[name]
    ax0, ax1 = _plane(data)
    n = len(data.blocks)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, panels = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.3 * rows), squeeze=False)
    targets = data.task["target"]
    uniq = np.unique(np.round(targets, 4), axis=0) if len(targets) else np.zeros((0, 3))
    radius = float(np.median(data.task["radius"])) if len(data.task["radius"]) else 0.02
    for ax, b in zip(panels.flat, data.blocks):
        sel = (s["t_s"] >= b.start_s) & (s["t_s"] <= b.end_s)
        ax.plot(s["position"][sel, ax0], s["position"][sel, ax1], lw=0.6,
                color="tab:blue" if b.mode == "closed_loop" else "tab:gray")
        if len(uniq) <= 64:
            for c in uniq:
                ax.add_patch(plt.Circle((c[ax0], c[ax1]), radius, fill=False, color="tab:red",
                                        lw=0.8))
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"{b.name} ({b.kind if b.mode == 'closed_loop' else 'open loop'})",
                     fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(panels.flat)[n:]:
        ax.axis("off")
    return _png(fig)


def success_over_time(data: SessionData, window: int = 8) -> bytes | None:
    """Rolling success rate (``window`` trials) against session time, per block."""
    if not data.trials:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.8))
    for b in data.blocks:
        rows = [t for t in data.trials if t.get("block") == b.name]
        if not rows:
            continue
        t = np.array([r["end_t_s"] for r in rows])
        ok = np.array([r.get("outcome") == "success" for r in rows], float)
        k = min(window, len(ok))
        rate = np.convolve(ok, np.ones(k) / k, mode="valid")
        ax.plot(t[k - 1:], rate, marker=".", ms=3, lw=1, label=b.name)
        ax.axvspan(b.start_s, b.end_s, alpha=0.06, color="k")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("session time (s)")
    ax.set_ylabel(f"success (last {window})")
    ax.legend(fontsize=7, ncol=4, loc="lower left")
    return _png(fig)


def time_to_target(data: SessionData) -> bytes | None:
    """Histogram of time to target of successful trials, one colour per block."""
    groups = {}
    for b in data.blocks:
        v = [r["time_to_target_s"] for r in data.trials
             if r.get("block") == b.name and r.get("outcome") == "success"]
        v = [x for x in v if np.isfinite(x)]
        if v:
            groups[b.name] = v
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6, 2.8))
    hi = max(max(v) for v in groups.values())
    bins = np.linspace(0, hi * 1.05 + 1e-9, 25)
    for name, v in groups.items():
        ax.hist(v, bins=bins, histtype="step", lw=1.3, label=f"{name} (n={len(v)})")
    ax.set_xlabel("time to target (s)")
    ax.set_ylabel("trials")
    ax.legend(fontsize=7)
    return _png(fig)


def _last_before(t_src: np.ndarray, t_query: np.ndarray) -> np.ndarray:
    """Index of the last ``t_src`` ≤ each query time (-1 if none)."""
    return np.searchsorted(t_src, t_query, side="right") - 1


def tuning(data: SessionData) -> tuple[dict[str, Any], np.ndarray | None]:
    """Cosine-tuning fits of every channel.

    Each neural bin is paired with the intended direction (target minus
    effector position when the frame was acquired, reach and hold phases) and,
    in closed loop, with the direction of the intent decoded from that frame
    (matched by ``neural_seq``).  Rates are fit as ``b0 + bx cos θ + by sin θ``
    by least squares.

    Returns
    -------
    fits : dict
        ``depth`` (Hz, √(bx² + by²) / bin_s), ``pd_deg`` and ``r2`` per channel for
        the intended direction; ``n_bins``.
    png : bytes or None
        Mean rate by direction (8 bins) and the fitted cosines of the
        ``TUNING_CHANNELS`` most modulated channels.
    """
    nr = data.neural
    if not data.states or nr["counts"].size == 0 or len(data.task["t_s"]) == 0:
        return {}, None
    s = data.states[next(iter(data.states))]
    ax0, ax1 = _plane(data)
    t = nr["t_s"]
    i_task = _last_before(data.task["t_s"], t)
    i_state = _last_before(s["t_s"], t)
    phases = np.asarray(data.task["phase"], dtype=object)
    ok = (i_task >= 0) & (i_state >= 0)
    ok[ok] &= np.isin(phases[i_task[ok]], ["reach", "hold"])
    if ok.sum() < 50:
        return {}, None
    d = data.task["target"][i_task[ok]] - s["position"][i_state[ok]]
    theta = np.arctan2(d[:, ax1], d[:, ax0])
    bin_s = float(nr["bin_s"] or 0.05)
    rates = nr["counts"][ok] / bin_s
    X = np.column_stack([np.ones_like(theta), np.cos(theta), np.sin(theta)])
    beta, *_ = np.linalg.lstsq(X, rates, rcond=None)
    resid = rates - X @ beta
    ss = ((rates - rates.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(ss > 0, 1 - (resid ** 2).sum(axis=0) / np.where(ss > 0, ss, 1), 0.0)
    depth = np.hypot(beta[1], beta[2])
    pd = np.degrees(np.arctan2(beta[2], beta[1]))
    fits = {"depth_hz": depth, "pd_deg": pd, "r2": r2, "n_bins": int(ok.sum())}
    # decoded direction, closed loop only
    dec_theta = dec_rates = None
    it = data.intents
    if len(it["neural_seq"]) and it["velocity"].ndim == 2 and it["velocity"].shape[1] >= 2:
        pos = {int(q): i for i, q in enumerate(nr["seq"])}
        idx = [(pos[int(q)], k) for k, q in enumerate(it["neural_seq"]) if int(q) in pos]
        if len(idx) >= 50:
            fi, ki = np.array(idx).T
            v = it["velocity"][ki]
            moving = np.linalg.norm(v[:, :2], axis=1) > 1e-3
            dec_theta = np.arctan2(v[moving, 1], v[moving, 0])
            dec_rates = nr["counts"][fi[moving]] / bin_s
    top = np.argsort(depth)[::-1][:TUNING_CHANNELS]
    edges = np.linspace(-np.pi, np.pi, DIRECTION_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    grid = np.linspace(-np.pi, np.pi, 100)
    cols = 4
    rows = -(-len(top) // cols)
    fig, panels = plt.subplots(rows, cols, figsize=(9, 2.2 * rows), squeeze=False)
    for ax, ch in zip(panels.flat, top):
        which = np.digitize(theta, edges) - 1
        m = [rates[which == k, ch].mean() if np.any(which == k) else np.nan
             for k in range(DIRECTION_BINS)]
        ax.plot(np.degrees(centres), m, "o", ms=3, color="tab:blue", label="intended")
        ax.plot(np.degrees(grid), beta[0, ch] + beta[1, ch] * np.cos(grid)
                + beta[2, ch] * np.sin(grid), color="tab:blue", lw=1)
        if dec_theta is not None and dec_rates is not None:
            w = np.digitize(dec_theta, edges) - 1
            md = [dec_rates[w == k, ch].mean() if np.any(w == k) else np.nan
                  for k in range(DIRECTION_BINS)]
            ax.plot(np.degrees(centres), md, "s--", ms=3, lw=0.8, color="tab:orange",
                    label="decoded")
        ax.set_title(f"ch {ch}: depth {depth[ch]:.1f} Hz, PD {pd[ch]:.0f}°", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks([-180, -90, 0, 90, 180])
    panels.flat[0].legend(fontsize=6)
    panels.flat[0].set_ylabel("rate (Hz)", fontsize=8)
    for ax in list(panels.flat)[len(top):]:
        ax.axis("off")
    return fits, _png(fig)


def latency(data: SessionData) -> bytes | None:
    """Neural-frame acquisition → intent and → effector state, from the message headers."""
    lat_i = data.intents["latency_ms"]
    lat_i = lat_i[np.isfinite(lat_i)]
    lat_s = data.state_latency_ms
    if not len(lat_i) and not len(lat_s):
        return None
    fig, ax = plt.subplots(figsize=(6, 2.8))
    hi = float(np.percentile(np.concatenate([lat_i, lat_s]), 99.5)) if len(lat_s) else float(
        np.percentile(lat_i, 99.5))
    bins = np.linspace(0, max(hi, 1e-3) * 1.05, 40)
    if len(lat_i):
        ax.hist(np.clip(lat_i, 0, bins[-1]), bins=bins, histtype="step", lw=1.3,
                label=f"frame → intent (median {np.median(lat_i):.1f} ms)")
    if len(lat_s):
        ax.hist(np.clip(lat_s, 0, bins[-1]), bins=bins, histtype="step", lw=1.3,
                label=f"frame → effector state (median {np.median(lat_s):.1f} ms)")
    ax.set_xlabel("latency (ms, clipped at p99.5)")
    ax.set_ylabel("messages")
    ax.legend(fontsize=7)
    return _png(fig)


def safety(data: SessionData) -> bytes | None:
    """Effector speed with e-stop latches shaded and safety events marked."""
    if not data.states:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for name, s in data.states.items():
        if not len(s["t_s"]):
            continue
        ax.plot(s["t_s"], np.linalg.norm(s["velocity"], axis=1), lw=0.5, label=f"{name} speed")
        est = s["estopped"].astype(bool)
        if est.any():
            ax.fill_between(s["t_s"], 0, 1, where=est, transform=ax.get_xaxis_transform(),
                            color="tab:red", alpha=0.15, label=f"{name} e-stopped")
    colours = {"estop": "tab:red", "resume": "tab:green", "fault": "tab:purple",
               "collision": "k"}
    seen = set()
    for e in data.events:
        if e["kind"] in SAFETY_KINDS:
            ax.axvline(e["t_s"], color=colours[e["kind"]], lw=0.8, ls="--",
                       label=e["kind"] if e["kind"] not in seen else None)
            seen.add(e["kind"])
    ax.set_xlabel("session time (s)")
    ax.set_ylabel("speed (m/s)")
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)

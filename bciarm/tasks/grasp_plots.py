"""Session figure of a reach-and-grasp session: ``grasp.png`` in the session folder.

Top: the hand's path seen from the front (world y against z) for the last
closed-loop block, coloured by hand state (open / closed on grasp).  Bottom:
over the same block, the gripper aperture, the squeeze force against the
grip-force limit, the decoded click command and the trial outcomes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bciarm.bus.messages import EffectorState, Intent, TaskState
from bciarm.record import LOG_NAME, read_messages


def plot_grasp_session(session_dir: Path, config: Any, blocks: list[Any],
                       filename: str = "grasp.png") -> Path | None:
    """Draw the figure for the last block; returns its path (None without hand data)."""
    from bciarm.effectors.arm import EXTRA_INDEX as E

    if not blocks:
        return None
    block = blocks[-1]
    effector = config.nodes_of("effector")[0]
    params = config.nodes[effector].params
    limit = float((params.get("gripper") or {}).get("grip_force", 10.0))
    t0, t1 = round(block.start_s * 1e9), round(block.end_s * 1e9)
    t, pos, ap, force, mode = [], [], [], [], []
    ti, click, outcomes = [], [], []
    for topic, msg in read_messages(Path(session_dir) / LOG_NAME,
                                    (f"state.{effector}", "intent", "task"),
                                    start_ns=t0, end_ns=t1):
        if isinstance(msg, EffectorState) and msg.extra.size > E["drops"]:
            t.append(msg.header.t_ns / 1e9)
            pos.append(msg.position)
            ap.append(msg.extra[E["aperture"]])
            force.append(msg.extra[E["grip_force"]])
            mode.append(msg.extra[E["hand_mode"]])
        elif isinstance(msg, Intent):
            ti.append(msg.header.t_ns / 1e9)
            click.append(msg.grasp)
        elif isinstance(msg, TaskState) and msg.outcome:
            outcomes.append((msg.header.t_ns / 1e9, msg.outcome))
    if not t:
        return None
    t_a, pos_a, mode_a = np.asarray(t), np.asarray(pos), np.asarray(mode)
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(8.5, 7.5),
                                   gridspec_kw={"height_ratios": [1.1, 1]})
    closed = mode_a == 1
    ax0.plot(pos_a[:, 1], pos_a[:, 2], lw=0.5, color="0.7")
    ax0.scatter(pos_a[~closed, 1], pos_a[~closed, 2], s=1, color="tab:blue", label="hand open")
    ax0.scatter(pos_a[closed, 1], pos_a[closed, 2], s=1, color="tab:red",
                label="closed on grasp")
    ax0.set_xlabel("y (m)")
    ax0.set_ylabel("z (m)")
    ax0.set_aspect("equal", adjustable="datalim")
    ax0.legend(loc="upper right", fontsize=8, markerscale=6)
    ax0.set_title(f"{config.name}, seed {config.seed}, {block.name}: hand path (front view)",
                  fontsize=9)
    rel = t_a - t_a[0]
    ax1.plot(rel, 1000 * np.asarray(ap), color="tab:blue", lw=0.8, label="aperture (mm)")
    ax1.plot(rel, 5 * np.asarray(force), color="tab:red", lw=0.8, label="grip force ×5 (N)")
    ax1.axhline(5 * limit, color="tab:red", ls=":", lw=0.8, label="grip-force limit ×5")
    if ti:
        ax1.step(np.asarray(ti) - t_a[0], 20 * (np.asarray(click) == 1), where="post",
                 color="k", lw=0.6, label="click: grasp (20) / release (0)")
    for when, outcome in outcomes:
        ax1.axvline(when - t_a[0], color="tab:green" if outcome == "success" else "tab:orange",
                    lw=0.5)
    ax1.set_xlabel("time in block (s); vertical lines: trial ends (green success)")
    ax1.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    out = Path(session_dir) / filename
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

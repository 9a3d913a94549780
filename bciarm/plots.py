"""Figures written into the session folder (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: sessions run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bciarm.bus.messages import EffectorState, TaskState  # noqa: E402
from bciarm.record import LOG_NAME, read_messages  # noqa: E402
from bciarm.space import AXIS_INDEX, intent_space  # noqa: E402

if TYPE_CHECKING:
    from bciarm.config import GraphConfig



def plot_session_trajectories(session_dir: Path, config: "GraphConfig", blocks: list[Any],
                              filename: str = "trajectories.png") -> Path:
    """One panel per block: the end-effector path in the task plane and the targets.

    For a 3-D task the first two axes are drawn; a 1-D task is drawn against time.
    """
    effector_topic = "state." + config.nodes_of("effector")[0]
    positions: list[tuple[int, np.ndarray]] = []
    targets: dict[tuple[float, ...], float] = {}
    for topic, msg in read_messages(session_dir / LOG_NAME, (effector_topic, "task")):
        if isinstance(msg, EffectorState):
            positions.append((msg.header.t_ns, msg.position))
        elif isinstance(msg, TaskState):
            targets[tuple(np.round(msg.target, 4))] = msg.target_radius
    # A drive task (wheelchair) moves on the floor: draw x, y; a joint-space
    # task (exoskeleton): the palm in the sagittal plane, x (forward) and z (up).
    space = intent_space(config.axes)
    names = {"drive": ["x", "y"], "joint": ["x", "z"]}.get(space, list(config.axes))
    axes = [AXIS_INDEX[a] for a in names if a in AXIS_INDEX][:2]  # wrist/grasp axes: not drawn
    if len(targets) > 64:  # moving targets (a route's lookahead point): too many to draw
        targets = {}
    t = np.array([p[0] for p in positions], dtype=np.int64) / 1e9
    xyz = np.array([p[1] for p in positions]) if positions else np.zeros((0, 3))
    fig, panels = plt.subplots(1, len(blocks), figsize=(4.2 * len(blocks), 4.4), squeeze=False)
    for ax, block in zip(panels[0], blocks):
        sel = (t >= block.start_s) & (t <= block.end_s)
        if len(axes) == 1:
            ax.plot(t[sel], xyz[sel, axes[0]], lw=0.8)
            ax.set_xlabel("time (s)")
            ax.set_ylabel(f"{names[0]} (m)")
        else:
            ax.plot(xyz[sel, axes[0]], xyz[sel, axes[1]], lw=0.7,
                    color="tab:blue" if block.mode == "closed_loop" else "tab:gray")
            for centre, radius in targets.items():
                ax.add_patch(plt.Circle((centre[axes[0]], centre[axes[1]]), radius,
                                        fill=False, color="tab:red", lw=1.0))
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xlabel(f"{names[0]} (m)")
            ax.set_ylabel(f"{names[1]} (m)")
        ax.set_title(f"{block.name} ({block.mode.replace('_', ' ')}, {block.trials} trials)",
                     fontsize=9)
    fig.suptitle(f"{config.name}, seed {config.seed}: end-effector paths", fontsize=10)
    fig.tight_layout()
    out = session_dir / filename
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

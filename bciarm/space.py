"""Task-space axes: names shared by configs, sources, decoders, effectors and tasks.

A task works in a subset of the world's Cartesian axes (``["x", "y"]`` for a
horizontal 2-D task); an :class:`~bciarm.bus.messages.Intent` carries one
velocity per task axis, in this order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

#: A task-space axis name.
Axis = Literal["x", "y", "z"]

#: Task-space axis names and their index in a world (x, y, z) vector.
AXIS_INDEX: dict[str, int] = {"x": 0, "y": 1, "z": 2}


def axis_indices(axes: Sequence[str]) -> np.ndarray:
    """World indices of task axes, e.g. ``["x", "y"] -> [0, 1]``.

    Raises
    ------
    ValueError
        Unknown or repeated axis, or no axis at all.
    """
    axes = list(axes)
    bad = [a for a in axes if a not in AXIS_INDEX]
    if bad or not axes or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct names among {list(AXIS_INDEX)}; got {axes}")
    return np.array([AXIS_INDEX[a] for a in axes], dtype=np.intp)

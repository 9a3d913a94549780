"""Task-space axes: names shared by configs, sources, decoders, effectors and tasks.

A task works in a subset of the world's Cartesian axes (``["x", "y"]`` for a
horizontal 2-D task); an :class:`~bciarm.bus.messages.Intent` carries one
velocity per task axis, in this order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

#: A task-space axis name: a world Cartesian axis, or a drive axis of a
#: mobile base (``forward`` speed and ``turn`` rate, as fractions of the
#: effector's active speed profile, each in [-1, 1]).
Axis = Literal["x", "y", "z", "forward", "turn"]

#: Drive axes (a wheelchair's 2-D intent), in intent order.
DRIVE_AXES: tuple[str, ...] = ("forward", "turn")

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


def intent_space(axes: Sequence[str]) -> str:
    """The :class:`~bciarm.bus.messages.Intent` ``space`` a list of task axes speaks.

    ``"drive"`` for the drive axes ``["forward", "turn"]`` (normalised
    forward speed and turn rate of a mobile base), ``"cartesian"`` for world
    axes.

    Raises
    ------
    ValueError
        World and drive axes mixed, or drive axes in another order.
    """
    axes = list(axes)
    drive = [a for a in axes if a in DRIVE_AXES]
    if not drive:
        return "cartesian"
    if axes != list(DRIVE_AXES):
        raise ValueError(f"drive axes must be exactly {list(DRIVE_AXES)} (in this order); got {axes}")
    return "drive"

"""Task-space axes: names shared by configs, sources, decoders, effectors and tasks.

A task works in a subset of the world's Cartesian axes (``["x", "y"]`` for a
horizontal 2-D task); an :class:`~bciarm.bus.messages.Intent` carries one
velocity per task axis, in this order.

An arm with a wrist and a gripper has up to seven axes (:data:`ARM_AXES`):
translation ``x, y, z`` (m/s), wrist angular velocity ``roll, pitch, yaw``
about the world x, y, z axes (rad/s) and the gripper's aperture velocity
``grasp`` (m/s, positive opens).  A session picks any subset through its
``axes`` (3-D ``[x, y, z]``, 4-D ``[x, y, z, grasp]``, 7-D all of them); the
arm holds the axes it is not given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

import numpy as np

#: A task-space axis name: a world Cartesian axis, or a drive axis of a
#: mobile base (``forward`` speed and ``turn`` rate, as fractions of the
#: effector's active speed profile, each in [-1, 1]).
Axis = Literal["x", "y", "z", "roll", "pitch", "yaw", "grasp", "forward", "turn"]

#: Drive axes (a wheelchair's 2-D intent), in intent order.
DRIVE_AXES: tuple[str, ...] = ("forward", "turn")

#: Task-space axis names and their index in a world (x, y, z) vector.
AXIS_INDEX: dict[str, int] = {"x": 0, "y": 1, "z": 2}

#: Every axis an arm effector understands, in the order of its 7-D task vector
#: ``[vx, vy, vz, wx, wy, wz, aperture velocity]``.
ARM_AXES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw", "grasp")
#: Wrist axes: angular velocity about the world x, y, z axes (rad/s).
ROTATION_AXES: tuple[str, ...] = ("roll", "pitch", "yaw")
#: Gripper axis: aperture velocity (m/s, positive opens).
GRASP_AXIS = "grasp"
#: Arm axis name -> index in the 7-D arm task vector.
ARM_INDEX: dict[str, int] = {a: i for i, a in enumerate(ARM_AXES)}


def arm_axis_indices(axes: Sequence[str]) -> np.ndarray:
    """Indices of task axes in the 7-D arm vector, e.g. ``["x", "grasp"] -> [0, 6]``.

    Raises
    ------
    ValueError
        Unknown or repeated axis, or no axis at all.
    """
    axes = list(axes)
    bad = [a for a in axes if a not in ARM_INDEX]
    if bad or not axes or len(set(axes)) != len(axes):
        raise ValueError(f"arm axes must be distinct names among {list(ARM_AXES)}; got {axes}")
    return np.array([ARM_INDEX[a] for a in axes], dtype=np.intp)


def is_reach_only(axes: Sequence[str]) -> bool:
    """True if ``axes`` are world translation axes only (no wrist, no gripper)."""
    return all(a in AXIS_INDEX for a in axes)


#: A joint-space axis is a joint's URDF name (an exoskeleton's active joints,
#: intent in rad/s per joint); any name that is not a world, arm or drive axis.
#: (Two characters at least: a one-letter name is a mistyped world axis.)
_JOINT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]+$")


def is_joint_axis(name: str) -> bool:
    """True if ``name`` names a joint (not a world or drive axis)."""
    return (name not in ARM_INDEX and name not in DRIVE_AXES
            and bool(_JOINT_NAME.match(str(name))))


def _check_task_axis(name: str) -> str:
    if name in ARM_INDEX or name in DRIVE_AXES or is_joint_axis(name):
        return name
    raise PydanticCustomError(
        "literal_error",
        "Input should be 'x', 'y', 'z', 'roll', 'pitch', 'yaw', 'grasp', 'forward', 'turn' "
        "or a joint name",
        {"expected": "an arm axis (x, y, z, roll, pitch, yaw, grasp), a drive axis (forward, "
                     "turn) or a joint name (URDF)"})


#: An axis of any task space: world/arm (x, y, z, roll, pitch, yaw, grasp), drive
#: (forward, turn) or a joint name.
TaskAxis = Annotated[str, AfterValidator(_check_task_axis)]


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
    forward speed and turn rate of a mobile base), ``"joint"`` for joint
    names (an exoskeleton's active joints, rad/s each), ``"cartesian"`` for
    world axes.

    Raises
    ------
    ValueError
        World, drive and joint axes mixed, or drive axes in another order.
    """
    axes = list(axes)
    joints = [a for a in axes if is_joint_axis(a)]
    if joints:
        if len(joints) != len(axes):
            raise ValueError(f"joint axes (joint names) cannot be mixed with world or drive "
                             f"axes; got {axes}")
        return "joint"
    drive = [a for a in axes if a in DRIVE_AXES]
    if not drive:
        return "cartesian"
    if axes != list(DRIVE_AXES):
        raise ValueError(f"drive axes must be exactly {list(DRIVE_AXES)} (in this order); got {axes}")
    return "drive"

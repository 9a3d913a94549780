"""The gripper side of an arm driver: what a parallel gripper reports and obeys.

A driver whose robot has a gripper implements three methods beside the
:class:`~bciarm.drivers.base.Driver` contract (see
:class:`~bciarm.drivers.pybullet_arm.PyBulletArmDriver`):

``gripper_limits() -> GripperLimits``
    Aperture range, speed and force the hardware allows.
``read_gripper() -> GripperState``
    Measured aperture, its rate, the squeeze force and whether an object is
    held (both fingers in contact with it).
``command_gripper(velocity, max_force)``
    Move the fingers at ``velocity`` (aperture rate, m/s, positive opens)
    pushing with at most ``max_force`` newtons.  A closing command on an
    object squeezes it with ``max_force``: the force cap *is* the grip force
    (a Franka Hand's ``grasp(width, speed, force)`` works the same way).

The effector's safety chain (:mod:`bciarm.effectors.grasp`) decides velocity
and force; the driver only clamps to the hardware limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GripperLimits:
    """Hardware limits of a parallel gripper.

    Attributes
    ----------
    min_aperture, max_aperture : float
        Distance between the finger pads, m.
    max_speed : float
        Aperture rate limit, m/s.
    max_force : float
        Largest squeeze force the fingers can exert, N.
    """

    min_aperture: float
    max_aperture: float
    max_speed: float
    max_force: float


@dataclass(frozen=True)
class GripperState:
    """One reading of the gripper.

    Attributes
    ----------
    aperture : float
        Distance between the finger pads, m.
    velocity : float
        Aperture rate, m/s (positive opening).
    force : float
        Squeeze force the finger motors apply, N.
    holding : bool
        Both fingers touch the same object (a real gripper: its grasp flag).
    held : str
        Name of the held object when known (simulation), else ``""``.
    """

    aperture: float
    velocity: float
    force: float
    holding: bool
    held: str = ""


def has_gripper(driver: Any) -> bool:
    """True if ``driver`` implements the gripper methods and has a gripper."""
    probe = getattr(driver, "has_gripper", None)
    return bool(probe()) if callable(probe) else False

"""Layout of the exoskeleton's ``EffectorState.extra`` (one place, no heavy imports).

``extra`` is, in order::

    [n_active, assist_level, assist_speed, intent_speed, command_speed,
     goal_active, torque_stopped, rom_violation,                     # FIXED, 8 entries
     active_position[n_active], active_velocity[n_active], goal[n_active],
     active_index[n_active],
     rom_lower[n], rom_upper[n], gravity_torque[n], interaction_torque[n]]

with ``n`` = number of joints (``len(joint_position)``, driver order) and
``n_active`` the active joints in intent order (the patient profile's
``active``).  Meanings:

``assist_level``
    Share of this tick's commanded intent-space speed supplied by
    assist-as-needed: ``|a| / |u + a|`` (0..1; 0 when nothing is commanded).
``assist_speed``, ``intent_speed``, ``command_speed``
    ``|a|``, ``|u|`` and ``|u + a|`` (rad/s in joint space, m/s in end-point
    space): ``u`` the user's guarded intent, ``a`` the assistance.
``goal_active``
    1 while the task shows a goal (assistance possible), else 0.
``torque_stopped``
    1 while a torque-limit stop is latched (cleared by ``resume``).
``rom_violation``
    1 if a measured joint lies outside the patient's range of motion this tick.
``active_position``, ``active_velocity``
    Measured angles (rad) and speeds (rad/s) of the active joints.
``goal``
    The task's joint-space goal for the active joints (rad); the current
    position when there is none.
``active_index``
    Where each active joint sits in ``joint_position`` (looked up by name
    from the driver's joints, so consumers need no joint table).
``rom_lower``, ``rom_upper``
    The patient's range of motion, every joint (rad).
``gravity_torque``
    ``τ_g(q) = ID(q, 0, 0)``, N·m: what holds the arm against gravity.
``interaction_torque``
    Motor torque minus ``τ_g`` (N·m; zeros if the drive reports no torque).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FIXED = ("n_active", "assist_level", "assist_speed", "intent_speed", "command_speed",
         "goal_active", "torque_stopped", "rom_violation")
N_FIXED = len(FIXED)
ACTIVE_BLOCKS = ("active_position", "active_velocity", "goal", "active_index")
JOINT_BLOCKS = ("rom_lower", "rom_upper", "gravity_torque", "interaction_torque")


@dataclass(frozen=True, eq=False)
class ExoReading:
    """``EffectorState.extra`` of the exoskeleton, unpacked (see the module docstring)."""

    assist_level: float
    assist_speed: float
    intent_speed: float
    command_speed: float
    goal_active: bool
    torque_stopped: bool
    rom_violation: bool
    active_position: np.ndarray
    active_velocity: np.ndarray
    goal: np.ndarray
    active_index: np.ndarray
    rom_lower: np.ndarray
    rom_upper: np.ndarray
    gravity_torque: np.ndarray
    interaction_torque: np.ndarray


def pack_extra(fixed: dict[str, float], active: dict[str, np.ndarray],
               joints: dict[str, np.ndarray]) -> np.ndarray:
    """Build the ``extra`` vector (finite, little-endian float64)."""
    parts = [np.array([float(fixed[k]) for k in FIXED])]
    parts += [np.asarray(active[k], dtype=float).reshape(-1) for k in ACTIVE_BLOCKS]
    parts += [np.asarray(joints[k], dtype=float).reshape(-1) for k in JOINT_BLOCKS]
    out = np.concatenate(parts)
    out = np.nan_to_num(out, nan=0.0, posinf=1e6, neginf=-1e6)
    return np.ascontiguousarray(out, dtype="<f8")


def unpack_extra(extra: Any, n_joints: int) -> ExoReading | None:
    """Unpack an exoskeleton state's ``extra``; None if it does not have that layout."""
    e = np.asarray(extra, dtype=float).reshape(-1)
    if e.size < N_FIXED:
        return None
    k = int(round(e[0]))
    if k < 1 or e.size != N_FIXED + len(ACTIVE_BLOCKS) * k + len(JOINT_BLOCKS) * n_joints:
        return None
    blocks: dict[str, Any] = {name: float(e[i]) for i, name in enumerate(FIXED)}
    i = N_FIXED
    for name in ACTIVE_BLOCKS:
        blocks[name] = e[i:i + k].copy()
        i += k
    for name in JOINT_BLOCKS:
        blocks[name] = e[i:i + n_joints].copy()
        i += n_joints
    blocks.pop("n_active")
    index = np.rint(blocks["active_index"]).astype(int)
    if np.any(index < 0) or np.any(index >= n_joints):
        return None
    blocks["active_index"] = index
    for flag in ("goal_active", "torque_stopped", "rom_violation"):
        blocks[flag] = bool(blocks[flag] > 0.5)
    return ExoReading(**blocks)


def reading_of(state: Any) -> ExoReading | None:
    """:func:`unpack_extra` of an :class:`~bciarm.bus.messages.EffectorState`."""
    return unpack_extra(state.extra, int(np.asarray(state.joint_position).size))

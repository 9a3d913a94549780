"""Simulated upper-limb exoskeleton: the ``exo_upper_limb`` scene driven in joint velocities.

Same machinery as the simulated arm (:class:`~bciarm.drivers.pybullet_arm.PyBulletArmDriver`):
a private pybullet client, joints under ``VELOCITY_CONTROL`` with the URDF
effort limits as motor torque, time passing only in ``advance``.  The
exoskeleton adds what its safety chain needs from a real device: the motor
torque each joint applies (:meth:`PyBulletExoDriver.joint_torques`, as a
drive's current feedback would give it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bciarm.drivers.pybullet_arm import PyBulletArmDriver


class PyBulletExoDriver(PyBulletArmDriver):
    """An exoskeleton carrying the patient's arm, simulated in pybullet.

    Parameters and attributes as :class:`~bciarm.drivers.pybullet_base.PyBulletDriver`;
    the default scene is ``exo_upper_limb``.
    """

    def __init__(self, scene: str | Path = "exo_upper_limb", gui: bool = False,
                 physics_dt: float | None = None) -> None:
        super().__init__(scene, gui, physics_dt)

    def _camera(self, cid: int) -> None:
        import pybullet as p

        base = self.spec.robot.base_position
        p.resetDebugVisualizerCamera(1.3, 40, -20, [base[0] + 0.25, base[1], base[2] - 0.2],
                                     physicsClientId=cid)

    def joint_torques(self) -> np.ndarray:
        """Motor torque applied at each joint during the last physics step, N·m (joint order)."""
        import pybullet as p

        self._require_connected()
        h = self.handles
        states = p.getJointStates(h.robot, h.joint_indices, physicsClientId=self._cid)
        return np.array([s[3] for s in states], dtype=float)

    def reset_posture(self, q: Any) -> None:
        """Put the joints at ``q`` (rad, joint order), at rest (simulation only; tests)."""
        import pybullet as p

        self._require_connected()
        h = self.handles
        q = np.asarray(q, dtype=float).reshape(len(h.joint_indices))
        for j, value in zip(h.joint_indices, q):
            p.resetJointState(h.robot, j, float(value), 0.0, physicsClientId=self._cid)
        self._command_velocity(np.zeros(len(h.joint_indices)))

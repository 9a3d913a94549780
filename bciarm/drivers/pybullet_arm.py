"""Simulated arm: a pybullet scene driven like a joint-velocity robot.

The scene (default ``arm_table``: a Franka Panda on a table) is loaded into a
private pybullet client; the arm starts at the scene's home posture and its
joints run under ``VELOCITY_CONTROL`` with the URDF effort limits as motor
force, so the arm accelerates and brakes like a torque-limited robot rather
than teleporting.  Time only passes in :meth:`PyBulletArmDriver.advance`.

pybullet's velocity motor does not enforce the URDF velocity limit (a Panda
joint commanded 5 rad/s goes 5 rad/s); the :class:`~bciarm.drivers.base.Driver`
base class clamps every command before it gets here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bciarm.drivers.pybullet_base import PyBulletDriver

#: Colour of the target sphere (RGBA).
TARGET_RGBA = (0.1, 0.8, 0.2, 0.6)


class PyBulletArmDriver(PyBulletDriver):
    """A robot arm simulated in pybullet, commanded in joint velocities.

    Parameters and attributes as :class:`~bciarm.drivers.pybullet_base.PyBulletDriver`;
    the default scene is ``arm_table`` (a Franka Panda on a table).
    """

    def __init__(self, scene: str | Path = "arm_table", gui: bool = False,
                 physics_dt: float | None = None) -> None:
        super().__init__(scene, gui, physics_dt)
        self._target_radius = 0.0

    def _camera(self, cid: int) -> None:
        import pybullet as p

        base = self.spec.robot.base_position
        p.resetDebugVisualizerCamera(1.4, 50, -30, [base[0] + 0.5, base[1], base[2]],
                                     physicsClientId=cid)

    def show_target(self, position: Any, radius: float) -> None:
        """Draw (or move) a translucent sphere at ``position``; it never collides."""
        import pybullet as p

        self._require_connected()
        pos = np.asarray(position, dtype=float).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            return  # visual only: a bad target is not worth stopping the arm for
        radius = float(radius)
        if not np.isfinite(radius) or radius <= 0:
            return
        if self._target_body is not None and radius != self._target_radius:
            p.removeBody(self._target_body, physicsClientId=self._cid)
            self._target_body = None
        if self._target_body is None:
            shape = p.createVisualShape(p.GEOM_SPHERE, radius=radius, rgbaColor=TARGET_RGBA,
                                        physicsClientId=self._cid)
            # No collision shape (-1) and zero mass: purely visual, never touched by physics.
            self._target_body = p.createMultiBody(baseMass=0, baseCollisionShapeIndex=-1,
                                                  baseVisualShapeIndex=shape,
                                                  basePosition=pos.tolist(),
                                                  physicsClientId=self._cid)
            self._target_radius = radius
        else:
            p.resetBasePositionAndOrientation(self._target_body, pos.tolist(), [0, 0, 0, 1],
                                              physicsClientId=self._cid)

    # ------------------------------------------------------------------ extras for tests/tools

    def reset_home(self) -> None:
        """Put the arm back at the home posture, at rest (simulation only)."""
        import pybullet as p

        self._require_connected()
        h = self.handles
        for name, j in zip(h.joint_names, h.joint_indices):
            p.resetJointState(h.robot, j, self.spec.robot.home[name], 0.0,
                              physicsClientId=self._cid)
        self._command_velocity(np.zeros(len(h.joint_indices)))

    def ee_state(self) -> tuple[np.ndarray, np.ndarray]:
        """End-effector world position and linear velocity straight from the physics.

        Independent of :class:`~bciarm.effectors.kinematics.ArmKinematics`,
        so tests can measure what the arm really did.
        """
        import pybullet as p

        self._require_connected()
        h = self.handles
        s = p.getLinkState(h.robot, h.ee_link, computeLinkVelocity=1,
                           computeForwardKinematics=1, physicsClientId=self._cid)
        return np.array(s[4]), np.array(s[6])

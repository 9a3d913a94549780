"""Simulated arm: a pybullet scene driven like a joint-velocity robot.

The scene (default ``arm_table``: a Franka Panda on a table) is loaded into a
private pybullet client; the arm starts at the scene's home posture and its
joints run under ``VELOCITY_CONTROL`` with the URDF effort limits as motor
force, so the arm accelerates and brakes like a torque-limited robot rather
than teleporting.  Time only passes in :meth:`PyBulletArmDriver.advance`.

pybullet's velocity motor does not enforce the URDF velocity limit (a Panda
joint commanded 5 rad/s goes 5 rad/s); the :class:`~bciarm.drivers.base.Driver`
base class clamps every command before it gets here.

A scene whose robot has a ``gripper`` (e.g. ``arm_box_blocks``) gets the
gripper methods of :mod:`bciarm.drivers.gripper`: the finger joints run under
``VELOCITY_CONTROL`` with the commanded force as motor force, so a closing
finger squeezes whatever it meets with exactly that force and objects are
held by friction alone (no constraint, no teleporting).  Scene objects can be
tracked (:meth:`PyBulletArmDriver.object_poses`) as a motion-capture system
would track them on a real bench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bciarm.drivers.base import DriverError
from bciarm.drivers.gripper import GripperLimits, GripperState
from bciarm.drivers.pybullet_base import PyBulletDriver
from bciarm.sim.scene import joint_indices_by_name

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
        self._fingers: list[int] = []
        self._finger_limits: GripperLimits | None = None
        self._object_start: dict[str, tuple[list[float], list[float]]] = {}

    def _setup(self, cid: int) -> None:
        import pybullet as p

        h = self.handles
        for name, body in h.objects.items():
            pos, orn = p.getBasePositionAndOrientation(body, physicsClientId=cid)
            self._object_start[name] = (list(pos), list(orn))
        g = self.spec.robot.gripper
        if g is None:
            return
        by_name = joint_indices_by_name(cid, h.robot)
        missing = [j for j in g.joints if j not in by_name]
        if missing:
            raise DriverError(f"{self.spec.path}: robot.gripper.joints: "
                              f"{self.spec.robot.urdf.name} has no joint(s) {missing}")
        self._fingers = [by_name[j] for j in g.joints]
        infos = [p.getJointInfo(h.robot, j, physicsClientId=cid) for j in self._fingers]
        n = len(self._fingers)
        # Each finger opens by aperture / n (two fingers: half each).
        self._finger_limits = GripperLimits(
            min_aperture=n * max(i[8] for i in infos), max_aperture=n * min(i[9] for i in infos),
            max_speed=n * min(i[11] for i in infos), max_force=min(i[10] for i in infos))
        start = min(g.open, self._finger_limits.max_aperture)
        for j in self._fingers:
            p.resetJointState(h.robot, j, start / n, 0.0, physicsClientId=cid)
            p.changeDynamics(h.robot, j, lateralFriction=g.friction, physicsClientId=cid)
        p.setJointMotorControlArray(h.robot, self._fingers, p.VELOCITY_CONTROL,
                                    targetVelocities=[0.0] * n,
                                    forces=[self._finger_limits.max_force] * n,
                                    physicsClientId=cid)
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

    # ------------------------------------------------------------------ gripper

    def has_gripper(self) -> bool:
        """True if the scene's robot has a gripper (known after connect)."""
        return bool(self._fingers)

    def gripper_limits(self) -> GripperLimits:
        """Aperture range, speed and force limits from the URDF finger joints."""
        self._require_connected()
        if self._finger_limits is None:
            raise DriverError(f"scene {self.spec.name!r} has no robot.gripper")
        return self._finger_limits

    def read_gripper(self) -> GripperState:
        """Aperture, rate, squeeze force and the held object, from the physics."""
        import pybullet as p

        self.gripper_limits()
        h = self.handles
        states = p.getJointStates(h.robot, self._fingers, physicsClientId=self._cid)
        aperture = float(sum(s[0] for s in states))
        velocity = float(sum(s[1] for s in states))
        force = float(np.mean([abs(s[3]) for s in states]))
        # Held: one object touched by every finger.
        touched = None
        for j in self._fingers:
            bodies = {c[2] for c in p.getContactPoints(bodyA=h.robot, linkIndexA=j,
                                                       physicsClientId=self._cid)
                      if c[2] != h.robot}
            touched = bodies if touched is None else touched & bodies
        names = {b: n for n, b in h.objects.items()}
        held = sorted(names.get(b, str(b)) for b in (touched or set()))
        return GripperState(aperture, velocity, force, bool(held), held[0] if held else "")

    def command_gripper(self, velocity: float, max_force: float) -> None:
        """Move the fingers at aperture rate ``velocity`` (m/s) with at most ``max_force`` N.

        Both are clamped to the URDF limits; a non-finite value stops the
        fingers where they are (still holding with the force given, or with
        the hardware limit if that is not finite either).
        """
        import pybullet as p

        lim = self.gripper_limits()
        v = float(velocity) if np.isfinite(velocity) else 0.0
        f = float(max_force) if np.isfinite(max_force) else lim.max_force
        v = float(np.clip(v, -lim.max_speed, lim.max_speed))
        f = float(np.clip(f, 0.0, lim.max_force))
        n = len(self._fingers)
        p.setJointMotorControlArray(self.handles.robot, self._fingers, p.VELOCITY_CONTROL,
                                    targetVelocities=[v / n] * n, forces=[f] * n,
                                    physicsClientId=self._cid)

    # ------------------------------------------------------------------ objects

    def object_poses(self, names: Any = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """World position and quaternion (x, y, z, w) of scene objects, by name."""
        import pybullet as p

        self._require_connected()
        objs = self.handles.objects
        wanted = list(objs) if names is None else list(names)
        out = {}
        for name in wanted:
            if name not in objs:
                raise KeyError(f"scene {self.spec.name!r} has no object {name!r}; "
                               f"objects are {sorted(objs)}")
            pos, orn = p.getBasePositionAndOrientation(objs[name], physicsClientId=self._cid)
            out[name] = (np.array(pos), np.array(orn))
        return out

    def reset_objects(self) -> None:
        """Put every scene object back where the scene placed it, at rest (simulation only)."""
        import pybullet as p

        self._require_connected()
        for name, body in self.handles.objects.items():
            pos, orn = self._object_start[name]
            p.resetBasePositionAndOrientation(body, pos, orn, physicsClientId=self._cid)
            p.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0], physicsClientId=self._cid)

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

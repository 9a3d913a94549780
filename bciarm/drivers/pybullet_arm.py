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

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bciarm.drivers.base import Driver, DriverError, JointLimits, JointState, RobotModel
from bciarm.sim.scene import SceneHandles, SceneSpec, load_scene

#: Colour of the target sphere (RGBA).
TARGET_RGBA = (0.1, 0.8, 0.2, 0.6)


class PyBulletArmDriver(Driver):
    """A robot arm simulated in pybullet, commanded in joint velocities.

    Parameters
    ----------
    scene : str or Path
        Scene registry name or path to a scene YAML file.
    gui : bool
        Open the pybullet GUI (needs a display; one GUI per process).
    physics_dt : float, optional
        Physics step, s; default from the scene file.

    Attributes
    ----------
    spec : SceneSpec
        The loaded scene layout.
    handles : SceneHandles or None
        Bodies and joint indices, once connected.
    time_s : float
        Simulated time since connect, s.
    """

    simulated = True

    def __init__(self, scene: str | Path = "arm_table", gui: bool = False,
                 physics_dt: float | None = None) -> None:
        super().__init__()
        # Reading the layout is cheap and catches a bad scene before anything opens.
        self.spec: SceneSpec = load_scene(scene)
        self.gui = bool(gui)
        self.physics_dt = float(physics_dt if physics_dt is not None else self.spec.physics_dt)
        if not np.isfinite(self.physics_dt) or self.physics_dt <= 0:
            raise ValueError(f"physics_dt must be positive, got {physics_dt!r}")
        self.handles: SceneHandles | None = None
        self.time_s = 0.0
        self._cid = -1
        self._target_body: int | None = None
        self._target_radius = 0.0

    # ------------------------------------------------------------------ Driver API

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.spec.robot.joints

    @property
    def limits(self) -> JointLimits:
        if self.handles is None:
            raise DriverError("PyBulletArmDriver: limits come from the URDF; connect() first")
        return self.handles.limits

    @property
    def client_id(self) -> int:
        """pybullet client id (for tests and tools that inspect the simulation)."""
        self._require_connected()
        return self._cid

    def robot_model(self) -> RobotModel:
        return self.spec.robot_model()

    def _connect(self) -> None:
        import pybullet as p

        if self.gui:
            if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
                raise DriverError("PyBulletArmDriver(gui=True) needs a display, but DISPLAY is "
                                  "not set; run headless with gui=False")
            cid = p.connect(p.GUI)
            if cid < 0:
                raise DriverError("PyBulletArmDriver(gui=True): pybullet could not open a GUI "
                                  "window (no display, or a GUI is already open in this process)")
        else:
            cid = p.connect(p.DIRECT)
        self._cid = cid
        try:
            self.handles = self.spec.build(cid)
            p.setTimeStep(self.physics_dt, physicsClientId=cid)
            if self.gui:
                p.configureDebugVisualizer(p.COV_ENABLE_GUI, 0, physicsClientId=cid)
                base = self.spec.robot.base_position
                p.resetDebugVisualizerCamera(1.4, 50, -30, [base[0] + 0.5, base[1], base[2]],
                                             physicsClientId=cid)
            self._command_velocity(np.zeros(len(self.joint_names)))
        except Exception:
            p.disconnect(cid)
            self._cid = -1
            self.handles = None
            raise
        self.time_s = 0.0

    def _read(self) -> JointState:
        import pybullet as p

        h = self.handles
        states = p.getJointStates(h.robot, h.joint_indices, physicsClientId=self._cid)
        return JointState(position=np.array([s[0] for s in states]),
                          velocity=np.array([s[1] for s in states]), t_s=self.time_s)

    def _command_velocity(self, qdot: np.ndarray) -> None:
        import pybullet as p

        h = self.handles
        p.setJointMotorControlArray(h.robot, h.joint_indices, p.VELOCITY_CONTROL,
                                    targetVelocities=qdot.tolist(), forces=h.max_force.tolist(),
                                    physicsClientId=self._cid)

    def _close(self) -> None:
        import pybullet as p

        if self._cid >= 0:
            try:
                p.disconnect(self._cid)
            finally:
                self._cid = -1
                self.handles = None

    def advance(self, dt: float) -> None:
        """Step the physics by ``dt`` seconds (a whole number of physics steps).

        Raises
        ------
        ValueError
            ``dt`` is not a positive multiple of ``physics_dt``.
        """
        import pybullet as p

        self._require_connected()
        n = round(dt / self.physics_dt)
        if n < 1 or abs(n * self.physics_dt - dt) > 1e-9 * max(1.0, dt):
            raise ValueError(f"advance(dt={dt}) needs a positive multiple of "
                             f"physics_dt={self.physics_dt}")
        for _ in range(n):
            p.stepSimulation(physicsClientId=self._cid)
        self.time_s += n * self.physics_dt

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

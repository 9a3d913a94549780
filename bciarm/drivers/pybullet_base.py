"""Shared base of the pybullet-simulated drivers (arm, wheelchair).

A scene is loaded into a private pybullet client; the robot's controlled
joints run under ``VELOCITY_CONTROL`` with the scene's motor forces, and time
only passes in :meth:`PyBulletDriver.advance`.  Subclasses add what is
particular to their device through two hooks: :meth:`_setup` (after the scene
is built) and :meth:`_camera` (GUI view).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from bciarm.drivers.base import Driver, DriverError, JointLimits, JointState, RobotModel
from bciarm.sim.scene import SceneHandles, SceneSpec, load_scene


class PyBulletDriver(Driver):
    """A device simulated in pybullet, commanded in joint velocities.

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

    def __init__(self, scene: str | Path, gui: bool = False,
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

    # ------------------------------------------------------------------ Driver API

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.spec.robot.joints

    @property
    def limits(self) -> JointLimits:
        if self.handles is None:
            raise DriverError(f"{type(self).__name__}: limits come from the URDF; connect() first")
        return self.handles.limits

    @property
    def client_id(self) -> int:
        """pybullet client id (for tests and tools that inspect the simulation)."""
        self._require_connected()
        return self._cid

    def robot_model(self) -> RobotModel:
        return self.spec.robot_model()

    # ------------------------------------------------------------------ hooks

    def _setup(self, cid: int) -> None:
        """Device-specific set-up after the scene is built (default: nothing)."""

    def _camera(self, cid: int) -> None:
        """Point the GUI camera at the device (default: pybullet's view)."""

    # ------------------------------------------------------------------ Driver hooks

    def _connect(self) -> None:
        import pybullet as p

        name = type(self).__name__
        if self.gui:
            if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
                raise DriverError(f"{name}(gui=True) needs a display, but DISPLAY is not set; "
                                  "run without --gui (headless)")
            cid = p.connect(p.GUI)
            if cid < 0:
                raise DriverError(f"{name}(gui=True): pybullet could not open a GUI window "
                                  "(no display, or a GUI is already open in this process)")
        else:
            cid = p.connect(p.DIRECT)
        self._cid = cid
        try:
            self.handles = self.spec.build(cid)
            p.setTimeStep(self.physics_dt, physicsClientId=cid)
            self._setup(cid)
            if self.gui:
                p.configureDebugVisualizer(p.COV_ENABLE_GUI, 0, physicsClientId=cid)
                self._camera(cid)
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
                self._target_body = None

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

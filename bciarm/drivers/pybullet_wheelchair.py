"""Simulated powered wheelchair: a differential-drive chair in a pybullet apartment.

The scene (default ``apartment``) holds the chair URDF
(``scenes/assets/wheelchair.urdf``: two driven wheels, four free casters,
seat and occupant, 195 kg) and a static layout of walls and furniture.
The driven wheels run under ``VELOCITY_CONTROL`` with the scene's motor
torque, so the chair accelerates, brakes and slips like a torque-limited
vehicle; the casters are frictionless spheres (free swivel).

Besides the :class:`~bciarm.drivers.base.Driver` contract (wheel joint
velocities) the driver exposes the chair's pose, its velocity, the planar
range sensor (pybullet ray tests from the chair frame, ``range_sensor`` in
the scene: 64 beams, 0.05-4 m), the true clearance to the layout and contact
(collision) with it.  Rays ignore the chair itself (collision filter
groups).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bciarm.drivers.base import DriverError
from bciarm.drivers.pybullet_base import PyBulletDriver
from bciarm.sim.scene import RangeSensorSpec

#: Collision filter group of the chair's links (environment bodies are group 1).
CHAIR_GROUP = 2
#: Clearance queries look this far (m); farther reads as this value.
CLEARANCE_HORIZON = 1.0


class PyBulletWheelchairDriver(PyBulletDriver):
    """A wheelchair simulated in pybullet, commanded in wheel velocities (rad/s).

    Parameters
    ----------
    scene : str or Path
        Scene registry name or YAML path (a ``kind: mobile`` scene).
    gui : bool
        Open the pybullet GUI (needs a display).
    physics_dt : float, optional
        Physics step, s; default from the scene.
    start : sequence of 3 floats, optional
        Start pose ``(x, y, yaw)`` (m, m, rad); default the scene's.

    Attributes
    ----------
    spec : SceneSpec
    handles : SceneHandles or None
    time_s : float
        Simulated time since connect, s.
    """

    def __init__(self, scene: str | Path = "apartment", gui: bool = False,
                 physics_dt: float | None = None, start: Any = None) -> None:
        super().__init__(scene, gui, physics_dt)
        if self.spec.kind != "mobile" or self.spec.range_sensor is None:
            raise ValueError(f"scene {self.spec.name!r} is not a mobile scene with a range sensor")
        self.start = None if start is None else np.asarray(start, dtype=float).reshape(3)
        self._angles = self.spec.range_sensor.angles()

    # ------------------------------------------------------------------ geometry from the URDF

    @property
    def sensor(self) -> RangeSensorSpec:
        assert self.spec.range_sensor is not None
        return self.spec.range_sensor

    def geometry(self) -> dict[str, float]:
        """Wheel radius, track (wheel separation) and footprint, read from the URDF.

        Returns
        -------
        dict
            ``wheel_radius``, ``track``, ``front``, ``rear``, ``half_width`` (m):
            the footprint is the rectangle x in [-rear, front], |y| <= half_width
            in the chair frame (the bounding box of every collision shape).
        """
        import pybullet as p

        self._require_connected()
        h, cid = self.handles, self._cid
        left, right = h.joint_indices
        radius = None
        for j in (left, right):
            for shape in p.getCollisionShapeData(h.robot, j, physicsClientId=cid):
                if shape[2] == p.GEOM_CYLINDER:
                    radius = float(shape[3][1])
        track = abs(p.getJointInfo(h.robot, left, physicsClientId=cid)[14][1]
                    - p.getJointInfo(h.robot, right, physicsClientId=cid)[14][1])
        x, y, yaw = self.pose()
        c, s = math.cos(yaw), math.sin(yaw)
        lo = np.full(2, np.inf)
        hi = np.full(2, -np.inf)
        for link in range(-1, p.getNumJoints(h.robot, physicsClientId=cid)):
            a, b = p.getAABB(h.robot, link, physicsClientId=cid)
            for cx in (a[0], b[0]):
                for cy in (a[1], b[1]):
                    d = np.array([cx - x, cy - y])
                    local = np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])
                    lo, hi = np.minimum(lo, local), np.maximum(hi, local)
        if radius is None:
            raise DriverError("wheel collision shapes must be cylinders to read the wheel radius")
        # AABBs of a level chair are tight in x/y up to pybullet's 0 margin for boxes.
        return {"wheel_radius": radius, "track": float(track), "front": float(hi[0]),
                "rear": float(-lo[0]), "half_width": float(max(hi[1], -lo[1]))}

    # ------------------------------------------------------------------ PyBulletDriver hooks

    def _setup(self, cid: int) -> None:
        import pybullet as p

        robot = self.handles.robot
        wheels = set(self.handles.joint_indices)
        for link in range(-1, p.getNumJoints(robot, physicsClientId=cid)):
            # The chair's own group, so range rays (mask 1) see only the layout.
            p.setCollisionFilterGroupMask(robot, link, CHAIR_GROUP, 0xFFFF, physicsClientId=cid)
            if link in wheels:
                p.changeDynamics(robot, link, lateralFriction=1.0, physicsClientId=cid)
            elif link >= 0 and "caster" in p.getJointInfo(robot, link,
                                                          physicsClientId=cid)[12].decode():
                p.changeDynamics(robot, link, lateralFriction=0.0, rollingFriction=0.0,
                                 spinningFriction=0.0, physicsClientId=cid)
        if self.start is not None:
            self._place(*self.start)

    def _camera(self, cid: int) -> None:
        import pybullet as p

        p.resetDebugVisualizerCamera(9.0, 0, -75, [5, 4, 0], physicsClientId=cid)

    # ------------------------------------------------------------------ chair state

    def pose(self) -> tuple[float, float, float]:
        """Chair frame ``(x, y, yaw)`` in the world (m, m, rad)."""
        import pybullet as p

        self._require_connected()
        pos, orn = p.getBasePositionAndOrientation(self.handles.robot, physicsClientId=self._cid)
        yaw = p.getEulerFromQuaternion(orn)[2]
        return float(pos[0]), float(pos[1]), float(yaw)

    def base_velocity(self) -> tuple[float, float, float]:
        """World ``(vx, vy, yaw rate)`` of the chair's ground point (under the axle).

        The ground point, not the axle: a mid-wheel-drive chair rocks on its
        drive wheels between the caster pairs, and the axle's velocity would
        carry that pitching (``h × pitch rate``) as spurious fore-aft motion.
        """
        import pybullet as p

        self._require_connected()
        lin, ang = p.getBaseVelocity(self.handles.robot, physicsClientId=self._cid)
        h = float(self.spec.robot.base_position[2])
        # v_ground = v_axle + ω × (0, 0, -h)
        return float(lin[0] - h * ang[1]), float(lin[1] + h * ang[0]), float(ang[2])

    def ranges(self) -> np.ndarray:
        """Range-sensor readings (m), one per beam, clipped to [min_range, max_range]."""
        import pybullet as p

        self._require_connected()
        x, y, yaw = self.pose()
        sen = self.sensor
        a = self._angles + yaw
        z = sen.height
        starts = [[x, y, z]] * sen.beams
        ends = np.c_[x + sen.max_range * np.cos(a), y + sen.max_range * np.sin(a),
                     np.full(sen.beams, z)]
        hits = p.rayTestBatch(starts, ends.tolist(), collisionFilterMask=1,
                              physicsClientId=self._cid)
        frac = np.array([h[2] if h[0] >= 0 else 1.0 for h in hits])
        return np.clip(frac * sen.max_range, sen.min_range, sen.max_range)

    def clearance(self) -> float:
        """True distance (m) between the chair and the layout; <= 0 in contact.

        Read from pybullet's closest points (ground truth, not the sensor);
        ``CLEARANCE_HORIZON`` when nothing is that close.
        """
        import pybullet as p

        self._require_connected()
        layout = self.handles.objects.get("layout")
        if layout is None:
            return CLEARANCE_HORIZON
        pts = p.getClosestPoints(self.handles.robot, layout, CLEARANCE_HORIZON,
                                 physicsClientId=self._cid)
        return float(min((q[8] for q in pts), default=CLEARANCE_HORIZON))

    def in_collision(self) -> bool:
        """True if the chair touches a wall or furniture."""
        import pybullet as p

        self._require_connected()
        layout = self.handles.objects.get("layout")
        if layout is None:
            return False
        return bool(p.getContactPoints(self.handles.robot, layout, physicsClientId=self._cid))

    def teleport(self, x: float, y: float, yaw: float) -> None:
        """Put the chair at rest at ``(x, y, yaw)`` (simulation set-up and tests)."""
        self._require_connected()
        self._place(x, y, yaw)

    def _place(self, x: float, y: float, yaw: float) -> None:
        import pybullet as p

        h = self.handles
        z = float(self.spec.robot.base_position[2])
        p.resetBasePositionAndOrientation(h.robot, [x, y, z],
                                          p.getQuaternionFromEuler([0, 0, yaw]),
                                          physicsClientId=self._cid)
        p.resetBaseVelocity(h.robot, [0, 0, 0], [0, 0, 0], physicsClientId=self._cid)
        for j in h.joint_indices:
            p.resetJointState(h.robot, j, 0.0, 0.0, physicsClientId=self._cid)

    def show_target(self, position: Any, radius: float) -> None:
        """Draw (or move) a flat translucent disc at ``position`` (visual only)."""
        import pybullet as p

        self._require_connected()
        pos = np.asarray(position, dtype=float).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)) or not (radius > 0):
            return
        at = [float(pos[0]), float(pos[1]), 0.01]
        if self._target_body is None:
            shape = p.createVisualShape(p.GEOM_CYLINDER, radius=float(radius), length=0.01,
                                        rgbaColor=(0.1, 0.8, 0.2, 0.5), physicsClientId=self._cid)
            self._target_body = p.createMultiBody(baseMass=0, baseCollisionShapeIndex=-1,
                                                  baseVisualShapeIndex=shape, basePosition=at,
                                                  physicsClientId=self._cid)
        else:
            p.resetBasePositionAndOrientation(self._target_body, at, [0, 0, 0, 1],
                                              physicsClientId=self._cid)

"""Arm kinematics from the URDF: forward kinematics and the geometric Jacobian.

:class:`ArmKinematics` loads the robot URDF into its *own* pybullet DIRECT
client, used only as a kinematics library (never stepped), so it works the
same under the simulated driver and under a real-device driver.  Joints and
the end-effector link are found by name.

Quaternions are (x, y, z, w), like pybullet.
"""

from __future__ import annotations

import sys
from types import TracebackType

import numpy as np

from bciarm.drivers.base import RobotModel
from bciarm.sim.scene import joint_indices_by_name, link_index_by_name


class KinematicsError(ValueError):
    """The robot description does not match the URDF (unknown joint or link)."""


class ArmKinematics:
    """Forward kinematics and Jacobian of one end-effector link.

    Parameters
    ----------
    model : RobotModel
        URDF, controlled joint names, end-effector link, base pose, and the
        positions of other movable joints (e.g. fingers).

    Notes
    -----
    pybullet's ``calculateJacobian`` answers in the robot *base* frame (a
    measured fact: with a rotated base its rows are off by the base rotation),
    so we rotate both blocks into the world frame.  Its ``localPosition`` is
    relative to the URDF link frame (measured with ``panda_hand``, whose
    centre of mass is 4 cm off its frame: passing the COM offset gave a 4 cm
    lever-arm error), so the zero vector gives the Jacobian of the same point
    :meth:`forward` reports.  ``tests/effectors/test_kinematics.py`` checks both
    facts against finite differences.
    """

    def __init__(self, model: RobotModel) -> None:
        import pybullet as p

        self._p = p
        self.model = model
        self.joint_names = tuple(model.joint_names)
        self._cid = p.connect(p.DIRECT)
        if self._cid < 0:  # pragma: no cover - DIRECT cannot fail short of OOM
            raise KinematicsError("could not open a pybullet DIRECT client for kinematics")
        try:
            self._body = p.loadURDF(str(model.urdf), list(model.base_position),
                                    list(model.base_orientation), useFixedBase=True,
                                    physicsClientId=self._cid)
            by_name = joint_indices_by_name(self._cid, self._body)
            for name in (*self.joint_names, *model.fixed_joints):
                if name not in by_name:
                    raise KinematicsError(f"{model.urdf.name} has no joint {name!r}; "
                                          f"joints are {sorted(by_name)}")
            self._joints = [by_name[n] for n in self.joint_names]
            try:
                self._ee = link_index_by_name(self._cid, self._body, model.ee_link)
            except KeyError as exc:
                raise KinematicsError(f"{model.urdf.name}: {exc.args[0]}") from None
            # calculateJacobian wants positions for every movable DOF, in joint-index order.
            movable = [j for j in range(p.getNumJoints(self._body, physicsClientId=self._cid))
                       if p.getJointInfo(self._body, j, physicsClientId=self._cid)[2]
                       != p.JOINT_FIXED]
            self._dof_q = np.zeros(len(movable))
            for name, value in model.fixed_joints.items():
                j = by_name[name]
                self._dof_q[movable.index(j)] = value
                p.resetJointState(self._body, j, value, physicsClientId=self._cid)
            self._cols = np.array([movable.index(j) for j in self._joints])
            self._zeros = [0.0] * len(movable)
            self._local = [0.0, 0.0, 0.0]  # URDF link-frame origin (see Notes)
            self._base_rot = np.array(p.getMatrixFromQuaternion(
                list(model.base_orientation))).reshape(3, 3)
        except Exception:
            p.disconnect(self._cid)
            raise
        self._q_loaded: np.ndarray | None = None
        self._fk: tuple[np.ndarray, np.ndarray] | None = None
        self._jac: np.ndarray | None = None

    @classmethod
    def from_scene(cls, scene: str) -> "ArmKinematics":
        """Kinematics of the robot of scene ``scene`` (registry name or path)."""
        from bciarm.sim.scene import load_scene

        return cls(load_scene(scene).robot_model())

    @property
    def n(self) -> int:
        """Number of controlled joints."""
        return len(self.joint_names)

    def _set(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=float).reshape(-1)
        if self._q_loaded is not None and q.shape == self._q_loaded.shape and (
                q.tobytes() == self._q_loaded.tobytes()):
            return  # same (finite) q as loaded: nothing to do
        if q.shape != (self.n,) or not np.all(np.isfinite(q)):
            raise ValueError(f"need {self.n} finite joint positions, got {q!r}")
        p = self._p
        for j, value in zip(self._joints, q):
            p.resetJointState(self._body, j, float(value), physicsClientId=self._cid)
        self._q_loaded = q.copy()
        # A control tick asks for the pose and Jacobian of the same q twice
        # (before commanding, and for the state it publishes after the step,
        # which is the next tick's "before"): memoise both per q.
        self._fk = None
        self._jac = None

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector pose at joint positions ``q``.

        Returns
        -------
        position : ndarray, shape (3,)
            World coordinates, m.
        orientation : ndarray, shape (4,)
            World orientation quaternion (x, y, z, w).
        """
        self._set(q)
        if self._fk is None:
            s = self._p.getLinkState(self._body, self._ee, computeForwardKinematics=True,
                                     physicsClientId=self._cid)
            self._fk = (np.array(s[4]), np.array(s[5]))
        return self._fk[0].copy(), self._fk[1].copy()

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Geometric Jacobian of the end-effector at ``q``, world frame.

        Returns
        -------
        ndarray, shape (6, n)
            Rows 0-2 linear velocity (m/s per rad/s), rows 3-5 angular velocity.
        """
        q = np.asarray(q, dtype=float).reshape(-1)
        self._set(q)
        if self._jac is None:
            dof_q = self._dof_q.copy()
            dof_q[self._cols] = q
            lin, ang = self._p.calculateJacobian(self._body, self._ee, self._local,
                                                 dof_q.tolist(), self._zeros, self._zeros,
                                                 physicsClientId=self._cid)
            rot = self._base_rot
            self._jac = np.vstack([rot @ np.asarray(lin)[:, self._cols],
                                   rot @ np.asarray(ang)[:, self._cols]])
        return self._jac.copy()

    def close(self) -> None:
        """Release the pybullet client.  Safe to call twice."""
        if self._cid is not None and self._cid >= 0:
            try:
                self._p.disconnect(self._cid)
            except Exception:  # already gone (interpreter shutting down)
                pass
            self._cid = -1

    def __enter__(self) -> "ArmKinematics":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover
        if sys.meta_path is None:  # interpreter exit: pybullet may be gone
            return
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- quaternions


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b of (x, y, z, w) quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion."""
    return np.array([-q[0], -q[1], -q[2], q[3]])


def orientation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame, rad) that turns ``current`` into ``target``.

    Driving the end-effector's angular velocity along this vector closes the
    orientation error; it takes the short way round.
    """
    d = quat_multiply(np.asarray(target, float), quat_conjugate(np.asarray(current, float)))
    if d[3] < 0:  # q and -q are the same rotation; take the short way
        d = -d
    s = np.linalg.norm(d[:3])
    if s < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(s, d[3])
    return d[:3] / s * angle

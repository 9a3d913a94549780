"""Gravity torques of the exoskeleton and the arm it carries (pybullet inverse dynamics).

:class:`GravityModel` loads the robot URDF (exoskeleton links *and* the
patient's segments, see ``scenes/assets/upper_limb_exo.urdf``) into its own
pybullet DIRECT client, used only as a dynamics library (never stepped), and
answers ``τ_g(q) = ID(q, q̇ = 0, q̈ = 0)``: the joint torques that hold the arm
still against gravity.  Works the same under the simulated and a real-device
driver.
"""

from __future__ import annotations

import sys

import numpy as np

from bciarm.drivers.base import RobotModel
from bciarm.sim.scene import joint_indices_by_name


class GravityModel:
    """Gravity torques at the controlled joints.

    Parameters
    ----------
    model : RobotModel
        URDF, controlled joint names, base pose and held joints.
    gravity : array_like, shape (3,)
        World gravity, m/s².
    """

    def __init__(self, model: RobotModel, gravity: tuple[float, float, float] = (0.0, 0.0, -9.81)
                 ) -> None:
        import pybullet as p

        self._p = p
        self.joint_names = tuple(model.joint_names)
        self._cid = p.connect(p.DIRECT)
        try:
            p.setGravity(*[float(g) for g in gravity], physicsClientId=self._cid)
            self._body = p.loadURDF(str(model.urdf), list(model.base_position),
                                    list(model.base_orientation), useFixedBase=True,
                                    physicsClientId=self._cid)
            by_name = joint_indices_by_name(self._cid, self._body)
            missing = [n for n in self.joint_names if n not in by_name]
            if missing:
                raise ValueError(f"{model.urdf.name} has no joint(s) {missing}")
            movable = [j for j in range(p.getNumJoints(self._body, physicsClientId=self._cid))
                       if p.getJointInfo(self._body, j, physicsClientId=self._cid)[2]
                       != p.JOINT_FIXED]
            self._cols = np.array([movable.index(by_name[n]) for n in self.joint_names])
            self._q = np.zeros(len(movable))
            for name, value in model.fixed_joints.items():
                if name in by_name:
                    self._q[movable.index(by_name[name])] = value
            self._zeros = [0.0] * len(movable)
        except Exception:
            p.disconnect(self._cid)
            raise

    @property
    def n(self) -> int:
        return len(self.joint_names)

    def gravity_torque(self, q: np.ndarray) -> np.ndarray:
        """``ID(q, 0, 0)``: torques (N·m) holding the joints still at ``q`` (rad)."""
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (self.n,) or not np.all(np.isfinite(q)):
            raise ValueError(f"need {self.n} finite joint positions, got {q!r}")
        full = self._q.copy()
        full[self._cols] = q
        tau = self._p.calculateInverseDynamics(self._body, full.tolist(), self._zeros,
                                               self._zeros, physicsClientId=self._cid)
        return np.asarray(tau, dtype=float)[self._cols]

    def close(self) -> None:
        """Release the pybullet client.  Safe to call twice."""
        if self._cid is not None and self._cid >= 0:
            try:
                self._p.disconnect(self._cid)
            except Exception:
                pass
            self._cid = -1

    def __del__(self) -> None:  # pragma: no cover
        if sys.meta_path is None:
            return
        try:
            self.close()
        except Exception:
            pass

"""ArmKinematics against finite differences, for both end-effector links and a rotated base."""

from __future__ import annotations

import dataclasses

import numpy as np
import pybullet as p
import pytest

from bciarm.effectors.kinematics import (
    ArmKinematics,
    KinematicsError,
    orientation_error,
    quat_conjugate,
    quat_multiply,
)
from bciarm.sim.scene import load_scene


@pytest.fixture(scope="module")
def model():
    return load_scene("arm_table").robot_model()


def numeric_jacobian(kin: ArmKinematics, q: np.ndarray, h: float = 1e-4) -> np.ndarray:
    jac = np.zeros((6, q.size))
    for i in range(q.size):
        dq = np.zeros(q.size)
        dq[i] = h
        x1, o1 = kin.forward(q + dq)
        x0, o0 = kin.forward(q - dq)
        jac[:3, i] = (x1 - x0) / (2 * h)
        jac[3:, i] = orientation_error(o1, o0) / (2 * h)
    return jac


@pytest.mark.parametrize("ee_link", ["panda_grasptarget", "panda_hand"])
@pytest.mark.parametrize("base_rpy", [(0.0, 0.0, 0.0), (0.3, -0.2, 1.0)])
def test_jacobian_matches_finite_differences(model, ee_link, base_rpy):
    m = dataclasses.replace(model, ee_link=ee_link,
                            base_orientation=np.array(p.getQuaternionFromEuler(base_rpy)))
    rng = np.random.default_rng(1)
    with ArmKinematics(m) as kin:
        for _ in range(3):
            q = m.home_vector() + rng.normal(0, 0.2, kin.n)
            jac = kin.jacobian(q)
            assert jac.shape == (6, 7)
            # pybullet positions are float32-ish: 1e-4 steps give ~5e-4 agreement.
            assert np.abs(jac - numeric_jacobian(kin, q)).max() < 2e-3


def test_home_pose_is_in_front_pointing_down(model):
    with ArmKinematics(model) as kin:
        x, quat = kin.forward(model.home_vector())
    base = model.base_position
    assert 0.45 < x[0] - base[0] < 0.55 and abs(x[1] - base[1]) < 0.01
    assert 0.15 < x[2] - 0.625 < 0.35  # above the table top
    # The gripper's z axis points down the world z axis.
    z_axis = np.array(p.getMatrixFromQuaternion(quat)).reshape(3, 3)[:, 2]
    assert z_axis @ np.array([0, 0, -1.0]) > 0.999
    assert np.all(x >= model.workspace_lower) and np.all(x <= model.workspace_upper)


def test_rejects_bad_input_and_unknown_names(model):
    with ArmKinematics(model) as kin:
        with pytest.raises(ValueError):
            kin.forward(np.zeros(6))
        with pytest.raises(ValueError):
            kin.jacobian(np.full(7, np.nan))
    with pytest.raises(KinematicsError, match="no link named 'gripper'"):
        ArmKinematics(dataclasses.replace(model, ee_link="gripper"))
    with pytest.raises(KinematicsError, match="no joint 'elbow'"):
        ArmKinematics(dataclasses.replace(model, joint_names=("panda_joint1", "elbow")))


def test_close_twice_is_safe(model):
    kin = ArmKinematics(model)
    kin.close()
    kin.close()


def test_orientation_error():
    q0 = np.array(p.getQuaternionFromEuler([np.pi, 0, 0]))
    turn = np.array(p.getQuaternionFromEuler([0, 0, 0.3]))
    q1 = quat_multiply(turn, q0)  # q0 turned 0.3 rad about world z
    assert np.allclose(orientation_error(q1, q0), [0, 0, 0.3], atol=1e-9)
    assert np.allclose(orientation_error(q0, q1), [0, 0, -0.3], atol=1e-9)
    assert np.allclose(orientation_error(q0, -q0), 0.0)  # same rotation
    assert np.allclose(quat_multiply(q0, quat_conjugate(q0)), [0, 0, 0, 1])

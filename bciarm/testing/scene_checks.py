"""Checks every registered scene must pass (loads, names its joints, home is sane)."""

from __future__ import annotations

import numpy as np
import pybullet as p

from bciarm.effectors.kinematics import ArmKinematics
from bciarm.sim.scene import SceneSpec


def check_scene(name_or_path: str) -> None:
    """Load a scene headless and check it is usable by the arm stack.

    Checks: the layout validates; it builds in a DIRECT client; every named
    joint exists in the URDF (by name) with finite limits; the home posture
    lies inside the joint limits; the end-effector at home lies inside the
    workspace box; ``physics_dt`` divides the default 10 ms control tick.

    Raises
    ------
    AssertionError
        Naming the scene and what is wrong with it.
    """
    from bciarm.registry import scene_file

    spec = SceneSpec.from_file(scene_file(name_or_path))
    client = p.connect(p.DIRECT)
    try:
        handles = spec.build(client)
        n = len(handles.joint_names)
        assert n > 0, f"scene {spec.name!r}: the robot has no controlled joints"
        assert handles.joint_names == tuple(spec.robot.joints), (
            f"scene {spec.name!r}: joints {handles.joint_names} differ from the layout's "
            f"{spec.robot.joints}")
        lim = handles.limits
        for arr, what in ((lim.lower, "lower"), (lim.upper, "upper"), (lim.max_velocity, "velocity")):
            assert np.all(np.isfinite(arr)), f"scene {spec.name!r}: non-finite {what} joint limits"
        q = np.array([p.getJointState(handles.robot, j, physicsClientId=client)[0]
                      for j in handles.joint_indices])
        assert np.all(q >= lim.lower - 1e-9) and np.all(q <= lim.upper + 1e-9), (
            f"scene {spec.name!r}: home posture {q.round(3).tolist()} is outside the joint limits")
    finally:
        p.disconnect(client)
    kin = ArmKinematics(spec.robot_model())
    try:
        pos, _ = kin.forward(q)
    finally:
        kin.close()
    assert spec.workspace.contains(pos), (
        f"scene {spec.name!r}: the end-effector at home {pos.round(3).tolist()} is outside the "
        f"workspace box {spec.workspace.lower.tolist()}..{spec.workspace.upper.tolist()}")
    ratio = 0.01 / spec.physics_dt
    assert abs(ratio - round(ratio)) < 1e-9, (
        f"scene {spec.name!r}: physics_dt={spec.physics_dt} does not divide the 10 ms control tick")

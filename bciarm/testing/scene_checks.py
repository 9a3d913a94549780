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

    A mobile scene (``kind: mobile``) is checked as a vehicle instead of an
    arm: its controlled joints are continuous (wheels, no position limits)
    with finite speed limits; the robot starts inside the workspace (floor
    area) clear of every wall and piece of furniture, at rest on the floor
    (it neither falls through nor moves by itself in 1 s of physics); its
    range sensor sees something within range; every named place lies in
    the workspace and is not inside furniture.

    Raises
    ------
    AssertionError
        Naming the scene and what is wrong with it.
    """
    from bciarm.registry import scene_file

    spec = SceneSpec.from_file(scene_file(name_or_path))
    if spec.kind == "mobile":
        _check_mobile_scene(spec)
        return
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


def _check_mobile_scene(spec: SceneSpec) -> None:
    name = spec.name
    ratio = 0.01 / spec.physics_dt
    assert abs(ratio - round(ratio)) < 1e-9, (
        f"scene {name!r}: physics_dt={spec.physics_dt} does not divide the 10 ms control tick")
    assert spec.range_sensor is not None, f"scene {name!r}: a mobile scene needs a range sensor"
    for place, xy in spec.places.items():
        assert spec.workspace.contains(np.r_[xy, 0.0]), (
            f"scene {name!r}: place {place!r} {xy.tolist()} is outside the workspace")
        inside = [b.name for b in spec.boxes
                  if np.all(np.abs(xy - b.centre[:2]) < b.size[:2] / 2)]
        assert not inside, f"scene {name!r}: place {place!r} lies inside {inside}"
    client = p.connect(p.DIRECT)
    try:
        h = spec.build(client)
        lim = h.limits
        assert len(h.joint_names) > 0, f"scene {name!r}: the robot has no controlled joints"
        assert np.all(np.isfinite(lim.max_velocity)), f"scene {name!r}: non-finite speed limits"
        start, _ = p.getBasePositionAndOrientation(h.robot, physicsClientId=client)
        assert spec.workspace.contains(np.asarray(start)), (
            f"scene {name!r}: the robot starts at {np.round(start, 3).tolist()}, outside the "
            f"workspace")
        layout = h.objects.get("layout")
        if layout is not None:
            close = p.getClosestPoints(h.robot, layout, 0.05, physicsClientId=client)
            assert not close, f"scene {name!r}: the robot starts within 5 cm of the layout"
        p.setJointMotorControlArray(h.robot, h.joint_indices, p.VELOCITY_CONTROL,
                                    targetVelocities=[0.0] * len(h.joint_indices),
                                    forces=h.max_force.tolist(), physicsClientId=client)
        for _ in range(round(1.0 / spec.physics_dt)):
            p.stepSimulation(physicsClientId=client)
        end, _ = p.getBasePositionAndOrientation(h.robot, physicsClientId=client)
        drift = float(np.linalg.norm(np.subtract(end, start)))
        assert drift < 0.02, (f"scene {name!r}: the robot moved {drift:.3f} m by itself in 1 s "
                              f"(falling, or not resting on the floor)")
        sen = spec.range_sensor
        hits = p.rayTestBatch([list(end)] * 8, [[end[0] + sen.max_range * np.cos(a),
                                                 end[1] + sen.max_range * np.sin(a), end[2]]
                                                for a in np.linspace(0, 2 * np.pi, 8,
                                                                     endpoint=False)],
                              physicsClientId=client)
        assert any(hit[0] >= 0 and hit[0] != h.robot for hit in hits), (
            f"scene {name!r}: the range sensor would see nothing within {sen.max_range} m")
    finally:
        p.disconnect(client)

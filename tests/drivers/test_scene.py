"""Scene files: loading by name, clear errors, building into pybullet."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data
import pytest
import yaml

from bciarm import registry
from bciarm.sim.scene import SceneError, SceneSpec, load_scene, resolve_asset


@pytest.fixture
def client():
    cid = p.connect(p.DIRECT)
    yield cid
    p.disconnect(cid)


def scene_dict() -> dict:
    return yaml.safe_load(registry.scene_file("arm_table").read_text())


def write(tmp_path: Path, data: dict, name: str = "scene.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_scene_found_by_name():
    assert "arm_table" in registry.names("scene")
    spec = load_scene("arm_table")
    assert spec.name == "arm_table"
    assert spec.robot.urdf == Path(pybullet_data.getDataPath()) / "franka_panda/panda.urdf"
    assert spec.robot.joints == tuple(f"panda_joint{i}" for i in range(1, 8))
    assert spec.physics_dt == 0.005
    assert np.all(spec.workspace.upper > spec.workspace.lower)


def test_build_finds_joints_by_name_from_the_urdf(client):
    spec = load_scene("arm_table")
    h = spec.build(client)
    for name, j in zip(h.joint_names, h.joint_indices):
        assert p.getJointInfo(h.robot, j, physicsClientId=client)[1].decode() == name
    assert p.getJointInfo(h.robot, h.ee_link, physicsClientId=client)[12].decode() == \
        "panda_grasptarget"
    assert "table" in h.objects
    # Limits come from the URDF.
    assert np.allclose(h.limits.max_velocity, [2.175] * 4 + [2.61] * 3)
    assert h.limits.upper[3] == pytest.approx(0.0)
    assert np.allclose(h.max_force, [87.0] * 4 + [12.0] * 3)
    # At home, by joint name.
    q = [p.getJointState(h.robot, j, physicsClientId=client)[0] for j in h.joint_indices]
    assert np.allclose(q, [spec.robot.home[n] for n in h.joint_names])


def test_robot_stands_on_the_table(client):
    spec = load_scene("arm_table")
    h = spec.build(client)
    table_top = p.getAABB(h.objects["table"], physicsClientId=client)[1][2]
    assert spec.robot.base_position[2] == pytest.approx(table_top, abs=0.002)
    assert spec.workspace.lower[2] > table_top + 0.05  # the gripper stays clear of the top


def test_missing_key_names_file_and_key(tmp_path):
    data = scene_dict()
    del data["robot"]["ee_link"]
    path = write(tmp_path, data)
    with pytest.raises(SceneError) as err:
        SceneSpec.from_file(path)
    assert str(path) in str(err.value) and "robot.ee_link" in str(err.value)

    data = scene_dict()
    del data["workspace"]["upper"]
    with pytest.raises(SceneError, match=r"scene\.yaml.*workspace\.upper"):
        SceneSpec.from_file(write(tmp_path, data))

    data = scene_dict()
    del data["physics_dt"]
    with pytest.raises(SceneError, match="physics_dt"):
        SceneSpec.from_file(write(tmp_path, data))


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["robot"].update(joints="panda_joint1"), "robot.joints"),
    (lambda d: d["robot"]["home"].pop("panda_joint4"), "robot.home"),
    (lambda d: d["robot"]["home"].update(panda_joint9=0.0), "robot.home"),
    (lambda d: d["robot"].update(base_position=[0, 0]), "robot.base_position"),
    (lambda d: d["robot"].update(urdf="pybullet_data:nope/none.urdf"), "robot.urdf"),
    (lambda d: d["objects"][0].update(position="here"), "objects[0].position"),
    (lambda d: d.update(physics_dt=-1), "physics_dt"),
    (lambda d: d["workspace"].update(upper=[-1, -1, -1]), "workspace.upper"),
    (lambda d: d.update(colour="red"), "colour"),
])
def test_bad_values_name_the_key(tmp_path, mutate, key):
    data = scene_dict()
    mutate(data)
    with pytest.raises(SceneError) as err:
        SceneSpec.from_file(write(tmp_path, data))
    assert key in str(err.value) and "scene.yaml" in str(err.value)


def test_unknown_joint_in_urdf_is_an_error(tmp_path, client):
    data = scene_dict()
    data["robot"]["joints"][0] = "shoulder"
    data["robot"]["home"]["shoulder"] = data["robot"]["home"].pop("panda_joint1")
    spec = SceneSpec.from_file(write(tmp_path, data))
    with pytest.raises(SceneError, match="no joint 'shoulder'"):
        spec.build(client)
    data = scene_dict()
    data["robot"]["ee_link"] = "gripper"
    with pytest.raises(SceneError, match="robot.ee_link.*no link named 'gripper'"):
        SceneSpec.from_file(write(tmp_path, data)).build(client)


def test_unknown_scene_and_unreadable_file(tmp_path):
    with pytest.raises(SceneError, match="no scene named 'moon_base'"):
        load_scene("moon_base")
    with pytest.raises(SceneError, match="cannot read"):
        SceneSpec.from_file(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("robot: [unclosed")
    with pytest.raises(SceneError, match="not valid YAML"):
        SceneSpec.from_file(bad)


def test_asset_paths_relative_to_the_scene_file(tmp_path, client):
    shutil.copy(Path(pybullet_data.getDataPath()) / "table/table.urdf", tmp_path / "t.urdf")
    for mesh in (Path(pybullet_data.getDataPath()) / "table").glob("*.obj"):
        shutil.copy(mesh, tmp_path / mesh.name)
    data = scene_dict()
    data["objects"][0]["urdf"] = "t.urdf"
    spec = SceneSpec.from_file(write(tmp_path, data))
    assert spec.objects[0].urdf == tmp_path / "t.urdf"
    assert resolve_asset("pybullet_data:plane.urdf", tmp_path).is_file()
    spec.build(client)

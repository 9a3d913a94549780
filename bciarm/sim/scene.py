"""Scene layouts: a YAML file describing a robot cell, loaded into pybullet.

A scene file names the robot URDF, its base pose, the controlled joints (by
name, as in the URDF), the end-effector link, a home posture by joint name,
other objects (tables, ...), gravity, the physics time step and the workspace
box the end-effector must stay in.  See ``scenes/arm_table.yaml``.

Asset paths may be ``pybullet_data:<relative path>`` (files shipped with
pybullet), absolute, or relative to the scene file.

>>> spec = load_scene("arm_table")
>>> handles = spec.build(client_id)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bciarm.drivers.base import JointLimits, RobotModel

PYBULLET_DATA_PREFIX = "pybullet_data:"


class SceneError(ValueError):
    """A scene file is missing, malformed or names things the URDF lacks."""


# --------------------------------------------------------------------------- pybullet helpers


def joint_indices_by_name(client_id: int, body: int) -> dict[str, int]:
    """Map every joint name of ``body`` to its pybullet joint index."""
    import pybullet as p

    return {
        p.getJointInfo(body, j, physicsClientId=client_id)[1].decode("utf-8"): j
        for j in range(p.getNumJoints(body, physicsClientId=client_id))
    }


def link_index_by_name(client_id: int, body: int, link: str) -> int:
    """Index of link ``link`` of ``body`` (a link's index is its parent joint's).

    Raises
    ------
    KeyError
        No such link; the message lists the links there are.
    """
    import pybullet as p

    links = {}
    for j in range(p.getNumJoints(body, physicsClientId=client_id)):
        links[p.getJointInfo(body, j, physicsClientId=client_id)[12].decode("utf-8")] = j
    base = p.getBodyInfo(body, physicsClientId=client_id)[0].decode("utf-8")
    links.setdefault(base, -1)
    if link not in links:
        raise KeyError(f"no link named {link!r}; links are {sorted(links)}")
    return links[link]


def resolve_asset(ref: str, base_dir: Path) -> Path:
    """Resolve an asset reference (``pybullet_data:...``, absolute, or relative to ``base_dir``)."""
    if ref.startswith(PYBULLET_DATA_PREFIX):
        import pybullet_data

        return Path(pybullet_data.getDataPath()) / ref[len(PYBULLET_DATA_PREFIX):]
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base_dir / path


# --------------------------------------------------------------------------- YAML reading


class _Reader:
    """Read typed values out of a YAML mapping, naming file and key in errors."""

    def __init__(self, path: Path, data: Any, prefix: str = "") -> None:
        self.path = path
        self.prefix = prefix
        if not isinstance(data, dict):
            where = f"key {prefix!r}" if prefix else "top level"
            raise SceneError(f"{path}: {where} must be a mapping, got {type(data).__name__}")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> SceneError:
        return SceneError(f"{self.path}: key {self.key(name)!r}: {problem}")

    def get(self, name: str, default: Any = ...) -> Any:
        if name not in self.data:
            if default is ...:
                raise SceneError(f"{self.path}: missing required key {self.key(name)!r}")
            return default
        return self.data[name]

    def sub(self, name: str) -> "_Reader":
        return _Reader(self.path, self.get(name), self.key(name))

    def number(self, name: str, default: Any = ..., positive: bool = False) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, f"must be a number, got {value!r}")
        if not np.isfinite(value) or (positive and value <= 0):
            raise self.fail(name, f"must be a {'positive ' if positive else ''}finite number, "
                                  f"got {value!r}")
        return float(value)

    def vector(self, name: str, n: int, default: Any = ...) -> np.ndarray:
        value = self.get(name, default)
        try:
            a = np.array(value, dtype=float)
        except (TypeError, ValueError):
            raise self.fail(name, f"must be a list of {n} numbers, got {value!r}") from None
        if a.shape != (n,) or not np.all(np.isfinite(a)):
            raise self.fail(name, f"must be a list of {n} finite numbers, got {value!r}")
        return a

    def string(self, name: str, default: Any = ...) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, name: str, default: Any = ...) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value

    def names(self, name: str) -> tuple[str, ...]:
        value = self.get(name)
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, str) and v for v in value)):
            raise self.fail(name, f"must be a non-empty list of names, got {value!r}")
        if len(set(value)) != len(value):
            raise self.fail(name, f"names must be unique, got {value!r}")
        return tuple(value)

    def name_to_number(self, name: str, default: Any = ...) -> dict[str, float]:
        value = self.get(name, default)
        if not isinstance(value, dict):
            raise self.fail(name, f"must map joint names to numbers, got {value!r}")
        sub = _Reader(self.path, value, self.key(name))
        return {str(k): sub.number(k) for k in value}

    def asset(self, name: str) -> Path:
        ref = self.string(name)
        path = resolve_asset(ref, self.path.parent)
        if not path.is_file():
            raise self.fail(name, f"file {ref!r} not found (looked at {path})")
        return path

    def orientation(self) -> np.ndarray:
        """Quaternion (x, y, z, w) from ``rpy`` (radians) — or identity."""
        rpy = self.vector("rpy", 3, default=[0.0, 0.0, 0.0])
        return _quat_from_rpy(rpy)

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.data) - allowed)
        if unknown:
            raise SceneError(f"{self.path}: unknown key(s) "
                             f"{[self.key(k) for k in unknown]}; allowed: {sorted(allowed)}")


def _quat_from_rpy(rpy: np.ndarray) -> np.ndarray:
    # Same convention as pybullet.getQuaternionFromEuler (extrinsic X, Y, Z).
    r, p_, y = (float(v) / 2 for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p_), np.sin(p_), np.cos(y), np.sin(y)
    return np.array([
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    ])


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True, eq=False)
class WorkspaceBox:
    """Axis-aligned box in world coordinates (m)."""

    lower: np.ndarray
    upper: np.ndarray

    def contains(self, point: np.ndarray, tol: float = 0.0) -> bool:
        """True if ``point`` lies in the box grown by ``tol``."""
        point = np.asarray(point, dtype=float)
        return bool(np.all(point >= self.lower - tol) and np.all(point <= self.upper + tol))


@dataclass(frozen=True, eq=False)
class RobotSpec:
    """The robot part of a scene (see the module docstring)."""

    urdf: Path
    base_position: np.ndarray
    base_orientation: np.ndarray
    fixed_base: bool
    joints: tuple[str, ...]
    ee_link: str
    home: dict[str, float]
    hold: dict[str, float]
    max_force: dict[str, float]


@dataclass(frozen=True, eq=False)
class ObjectSpec:
    """A passive object of a scene (table, ...)."""

    name: str
    urdf: Path
    position: np.ndarray
    orientation: np.ndarray
    fixed: bool
    scale: float


@dataclass(eq=False)
class SceneHandles:
    """What :meth:`SceneSpec.build` made in a pybullet client.

    Attributes
    ----------
    client_id : int
    robot : int
        Body id of the robot.
    joint_names : tuple of str
    joint_indices : tuple of int
        pybullet joint indices of ``joint_names``, looked up by name.
    ee_link : int
        Link index of the end-effector.
    objects : dict of str to int
        Body ids of the other objects, by name.
    limits : JointLimits
        From the URDF.
    max_force : ndarray
        Motor force/torque per joint (URDF effort unless the scene overrides).
    """

    client_id: int
    robot: int
    joint_names: tuple[str, ...]
    joint_indices: tuple[int, ...]
    ee_link: int
    objects: dict[str, int]
    limits: JointLimits
    max_force: np.ndarray


@dataclass(frozen=True, eq=False)
class SceneSpec:
    """A scene layout loaded from YAML.  Build it into a client with :meth:`build`."""

    name: str
    path: Path
    gravity: np.ndarray
    physics_dt: float
    robot: RobotSpec
    objects: tuple[ObjectSpec, ...]
    workspace: WorkspaceBox
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_file(cls, path: str | Path) -> "SceneSpec":
        """Load and validate a scene file.

        Raises
        ------
        SceneError
            Naming the file and the offending key.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SceneError(f"{path}: cannot read scene file ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SceneError(f"{path}: not valid YAML: {exc}") from None
        top = _Reader(path, data)
        top.check_keys({"name", "description", "gravity", "physics_dt", "robot", "objects",
                        "workspace"})
        robot = _read_robot(top.sub("robot"))
        objs = top.get("objects", [])
        if not isinstance(objs, list):
            raise top.fail("objects", "must be a list of objects")
        objects = tuple(_read_object(_Reader(path, o, f"objects[{i}]")) for i, o in enumerate(objs))
        names = [o.name for o in objects]
        if len(set(names)) != len(names):
            raise top.fail("objects", f"object names must be unique, got {names}")
        ws = top.sub("workspace")
        ws.check_keys({"lower", "upper"})
        lower, upper = ws.vector("lower", 3), ws.vector("upper", 3)
        if np.any(upper <= lower):
            raise ws.fail("upper", f"must be above workspace.lower in every axis "
                                   f"(lower={lower.tolist()}, upper={upper.tolist()})")
        return cls(
            name=top.string("name", default=path.stem),
            path=path,
            description=str(top.get("description", "")),
            gravity=top.vector("gravity", 3, default=[0.0, 0.0, -9.81]),
            physics_dt=top.number("physics_dt", positive=True),
            robot=robot,
            objects=objects,
            workspace=WorkspaceBox(lower, upper),
        )

    # ------------------------------------------------------------------ derived views

    def robot_model(self) -> RobotModel:
        """The robot's kinematic description (for ArmKinematics and controllers)."""
        r = self.robot
        return RobotModel(
            urdf=r.urdf, joint_names=r.joints, ee_link=r.ee_link,
            base_position=r.base_position.copy(), base_orientation=r.base_orientation.copy(),
            fixed_joints=dict(r.hold), home=dict(r.home),
            workspace_lower=self.workspace.lower.copy(),
            workspace_upper=self.workspace.upper.copy(),
        )

    # ------------------------------------------------------------------ building

    def build(self, client_id: int) -> SceneHandles:
        """Load the scene into pybullet client ``client_id`` and reset the robot to home.

        Joints and the end-effector link are found by name in the URDF.

        Raises
        ------
        SceneError
            The URDF lacks a named joint or link, or a named joint is not movable.
        """
        import pybullet as p

        cid = client_id
        p.setGravity(*self.gravity, physicsClientId=cid)
        p.setTimeStep(self.physics_dt, physicsClientId=cid)
        objects: dict[str, int] = {}
        for obj in self.objects:
            objects[obj.name] = p.loadURDF(str(obj.urdf), obj.position.tolist(),
                                           obj.orientation.tolist(), useFixedBase=obj.fixed,
                                           globalScaling=obj.scale, physicsClientId=cid)
        r = self.robot
        robot = p.loadURDF(str(r.urdf), r.base_position.tolist(), r.base_orientation.tolist(),
                           useFixedBase=r.fixed_base, physicsClientId=cid)
        by_name = joint_indices_by_name(cid, robot)
        indices = []
        for name in r.joints:
            if name not in by_name:
                raise SceneError(f"{self.path}: key 'robot.joints': {r.urdf.name} has no joint "
                                 f"{name!r}; joints are {sorted(by_name)}")
            j = by_name[name]
            if p.getJointInfo(robot, j, physicsClientId=cid)[2] not in (p.JOINT_REVOLUTE,
                                                                          p.JOINT_PRISMATIC):
                raise SceneError(f"{self.path}: key 'robot.joints': joint {name!r} is fixed")
            indices.append(j)
        for key, mapping in (("robot.hold", r.hold), ("robot.max_force", r.max_force)):
            for name in mapping:
                if name not in by_name:
                    raise SceneError(f"{self.path}: key {key!r}: {r.urdf.name} has no joint "
                                     f"{name!r}; joints are {sorted(by_name)}")
        try:
            ee = link_index_by_name(cid, robot, r.ee_link)
        except KeyError as exc:
            raise SceneError(f"{self.path}: key 'robot.ee_link': {exc.args[0]}") from None

        infos = [p.getJointInfo(robot, j, physicsClientId=cid) for j in indices]
        limits = JointLimits(lower=[i[8] for i in infos], upper=[i[9] for i in infos],
                             max_velocity=[i[11] for i in infos])
        force = np.array([r.max_force.get(n, i[10]) for n, i in zip(r.joints, infos)])
        if not np.all(force > 0):
            raise SceneError(f"{self.path}: key 'robot.max_force': every joint needs a positive "
                             f"force (URDF effort missing?), got {dict(zip(r.joints, force))}")

        for name, j in zip(r.joints, indices):
            p.resetJointState(robot, j, r.home[name], 0.0, physicsClientId=cid)
        for name, value in r.hold.items():
            j = by_name[name]
            p.resetJointState(robot, j, value, 0.0, physicsClientId=cid)
            # Held joints (fingers) keep their posture with a position servo.
            p.setJointMotorControl2(robot, j, p.POSITION_CONTROL, targetPosition=value,
                                    force=float(r.max_force.get(name, 20.0)), physicsClientId=cid)
        return SceneHandles(cid, robot, r.joints, tuple(indices), ee, objects, limits, force)


def _read_robot(rd: _Reader) -> RobotSpec:
    rd.check_keys({"urdf", "base_position", "base_rpy", "fixed_base", "joints", "ee_link", "home",
                   "hold", "max_force"})
    joints = rd.names("joints")
    home = rd.name_to_number("home")
    missing = [j for j in joints if j not in home]
    extra = [j for j in home if j not in joints]
    if missing:
        raise rd.fail("home", f"gives no position for joint(s) {missing}")
    if extra:
        raise rd.fail("home", f"names joint(s) {extra} that are not in robot.joints")
    base_rpy = rd.vector("base_rpy", 3, default=[0.0, 0.0, 0.0])
    return RobotSpec(
        urdf=rd.asset("urdf"),
        base_position=rd.vector("base_position", 3, default=[0.0, 0.0, 0.0]),
        base_orientation=_quat_from_rpy(base_rpy),
        fixed_base=rd.boolean("fixed_base", default=True),
        joints=joints,
        ee_link=rd.string("ee_link"),
        home=home,
        hold=rd.name_to_number("hold", default={}),
        max_force=rd.name_to_number("max_force", default={}),
    )


def _read_object(rd: _Reader) -> ObjectSpec:
    rd.check_keys({"name", "urdf", "position", "rpy", "fixed", "scale"})
    return ObjectSpec(
        name=rd.string("name"),
        urdf=rd.asset("urdf"),
        position=rd.vector("position", 3, default=[0.0, 0.0, 0.0]),
        orientation=rd.orientation(),
        fixed=rd.boolean("fixed", default=True),
        scale=rd.number("scale", default=1.0, positive=True),
    )


def load_scene(name: str | Path) -> SceneSpec:
    """Load a scene by registry name (``"arm_table"``) or by path to a YAML file.

    Raises
    ------
    SceneError
        Unknown name, missing file, or an invalid file (naming file and key).
    """
    from bciarm.registry import RegistryError, scene_file

    if isinstance(name, Path) or str(name).endswith((".yaml", ".yml")):
        return SceneSpec.from_file(Path(name))
    try:
        path = scene_file(str(name))
    except RegistryError as exc:
        raise SceneError(str(exc)) from None
    return SceneSpec.from_file(path)

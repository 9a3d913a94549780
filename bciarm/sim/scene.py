"""Scene layouts: a YAML file describing a robot cell, loaded into pybullet.

A scene file names the robot URDF, its base pose, the controlled joints (by
name, as in the URDF), the end-effector link, a home posture by joint name,
other objects (tables, ...), gravity, the physics time step and the workspace
box the end-effector must stay in.  See ``scenes/arm_table.yaml``.

Mobile scenes (``kind: mobile``, e.g. ``scenes/apartment.yaml``) add a floor
plan: ``walls`` (segments with door gaps), ``boxes`` (furniture), ``places``
(named goals) and a ``range_sensor``.  All walls and furniture are built
into one static pybullet body (a compound box shape), ``objects["layout"]``.
For a mobile robot the workspace box is the floor area it may drive in.

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


SCENE_KINDS = ("arm", "mobile")


@dataclass(frozen=True, eq=False)
class BoxSpec:
    """A static box (wall segment or furniture), world frame.

    Attributes
    ----------
    name : str
    centre : ndarray, shape (3,)
    size : ndarray, shape (3,)
        Full extents along x, y, z (m).
    yaw : float
        Rotation about z (rad).
    rgba : tuple of float
    """

    name: str
    centre: np.ndarray
    size: np.ndarray
    yaw: float = 0.0
    rgba: tuple[float, float, float, float] = (0.8, 0.8, 0.78, 1.0)

    def corners_xy(self) -> np.ndarray:
        """Footprint corners (4, 2), counter-clockwise."""
        hx, hy = self.size[0] / 2, self.size[1] / 2
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
        return local @ np.array([[c, s], [-s, c]]) + self.centre[:2]


@dataclass(frozen=True, eq=False)
class RangeSensorSpec:
    """Planar ray-test range sensor on the robot base.

    Attributes
    ----------
    beams : int
        Number of beams, evenly spaced over 360 degrees, beam 0 straight ahead.
    min_range, max_range : float
        Readings are clipped to this interval (m); no hit reads ``max_range``.
    height : float
        Height of the beams above the floor (m).
    """

    beams: int = 32
    min_range: float = 0.05
    max_range: float = 4.0
    height: float = 0.25

    def angles(self) -> np.ndarray:
        """Beam angles in the robot frame (rad), beam 0 = straight ahead, counter-clockwise."""
        return 2.0 * np.pi * np.arange(self.beams) / self.beams


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
    gripper: "GripperSpec | None" = None


@dataclass(frozen=True, eq=False)
class GripperSpec:
    """A parallel gripper: its finger joints (URDF names) and settings.

    Attributes
    ----------
    joints : tuple of str
        Finger joints (prismatic), each opening by half the aperture.
    open : float
        Aperture at start, m.
    friction : float
        Lateral friction of the finger pads (grasping is by friction).
    """

    joints: tuple[str, ...]
    open: float
    friction: float


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
    kind: str = "arm"
    boxes: tuple[BoxSpec, ...] = ()
    places: dict[str, np.ndarray] = field(default_factory=dict)
    range_sensor: RangeSensorSpec | None = None

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
        top.check_keys({"name", "description", "kind", "gravity", "physics_dt", "robot",
                        "objects", "workspace", "walls", "boxes", "places", "range_sensor"})
        kind = top.string("kind", default="arm")
        if kind not in SCENE_KINDS:
            raise top.fail("kind", f"must be one of {list(SCENE_KINDS)}, got {kind!r}")
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
        boxes = _read_walls(top) + _read_boxes(top)
        places = _read_places(top)
        sensor = None
        if "range_sensor" in top.data:
            rs = top.sub("range_sensor")
            rs.check_keys({"beams", "min_range", "max_range", "height"})
            beams = rs.number("beams", default=32, positive=True)
            if beams != int(beams) or not 4 <= beams <= 360:
                raise rs.fail("beams", f"must be a whole number from 4 to 360, got {beams}")
            sensor = RangeSensorSpec(int(beams), rs.number("min_range", default=0.05, positive=True),
                                     rs.number("max_range", default=4.0, positive=True),
                                     rs.number("height", default=0.25, positive=True))
            if sensor.max_range <= sensor.min_range:
                raise rs.fail("max_range", "must exceed min_range")
        if kind == "mobile" and sensor is None:
            raise top.fail("range_sensor", "a mobile scene needs a range_sensor")
        return cls(
            name=top.string("name", default=path.stem),
            kind=kind,
            boxes=tuple(boxes),
            places=places,
            range_sensor=sensor,
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
        if self.boxes:
            objects["layout"] = build_boxes(cid, self.boxes)
        r = self.robot
        # Mobile robots roll on true cylinders (pybullet meshes them by default).
        flags = p.URDF_USE_IMPLICIT_CYLINDER if self.kind == "mobile" else 0
        robot = p.loadURDF(str(r.urdf), r.base_position.tolist(), r.base_orientation.tolist(),
                           useFixedBase=r.fixed_base, flags=flags, physicsClientId=cid)
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
        # Continuous joints (wheels) have no position limit: pybullet reports
        # lower 0, upper -1; they become (-inf, inf).
        cont = [i[2] == p.JOINT_REVOLUTE and i[9] < i[8] for i in infos]
        limits = JointLimits(lower=[-np.inf if c else i[8] for c, i in zip(cont, infos)],
                             upper=[np.inf if c else i[9] for c, i in zip(cont, infos)],
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


def build_boxes(client_id: int, boxes: tuple[BoxSpec, ...]) -> int:
    """Build static boxes into one fixed pybullet body (one link per box); return its id.

    One body keeps contact and closest-point queries to a single call.
    (``createVisualShapeArray`` with colours crashes pybullet 3.2.7, hence links.)
    """
    import pybullet as p

    cid = client_id
    cols, viss, pos, orn = [], [], [], []
    for b in boxes:
        half = (b.size / 2).tolist()
        cols.append(p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=cid))
        viss.append(p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=list(b.rgba),
                                        physicsClientId=cid))
        pos.append(b.centre.tolist())
        orn.append(p.getQuaternionFromEuler([0.0, 0.0, b.yaw]))
    n = len(boxes)
    return p.createMultiBody(
        baseMass=0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=-1,
        linkMasses=[0.0] * n, linkCollisionShapeIndices=cols, linkVisualShapeIndices=viss,
        linkPositions=pos, linkOrientations=orn, linkInertialFramePositions=[[0, 0, 0]] * n,
        linkInertialFrameOrientations=[[0, 0, 0, 1]] * n, linkParentIndices=[0] * n,
        linkJointTypes=[p.JOINT_FIXED] * n, linkJointAxis=[[0, 0, 1]] * n, physicsClientId=cid)


def _read_walls(top: _Reader) -> list[BoxSpec]:
    """``walls``: straight axis-aligned segments with door gaps, as boxes."""
    walls = top.get("walls", [])
    if not isinstance(walls, list):
        raise top.fail("walls", "must be a list of wall segments")
    boxes = []
    for i, w in enumerate(walls):
        rd = _Reader(top.path, w, f"walls[{i}]")
        rd.check_keys({"from", "to", "thickness", "height", "doors"})
        a, b = rd.vector("from", 2), rd.vector("to", 2)
        thick = rd.number("thickness", default=0.1, positive=True)
        height = rd.number("height", default=2.4, positive=True)
        if (a[0] != b[0]) == (a[1] != b[1]):
            raise rd.fail("to", "walls must be axis-aligned (same x or same y at both ends)")
        axis = 0 if a[0] != b[0] else 1
        lo, hi = sorted((a[axis], b[axis]))
        gaps = []
        doors = rd.get("doors", [])
        if not isinstance(doors, list):
            raise rd.fail("doors", "must be a list of {at, width}")
        for j, d in enumerate(doors):
            dr = _Reader(top.path, d, f"walls[{i}].doors[{j}]")
            dr.check_keys({"at", "width"})
            at, width = dr.number("at"), dr.number("width", positive=True)
            if not (lo < at - width / 2 and at + width / 2 < hi):
                raise dr.fail("at", f"door {at}±{width / 2} does not fit in the wall {lo}..{hi}")
            gaps.append((at - width / 2, at + width / 2))
        edges = [lo - thick / 2] + [e for g in sorted(gaps) for e in g] + [hi + thick / 2]
        for k in range(0, len(edges), 2):
            s0, s1 = edges[k], edges[k + 1]
            if s1 - s0 < 1e-6:
                continue
            centre = np.array([0.0, 0.0, height / 2])
            size = np.array([0.0, 0.0, height])
            centre[axis] = (s0 + s1) / 2
            centre[1 - axis] = a[1 - axis]
            size[axis] = s1 - s0
            size[1 - axis] = thick
            boxes.append(BoxSpec(f"wall{i}_{k // 2}", centre, size))
    return boxes


def _read_boxes(top: _Reader) -> list[BoxSpec]:
    """``boxes``: furniture, each ``{name, min: [x, y], max: [x, y], height, rgba}``."""
    items = top.get("boxes", [])
    if not isinstance(items, list):
        raise top.fail("boxes", "must be a list of boxes")
    out = []
    for i, item in enumerate(items):
        rd = _Reader(top.path, item, f"boxes[{i}]")
        rd.check_keys({"name", "min", "max", "height", "rgba"})
        lo, hi = rd.vector("min", 2), rd.vector("max", 2)
        if np.any(hi <= lo):
            raise rd.fail("max", f"must be above min in x and y, got {lo} .. {hi}")
        h = rd.number("height", positive=True)
        rgba = rd.vector("rgba", 4, default=[0.55, 0.4, 0.25, 1.0])
        out.append(BoxSpec(rd.string("name"), np.r_[(lo + hi) / 2, h / 2], np.r_[hi - lo, h],
                           0.0, tuple(float(v) for v in rgba)))
    return out


def _read_places(top: _Reader) -> dict[str, np.ndarray]:
    places = top.get("places", {})
    if not isinstance(places, dict):
        raise top.fail("places", "must map place names to [x, y]")
    rd = _Reader(top.path, places, "places")
    return {str(k): rd.vector(k, 2) for k in places}


def _read_robot(rd: _Reader) -> RobotSpec:
    rd.check_keys({"urdf", "base_position", "base_rpy", "fixed_base", "joints", "ee_link", "home",
                   "hold", "max_force", "gripper"})
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
        gripper=_read_gripper(rd) if "gripper" in rd.data else None,
    )


def _read_gripper(rd: _Reader) -> GripperSpec:
    g = rd.sub("gripper")
    g.check_keys({"joints", "open", "friction"})
    joints = g.names("joints")
    clash = [j for j in joints if j in rd.data.get("hold", {}) or j in rd.data.get("joints", [])]
    if clash:
        raise g.fail("joints", f"finger joint(s) {clash} are also in robot.hold or robot.joints; "
                               "list each finger joint in one place only")
    return GripperSpec(joints=joints, open=g.number("open", default=0.07, positive=True),
                       friction=g.number("friction", default=1.5, positive=True))


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

"""Name -> implementation registry for sources, decoders, effectors, drivers,
tasks and scenes.

Entries are ``"module:Attribute"`` strings imported lazily on first use, so a
missing optional dependency only matters to whoever asks for that entry (and
then the error names it).  Third-party packages add entries through entry
points in the groups ``bciarm.sources``, ``bciarm.decoders``,
``bciarm.effectors``, ``bciarm.drivers``, ``bciarm.tasks`` and
``bciarm.scenes`` (the latter pointing at a scene YAML file as
``"package:file.yaml"``); this mirrors python-can's interface registry.
"""

from __future__ import annotations

import importlib
from importlib import metadata, resources
from pathlib import Path
from typing import Any

KINDS = ("source", "decoder", "effector", "driver", "task", "scene")

#: Built-in entries.  Scenes are found by listing the ``bciarm.scenes`` folder.
BUILTIN: dict[str, dict[str, str]] = {
    "source": {
        "simulated": "bciarm.sources.simulated:SimulatedSource",
        "lsl": "bciarm.sources.lsl:LslSource",
        "replay": "bciarm.sources.replay:ReplaySource",
        "cerebus": "bciarm.sources.cerebus:CerebusSource",
        "simulated_grasp": "bciarm.sources.grasp_source:GraspSource",
    },
    "decoder": {
        "kalman": "bciarm.decoders.kalman:KalmanDecoder",
        "wiener": "bciarm.decoders.wiener:WienerDecoder",
    },
    "effector": {
        "arm": "bciarm.effectors.arm:ArmEffector",
        "wheelchair": "bciarm.effectors.wheelchair.node:WheelchairEffector",
        "exoskeleton": "bciarm.effectors.exoskeleton.node:ExoEffector",
    },
    "driver": {
        "pybullet_arm": "bciarm.drivers.pybullet_arm:PyBulletArmDriver",
        "pybullet_wheelchair": "bciarm.drivers.pybullet_wheelchair:PyBulletWheelchairDriver",
        "canopen402": "bciarm.drivers.canopen402:CanOpen402Driver",
        "pybullet_exo": "bciarm.drivers.pybullet_exo:PyBulletExoDriver",
        "franka": "bciarm.drivers.franka:FrankaDriver",
        "ur": "bciarm.drivers.ur:URDriver",
    },
    "task": {
        "center_out": "bciarm.tasks.center_out:CenterOutTask",
        "navigation": "bciarm.tasks.navigation:NavigationTask",
        "reach_joint": "bciarm.tasks.reach_joint:ReachJointTask",
        "rom_exercise": "bciarm.tasks.rom_exercise:RomExerciseTask",
        "pick_place": "bciarm.tasks.pick_place:PickPlaceTask",
        "drink": "bciarm.tasks.drink:DrinkTask",
        "gestures": "bciarm.tasks.gestures:GesturesTask",
    },
    "scene": {},
}

_extra: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}


class RegistryError(LookupError):
    """Unknown name, bad entry or missing optional dependency."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"unknown registry kind {kind!r}; kinds are {list(KINDS)}")


def _builtin_scenes() -> dict[str, str]:
    folder = resources.files("bciarm.scenes")
    return {
        entry.name[: -len(".yaml")]: f"bciarm.scenes:{entry.name}"
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def _entry_points(kind: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=f"bciarm.{kind}s")}


def entries(kind: str) -> dict[str, str]:
    """All registered ``name -> "module:attr"`` entries of ``kind``."""
    _check_kind(kind)
    found = dict(_builtin_scenes()) if kind == "scene" else {}
    found.update(BUILTIN[kind])
    found.update(_entry_points(kind))
    found.update(_extra[kind])
    return found


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind``."""
    return sorted(entries(kind))


def register(kind: str, name: str, target: str) -> None:
    """Register ``name`` for ``kind`` at run time (tests, notebooks, plugins)."""
    _check_kind(kind)
    if ":" not in target:
        raise RegistryError(f"registry target must look like 'module:Attribute', got {target!r}")
    _extra[kind][name] = target


def unregister(kind: str, name: str) -> None:
    _check_kind(kind)
    _extra[kind].pop(name, None)


def _lookup(kind: str, name: str) -> str:
    found = entries(kind)
    if name not in found:
        known = ", ".join(sorted(found)) or "(none)"
        raise RegistryError(f"no {kind} named {name!r}; registered {kind}s: {known}")
    return found[name]


def resolve(kind: str, name: str) -> Any:
    """Import and return the implementation registered as ``name``.

    Raises
    ------
    RegistryError
        Unknown name, or the module needs an optional dependency that is not
        installed (the message names the missing module).
    """
    target = _lookup(kind, name)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RegistryError(
            f"{kind} {name!r} needs the Python module {exc.name!r}, which is not installed "
            f"(install the matching extra, e.g. pip install 'bciarm[{name}]')"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"{kind} {name!r}: {module_name} has no attribute {attr!r}") from None


def scene_file(name: str) -> Path:
    """Path of the layout file of scene ``name`` (built-in or plugin)."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    target = _lookup("scene", name)
    package, _, filename = target.partition(":")
    path = resources.files(package).joinpath(filename)
    if not path.is_file():
        raise RegistryError(f"scene {name!r} points at {target!r}, which does not exist")
    return Path(str(path))


def config_names() -> list[str]:
    """Names of the built-in runnable graphs (``bciarm run NAME``)."""
    folder = resources.files("bciarm.configs")
    return sorted(e.name[: -len(".yaml")] for e in folder.iterdir() if e.name.endswith(".yaml"))


def config_file(name: str) -> Path:
    """Path of the built-in config ``name``."""
    path = resources.files("bciarm.configs").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise RegistryError(
            f"no built-in config named {name!r}; built-in configs: {', '.join(config_names())}"
        )
    return Path(str(path))

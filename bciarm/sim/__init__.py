"""Simulation helpers: scene layouts (YAML) loaded into pybullet."""

from bciarm.sim.scene import SceneError, SceneHandles, SceneSpec, WorkspaceBox, load_scene

__all__ = ["SceneError", "SceneHandles", "SceneSpec", "WorkspaceBox", "load_scene"]

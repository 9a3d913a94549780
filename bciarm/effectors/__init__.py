"""Effectors: controllers that turn intent into safe device commands.

- :mod:`bciarm.effectors.safety` — the shared safety chain (pure NumPy).
- :mod:`bciarm.effectors.kinematics` — URDF forward kinematics and Jacobian.
- :mod:`bciarm.effectors.arm` — the robot-arm controller and bus node (``"arm"``).

Submodules are imported on demand (the arm pulls in pybullet).
"""

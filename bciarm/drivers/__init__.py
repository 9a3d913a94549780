"""Device drivers: one small ABC (:class:`Driver`) every joint-velocity device subclasses.

Drivers are found by name through :mod:`bciarm.registry` (``"pybullet_arm"``
→ :class:`bciarm.drivers.pybullet_arm.PyBulletArmDriver`) and imported
lazily, so an optional device library only matters to whoever asks for it.
Every driver must pass :func:`bciarm.testing.driver_checks.check_driver`.
"""

from bciarm.drivers.base import Driver, DriverError, JointLimits, JointState, RobotModel

__all__ = ["Driver", "DriverError", "JointLimits", "JointState", "RobotModel"]

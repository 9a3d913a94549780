"""The Driver ABC contract, on a tiny in-memory driver, and check_driver's teeth."""

from __future__ import annotations

import numpy as np
import pytest

from bciarm.drivers.base import Driver, DriverError, JointLimits, JointState
from bciarm.testing.driver_checks import check_driver


class IntegratorDriver(Driver):
    """A perfect joint-velocity device: q += qdot * dt."""

    simulated = True

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self._names = tuple(f"j{i}" for i in range(n))
        self._limits = JointLimits(-np.ones(n) * 3, np.ones(n) * 3, np.ones(n))
        self.q = np.zeros(n)
        self.qdot = np.zeros(n)
        self.t = 0.0
        self.closes = 0

    @property
    def joint_names(self):
        return self._names

    @property
    def limits(self):
        return self._limits

    def _connect(self):
        pass

    def _read(self):
        return JointState(self.q.copy(), self.qdot.copy(), self.t)

    def _command_velocity(self, qdot):
        self.qdot = qdot.copy()

    def _close(self):
        self.closes += 1

    def advance(self, dt):
        self.q = self.q + self.qdot * dt
        self.t += dt


def test_command_velocity_clamps_and_rejects():
    with IntegratorDriver() as drv:
        sent = drv.command_velocity([10.0, -10.0, 0.5])
        assert np.allclose(sent, [1.0, -1.0, 0.5]) and drv.clamped == 1
        assert np.allclose(drv.qdot, sent)
        sent = drv.command_velocity([np.nan, 0.5, 0.5])
        assert np.all(sent == 0) and np.all(drv.qdot == 0) and drv.rejected == 1
        sent = drv.command_velocity([np.inf, 1e308, -1e308])
        assert np.all(sent == 0) and drv.rejected == 2
        drv.command_velocity([0.5, 0.5, 0.5])
        with pytest.raises(ValueError, match="needs 3 joint velocities"):
            drv.command_velocity([1.0, 1.0])
        assert np.all(drv.qdot == 0)  # stopped before raising


def test_lifecycle():
    drv = IntegratorDriver()
    with pytest.raises(DriverError, match="not connected"):
        drv.read()
    with pytest.raises(DriverError, match="not connected"):
        drv.command_velocity([0, 0, 0])
    drv.connect()
    drv.connect()  # idempotent
    drv.command_velocity([0.5, 0.5, 0.5])
    drv.close()
    drv.close()
    assert drv.closes == 1 and not drv.connected
    assert np.all(drv.qdot == 0)  # close() stops first
    with pytest.raises(DriverError, match="closed"):
        drv.connect()


def test_joint_limits_validation():
    with pytest.raises(ValueError):
        JointLimits([0, 0], [1, 1], [1, -1])
    with pytest.raises(ValueError):
        JointLimits([0, 0], [1], [1, 1])
    with pytest.raises(ValueError):
        JointLimits([1, 1], [0, 0], [1, 1])


def test_check_driver_passes_a_good_driver():
    check_driver(IntegratorDriver)


class NoClampDriver(IntegratorDriver):
    """Broken: bypasses the base class's last line of defence."""

    def command_velocity(self, qdot):
        q = np.nan_to_num(np.asarray(qdot, dtype=float))
        self._command_velocity(q)
        return q


class NeverStops(IntegratorDriver):
    def stop(self):
        pass


class CloseTwiceFails(IntegratorDriver):
    def close(self):
        if self.closes:
            raise RuntimeError("already closed")
        self.closes += 1
        self._closed = True


@pytest.mark.parametrize("broken, message", [
    (NoClampDriver, "must clamp"),
    (NeverStops, "after stop"),
    (CloseTwiceFails, "second time"),
])
def test_check_driver_catches_broken_drivers(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_driver(broken)

"""PyBulletArmDriver: the shipped driver check, clamping, stepping, target display."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from bciarm import registry
from bciarm.drivers.base import DriverError
from bciarm.drivers.pybullet_arm import PyBulletArmDriver
from bciarm.testing.driver_checks import check_driver


@pytest.fixture
def driver():
    drv = PyBulletArmDriver().connect()
    yield drv
    drv.close()


def test_registered():
    assert registry.resolve("driver", "pybullet_arm") is PyBulletArmDriver


def test_check_driver_passes():
    check_driver(PyBulletArmDriver)


def test_starts_at_home_at_rest(driver):
    state = driver.read()
    assert np.allclose(state.position, driver.robot_model().home_vector())
    assert np.all(state.velocity == 0)
    assert driver.joint_names == tuple(f"panda_joint{i}" for i in range(1, 8))
    # Holding still under gravity: the motors keep the arm up.
    for _ in range(50):
        driver.advance(0.01)
    assert np.abs(driver.read().position - state.position).max() < 1e-3
    assert driver.time_s == pytest.approx(0.5)


def test_physics_alone_would_exceed_the_limit_the_driver_clamps(driver):
    # Measured fact: pybullet's velocity motor does not enforce URDF limits,
    # so the clamp in Driver.command_velocity is what holds them.
    vmax = driver.limits.max_velocity
    sent = driver.command_velocity(np.r_[10 * vmax[0], np.zeros(6)])
    assert sent[0] == vmax[0]
    for _ in range(10):
        driver.advance(0.01)
    v = driver.read().velocity
    assert v[0] == pytest.approx(vmax[0], rel=0.01)
    assert abs(v[0]) <= vmax[0] * 1.005


def test_unclamped_motor_really_overspeeds(driver):
    # Bypass the clamp to show the guard is needed (the fact above, re-measured).
    driver._command_velocity(np.r_[5.0, np.zeros(6)])
    for _ in range(20):
        driver.advance(0.01)
    assert driver.read().velocity[0] > 4.0


def test_advance_needs_whole_physics_steps(driver):
    dt = driver.physics_dt
    with pytest.raises(ValueError, match="multiple of physics_dt"):
        driver.advance(1.5 * dt)
    with pytest.raises(ValueError):
        driver.advance(0.0)
    driver.advance(2 * dt)
    assert driver.time_s == pytest.approx(2 * dt)


def test_show_target_is_visual_only(driver):
    pos, _ = driver.ee_state()
    n_bodies = p.getNumBodies(physicsClientId=driver.client_id)
    driver.show_target(pos, 0.05)         # right on the gripper
    assert p.getNumBodies(physicsClientId=driver.client_id) == n_bodies + 1
    driver.show_target(pos + 0.01, 0.05)  # moved, not duplicated
    driver.show_target(pos, 0.03)         # resized: replaced
    assert p.getNumBodies(physicsClientId=driver.client_id) == n_bodies + 1
    driver.show_target([np.nan, 0, 0], 0.05)  # ignored, no crash
    q0 = driver.read().position
    for _ in range(20):
        driver.advance(0.01)
    assert not p.getContactPoints(physicsClientId=driver.client_id)
    assert np.abs(driver.read().position - q0).max() < 1e-3


def test_limits_need_connect_and_gui_needs_display(monkeypatch):
    drv = PyBulletArmDriver()
    with pytest.raises(DriverError, match="connect"):
        drv.limits
    drv.close()
    monkeypatch.delenv("DISPLAY", raising=False)
    gui = PyBulletArmDriver(gui=True)
    with pytest.raises(DriverError, match="display"):
        gui.connect()
    gui.close()


def test_bad_scene_and_params():
    from bciarm.sim.scene import SceneError

    with pytest.raises(SceneError):
        PyBulletArmDriver(scene="no_such_scene")
    with pytest.raises(ValueError):
        PyBulletArmDriver(physics_dt=-0.1)


def test_context_manager_closes(driver):
    with PyBulletArmDriver() as drv:
        assert drv.connected
    assert not drv.connected
    drv.close()

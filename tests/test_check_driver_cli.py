"""``bciarm check-driver NAME [--param k=v ...]``: exit status and plain-language report.

The Franka case runs against franky-sim in tests/drivers/test_franka.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bciarm import registry
from bciarm.cli import main
from bciarm.commands.check_driver import parse_params
from bciarm.drivers.base import Driver, JointLimits, JointState


def invoke(*args):
    result = CliRunner().invoke(main, ["check-driver", *args])
    return result, result.output + (result.stderr if hasattr(result, "stderr") else "")


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, args, watchdog", [
    ("pybullet_arm", [], None),
    ("pybullet_wheelchair", [], None),
    ("canopen402", ["--param", "simulate=true"], True),
    ("ur", ["--param", "simulate=true"], True),
])
def test_every_registered_driver_passes(name, args, watchdog):
    result, out = invoke(name, *args, "--json")
    assert result.exit_code == 0, out
    report = last_json(result)
    steps = {s["name"]: s["ok"] for s in report["steps"]}
    assert report["passed"] and steps["small motion"] and steps["stop"] and steps["close"]
    assert steps["watchdog"] is watchdog  # None: skipped, the simulation has no watchdog
    assert "PASSED" in out and f"{name} is ready" in out


def test_speed_limit_step_on_request():
    result, out = invoke("pybullet_arm", "--speed-limit", "--json")
    assert result.exit_code == 0, out
    assert {s["name"]: s["ok"] for s in last_json(result)["steps"]}["speed limit"] is True


class LazyStop(Driver):
    """Broken on purpose: stop() does nothing, the joints coast on."""

    simulated = True

    def __init__(self):
        super().__init__()
        self.q, self.qd = np.zeros(2), np.zeros(2)

    joint_names = ("a", "b")
    limits = JointLimits([-3, -3], [3, 3], [1, 1])

    def _connect(self):
        pass

    def _read(self):
        return JointState(self.q.copy(), self.qd.copy())

    def _command_velocity(self, qdot):
        self.qd = qdot.copy()

    def stop(self):
        pass

    def _close(self):
        pass

    def advance(self, dt):
        self.q = self.q + self.qd * dt


def test_a_failed_check_exits_1_and_says_what_failed():
    registry.register("driver", "lazy_stop_test", f"{__name__}:LazyStop")
    try:
        result, out = invoke("lazy_stop_test")
    finally:
        registry.unregister("driver", "lazy_stop_test")
    assert result.exit_code == 1
    assert "FAIL  stop" in out and "after stop() the joints still move" in out
    assert "SKIP  bad commands  not run after an earlier failure" in out
    assert "FAILED: 1 check(s) failed (stop)" in out


def test_setup_errors_exit_2_with_the_fix():
    result, out = invoke("nope")
    assert result.exit_code == 2 and "no driver named 'nope'" in out
    result, out = invoke("franka", "--param", "hots=127.0.0.1")
    assert result.exit_code == 2
    assert "has no parameter hots" in out and "host='127.0.0.1'" in out
    result, out = invoke("pybullet_arm", "--param", "simulate=true")
    assert result.exit_code == 2 and "no simulated rig" in out
    result, out = invoke("pybullet_arm", "--param", "gui")
    assert result.exit_code == 2 and "KEY=VALUE" in out


def test_parse_params_reads_yaml_values():
    assert parse_params(("host=127.0.0.1", "node_ids=[3, 4]", "simulate=true", "x=0.5")) == {
        "host": "127.0.0.1", "node_ids": [3, 4], "simulate": True, "x": 0.5}


def test_check_driver_exercises_a_simulated_gripper():
    """The ``gripper`` step: the arm_box_blocks Panda's fingers close (force over the limit
    asked), open, and take a NaN command; a robot without a gripper says so."""
    from bciarm.drivers.pybullet_arm import PyBulletArmDriver
    from bciarm.testing.driver_checks import run_driver_checks

    report = run_driver_checks(lambda: PyBulletArmDriver(scene="arm_box_blocks"),
                               speed_limit=False)
    steps = {s.name: s for s in report.steps}
    assert report.passed and steps["gripper"].ok, steps["gripper"]
    assert steps["gripper"].detail.startswith("closed"), steps["gripper"].detail
    report = run_driver_checks(lambda: PyBulletArmDriver(scene="arm_table"), speed_limit=False)
    assert {s.name: s for s in report.steps}["gripper"].detail == "no gripper"

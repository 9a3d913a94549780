"""The exoskeleton's joints on CiA 402 drives: ExoController over CanOpen402Driver.

Five simulated velocity drives (canopen ``LocalNode`` s, python-can ``virtual``
bus, :mod:`bciarm.testing.canopen_sim`), one per exoskeleton joint, named as
in the URDF.  Kinematics and gravity come from the exo scene (a CANopen
driver cannot describe its robot).  The loop runs on the wall clock at the
control period; assertions wait on conditions with deadlines.
"""

from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pytest

from bciarm.drivers.canopen402 import CanOpen402Driver
from bciarm.effectors.exoskeleton import ExoController, load_profile
from bciarm.testing.canopen_sim import SimulatedDriveSet

JOINTS = ("shoulder_flexion", "shoulder_abduction", "elbow_flexion", "forearm_pronation",
          "wrist_flexion")
NODE_IDS = (11, 12, 13, 14, 15)
TICK = 0.01

PROFILE = """
patient: canopen-test
active: [shoulder_flexion, elbow_flexion]
joints:
  shoulder_flexion:   {rom_deg: [-10, 15], max_speed_deg_s: 45, max_torque_nm: 25}
  shoulder_abduction: {rom_deg: [-10, 10], max_speed_deg_s: 40, max_torque_nm: 25}
  elbow_flexion:      {rom_deg: [-10, 20], max_speed_deg_s: 60, max_torque_nm: 12}
  forearm_pronation:  {rom_deg: [-20, 20], max_speed_deg_s: 60, max_torque_nm: 4}
  wrist_flexion:      {rom_deg: [-20, 20], max_speed_deg_s: 60, max_torque_nm: 4}
"""


@pytest.fixture
def exo(tmp_path):
    path = tmp_path / "canopen_test.yaml"
    path.write_text(PROFILE)
    channel = f"exo-{uuid.uuid4().hex[:8]}"
    drives = SimulatedDriveSet(channel, NODE_IDS)
    driver = CanOpen402Driver(channel=channel, node_ids=NODE_IDS, joint_names=JOINTS,
                              max_velocity=2.0, command_timeout_s=0.1)
    ctl = ExoController(driver, profile=str(path), scene="exo_upper_limb")
    try:
        ctl.start(time.monotonic())
        yield ctl, drives, load_profile(str(path))
    finally:
        ctl.close()
        drives.close()


def run_until(ctl, intent, done, timeout):
    """Tick at the control period with ``intent`` until ``done(q, v)`` or the deadline.

    Returns every measured joint position (rows)."""
    seen = []
    deadline = time.monotonic() + timeout
    next_t = time.monotonic()
    while True:
        now = time.monotonic()
        ctl.update(intent, now)
        state = ctl.driver.read()
        seen.append(np.asarray(state.position))
        if done(state.position, state.velocity):
            return np.array(seen)
        assert now < deadline, f"condition not met within {timeout} s (q={state.position})"
        next_t += TICK
        time.sleep(max(0.0, next_t - time.monotonic()))


def test_exoskeleton_joints_run_on_cia402_drives_within_the_range_of_motion(exo):
    ctl, drives, profile = exo
    lo, hi = profile.rom(JOINTS)
    sf = JOINTS.index("shoulder_flexion")
    # Full speed up: shoulder flexion moves, slows near the end of its range, stops inside it.
    qs = run_until(ctl, np.array([5.0, 0.0]),
                   lambda q, v: q[sf] > hi[sf] - 0.03 and abs(v[sf]) < 0.01, timeout=5.0)
    assert qs[:, sf].max() <= hi[sf], (
        f"shoulder flexion reached {math.degrees(qs[:, sf].max()):.3f} deg, "
        f"range ends at {math.degrees(hi[sf])} deg")
    assert np.all(qs >= lo) and np.all(qs <= hi)
    # The drives really moved: position actual (TPDO2) of node 11 in counts.
    assert drives[11].position / ctl.driver.counts_per_rad > hi[sf] - 0.03
    # Inactive joints are held.
    others = [JOINTS.index(j) for j in ("shoulder_abduction", "forearm_pronation",
                                        "wrist_flexion")]
    assert np.max(np.abs(qs[:, others])) < 0.01
    # Intent stops: the watchdog brings every drive to rest.
    run_until(ctl, None, lambda q, v: np.max(np.abs(v)) < 0.005, timeout=1.0)
    # E-stop: zero at once, latched.
    ctl.estop("test")
    run_until(ctl, np.array([-0.5, 0.5]), lambda q, v: True, timeout=0.5)
    t0 = time.monotonic()
    qs = run_until(ctl, np.array([-0.5, 0.5]), lambda q, v: time.monotonic() - t0 > 0.3,
                   timeout=1.0)
    assert np.ptp(qs, axis=0).max() < 0.005

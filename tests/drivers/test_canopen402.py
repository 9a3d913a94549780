"""CiA 402 driver against simulated drives: canopen LocalNodes on python-can's virtual bus.

Both ends run a real CANopen stack (NMT, SDO, heartbeat, PDOs).  Tests wait
on conditions with deadlines; the only wall-time assertion is the issue's
50 ms quick-stop bound, measured from the drives' own timestamps.
"""

import time
import uuid

import canopen
import numpy as np
import pytest

from bciarm.drivers import cia402 as ds
from bciarm.drivers.base import DriverError
from bciarm.drivers.canopen402 import CanOpen402Driver
from bciarm.testing.canopen_sim import SimulatedDriveSet

QUICK_STOP_BOUND_S = 0.050

#: A drive delivered with another PDO mapping than the CiA 402 default: objects
#: in another order, feedback on other PDOs, position on TPDO3 (TPDO2 off).  A
#: driver that assumed the default mapping would misread every statusword.
VENDOR_PDOS = {
    "rpdo": {1: (ds.TARGET_VELOCITY, ds.CONTROLWORD), 2: (ds.MODES_OF_OPERATION,), 3: None,
             4: None},
    "tpdo": {1: (ds.VELOCITY_ACTUAL, ds.STATUSWORD), 2: None,
             3: (ds.POSITION_ACTUAL, ds.MODES_DISPLAY), 4: None},
}


def wait_until(pred, timeout=2.0, step=0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


@pytest.fixture(params=[None, VENDOR_PDOS], ids=["default-pdos", "vendor-pdos"])
def rig(request):
    channel = f"test-{uuid.uuid4().hex[:8]}"
    drives = SimulatedDriveSet(channel, (1, 2), pdos=request.param)
    drv = CanOpen402Driver(channel=channel, node_ids=(1, 2), command_timeout_s=0.1)
    yield drives, drv
    drv.close()
    drives.close()


def drive(drv, qdot, seconds, period=0.01):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        drv.command_velocity(qdot)
        time.sleep(period)


def test_connect_enables_every_drive_through_the_402_state_machine(rig):
    drives, drv = rig
    drv.connect()
    assert drv.drive_states() == {1: ds.OPERATION_ENABLED, 2: ds.OPERATION_ENABLED}
    for i in (1, 2):
        seen = [s for _, s in drives[i].transitions]
        assert seen == [ds.SWITCH_ON_DISABLED, ds.READY_TO_SWITCH_ON, ds.SWITCHED_ON,
                        ds.OPERATION_ENABLED]
        assert drives[i].node.nmt.state == "OPERATIONAL"
        # Configured by SDO: profile velocity mode, heartbeat producer.
        assert drives[i].node.sdo[ds.MODES_OF_OPERATION].raw == ds.MODE_PROFILE_VELOCITY
        assert drives[i].node.sdo[ds.PRODUCER_HEARTBEAT].raw == drv.heartbeat_ms


def test_drives_follow_the_target_velocity(rig):
    drives, drv = rig
    drv.connect()
    target = np.array([2.0, -1.5])
    drive(drv, target, 0.3)
    assert wait_until(lambda: np.allclose(drv.read().velocity, target, atol=1e-3), 1.0)
    p0 = drv.read().position
    drive(drv, target, 0.2)
    moved = drv.read().position - p0
    assert np.all(np.sign(moved) == np.sign(target)) and np.all(np.abs(moved) > 0.2)
    # The drives received exactly what was commanded, in counts/s.
    _, cw, tgt = drives[1].received[-1]
    assert cw == ds.CW_ENABLE_OPERATION and tgt == round(2.0 * drv.counts_per_rad)


def test_stale_command_quick_stops_within_50_ms(rig):
    drives, drv = rig
    drv.connect()
    drive(drv, [3.0, 3.0], 0.3)
    t_last = drv.last_command_t
    stale_at = t_last + drv.command_timeout_s
    entered = {}
    for i in (1, 2):
        assert drives[i].wait_for(ds.QUICK_STOP_ACTIVE, 2.0) is not None
        entered[i] = drives[i].entered(ds.QUICK_STOP_ACTIVE, after=t_last)
    latency = max(entered.values()) - stale_at
    print(f"quick stop {latency * 1e3:.1f} ms after the command went stale "
          f"({(max(entered.values()) - t_last) * 1e3:.1f} ms after the last command)")
    assert latency <= QUICK_STOP_BOUND_S
    assert all(cause == "command_timeout" for _, cause, _ in drv.quick_stops)
    # It ramps down on the quick-stop deceleration and holds at zero.
    assert wait_until(lambda: np.all(np.abs(drv.read().velocity) < 1e-6), 1.0)
    # A fresh command re-enables and moves again.
    drive(drv, [1.0, -1.0], 0.2)
    assert drv.drive_states() == {1: ds.OPERATION_ENABLED, 2: ds.OPERATION_ENABLED}
    assert wait_until(lambda: np.allclose(drv.read().velocity, [1.0, -1.0], atol=1e-3), 1.0)


def test_connect_maps_the_pdos_by_sdo_in_pre_operational(rig):
    drives, drv = rig
    drv.connect()
    for i in (1, 2):
        d = drives[i]
        # The drive now talks the driver's mapping, whatever it was delivered with.
        assert d.pdo_mapping("rpdo", 1) == (True, 0x200 + i, (ds.CONTROLWORD, ds.TARGET_VELOCITY))
        assert d.pdo_mapping("tpdo", 1) == (True, 0x180 + i, (ds.STATUSWORD, ds.VELOCITY_ACTUAL))
        assert d.pdo_mapping("tpdo", 2) == (True, 0x280 + i, (ds.POSITION_ACTUAL,))
        for kind, n in (("rpdo", 2), ("rpdo", 3), ("tpdo", 3), ("tpdo", 4)):
            assert not d.pdo_mapping(kind, n)[0], f"{kind}{n} left enabled"
        assert d.node.sdo[ds.TPDO_COMM][5].raw == drv.feedback_ms
        # Written by SDO (0x1400/0x1600/0x1800/0x1A00), all before NMT START.
        written = {index for _, _, index, _ in d.pdo_writes}
        assert {ds.RPDO_COMM, ds.RPDO_MAP, ds.TPDO_COMM, ds.TPDO_MAP} <= written
        assert {state for _, state, _, _ in d.pdo_writes} == {"PRE-OPERATIONAL"}
    # Position feedback arrives on the driver's TPDO2 (disabled in the vendor mapping).
    drive(drv, [2.0, -2.0], 0.2)
    assert wait_until(lambda: np.all(np.abs(drv.read().position) > 0.1), 1.0)


def test_a_driver_assuming_the_default_mapping_fails_on_a_vendor_mapped_drive(monkeypatch):
    """Control for the tests above: the vendor mapping really breaks a driver that skips the SDO
    mapping (it then subscribes its own idea of the PDOs, as if they were the drive's)."""
    def assume_defaults(self, node):
        for m in (*node.rpdo.map.values(), *node.tpdo.map.values()):
            m.subscribe()

    monkeypatch.setattr(CanOpen402Driver, "_save_pdos", assume_defaults)
    channel = f"vendor-{uuid.uuid4().hex[:8]}"
    with SimulatedDriveSet(channel, (1,), pdos=VENDOR_PDOS):
        drv = CanOpen402Driver(channel=channel, node_ids=(1,), joint_names=("wheel",),
                               state_timeout_s=0.3)
        with pytest.raises(DriverError, match="drive 1"):
            drv.connect()
        drv.close()


def test_pdo_mapping_is_refused_while_operational():
    channel = f"op-{uuid.uuid4().hex[:8]}"
    with SimulatedDriveSet(channel, (1,)) as drives:
        drv = CanOpen402Driver(channel=channel, node_ids=(1,), joint_names=("wheel",))
        with drv:
            node = drv._nodes[1]
            with pytest.raises(canopen.SdoAbortedError):
                node.rpdo.save()  # a master that maps after NMT START gets an abort
        assert drives[1].pdo_writes[-1][1] == "OPERATIONAL"


def test_commands_keep_the_drives_enabled(rig):
    drives, drv = rig
    drv.connect()
    drive(drv, [1.0, 1.0], 0.5)  # 5 x the command timeout of steady commands
    assert not drv.quick_stops
    assert all(drives[i].state == ds.OPERATION_ENABLED for i in (1, 2))


def test_lost_heartbeat_quick_stops_the_other_drive_and_faults(rig):
    drives, drv = rig
    drv.connect()
    drive(drv, [2.0, 2.0], 0.2)
    t0 = time.monotonic()
    drives[2].go_silent()
    assert wait_until(lambda: bool(drv.faulted), 1.0)
    assert "heartbeat" in drv.faulted and "drive 2" in drv.faulted
    t_qs = drives[1].wait_for(ds.QUICK_STOP_ACTIVE, 1.0)
    assert t_qs is not None and t_qs - t0 <= drv.heartbeat_timeout_s + QUICK_STOP_BOUND_S
    # Faulted: commands are ignored, the remaining drive stays stopped.
    drive(drv, [2.0, 2.0], 0.1)
    assert drives[1].state == ds.QUICK_STOP_ACTIVE
    assert wait_until(lambda: abs(drives[1].velocity) < 1e-6, 1.0)


def test_drive_fault_quick_stops_the_other_and_reset_recovers(rig):
    drives, drv = rig
    drv.connect()
    drive(drv, [2.0, 2.0], 0.2)
    drives[1].inject_fault()
    assert wait_until(lambda: "fault" in drv.faulted, 1.0)
    assert drives[2].wait_for(ds.QUICK_STOP_ACTIVE, 1.0) is not None
    drv.reset_fault()
    assert drv.drive_states() == {1: ds.OPERATION_ENABLED, 2: ds.OPERATION_ENABLED}
    drive(drv, [0.5, 0.5], 0.2)
    assert wait_until(lambda: np.allclose(drv.read().velocity, [0.5, 0.5], atol=1e-3), 1.0)


def test_connect_fails_clearly_without_drives():
    drv = CanOpen402Driver(channel=f"empty-{uuid.uuid4().hex[:8]}", node_ids=(5,),
                           joint_names=("knee",), state_timeout_s=0.2)
    with pytest.raises(DriverError, match="drive 5 .*did not answer"):
        drv.connect()
    drv.close()


def test_generic_over_axes_and_names():
    channel = f"exo-{uuid.uuid4().hex[:8]}"
    with SimulatedDriveSet(channel, (11, 12, 13)) as drives:
        drv = CanOpen402Driver(channel=channel, node_ids=(11, 12, 13),
                               joint_names=("shoulder_flexion", "elbow_flexion", "wrist"),
                               max_velocity=(1.0, 1.5, 2.0))
        with drv:
            assert drv.limits.n == 3
            sent = drv.command_velocity([5.0, -5.0, 0.5])  # clamped by the base class
            assert np.allclose(sent, [1.0, -1.5, 0.5])
            assert wait_until(lambda: drives[12].target == round(-1.5 * drv.counts_per_rad))

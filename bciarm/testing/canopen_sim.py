"""Simulated CiA 402 velocity drives: canopen ``LocalNode`` s on a python-can bus.

A real CANopen stack on the drive side: NMT slave (start / stop / pre-op
commands, heartbeat producer started by an SDO write of 0x1017), SDO server
on the drive's object dictionary
(:func:`~bciarm.drivers.cia402.velocity_drive_dictionary`), PDOs as mapped
in that dictionary, and the 402 power state machine driven by the
controlword.  In OPERATION ENABLED the drive ramps its velocity toward the
target at the profile acceleration / deceleration; in QUICK STOP ACTIVE
toward zero at the quick-stop deceleration.  Every ``period_s`` (a
background thread, wall clock) it integrates its motion and, when
OPERATIONAL, sends its enabled TPDOs (at most once per event timer,
0x1800+n sub 5, when one is set).

PDOs: the drive applies the PDO communication / mapping objects of its
dictionary (0x1400-0x1403, 0x1600-0x1603, 0x1800-0x1803, 0x1A00-0x1A03)
when it enters NMT OPERATIONAL, as read from its dictionary at that moment:
a drive built with a non-default mapping (``pdos``) talks that mapping until
a master rewrites it.  Like many real drives it accepts PDO configuration by
SDO only outside OPERATIONAL (abort 0x08000022 otherwise); every such write
is logged with the NMT state it arrived in (:attr:`SimulatedDrive.pdo_writes`).

Every state change is logged with ``time.monotonic()`` (:attr:`SimulatedDrive.transitions`),
so tests measure latencies from timestamps.  Faults can be injected
(:meth:`SimulatedDrive.inject_fault`) and the drive can fall silent
(:meth:`SimulatedDrive.go_silent`: no heartbeat, no PDOs).

>>> with SimulatedDriveSet("bus1", [1, 2]) as drives:
...     drv = CanOpen402Driver(channel="bus1", node_ids=(1, 2))
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

import canopen
from canopen.sdo.exceptions import SdoAbortedError

from bciarm.drivers import cia402 as ds


class SimulatedDrive:
    """One simulated velocity drive (see the module docstring).

    Parameters
    ----------
    network : canopen.Network
        Connected network the drive lives on.
    node_id : int
    pdos : dict, optional
        PDO mapping in the drive's dictionary as delivered
        (:func:`~bciarm.drivers.cia402.velocity_drive_dictionary`); default
        :data:`~bciarm.drivers.cia402.DEFAULT_PDOS`.
    """

    #: SDO abort code: data cannot be transferred because of the present device state.
    ABORT_DEVICE_STATE = 0x08000022

    def __init__(self, network: canopen.Network, node_id: int,
                 pdos: dict[str, ds.PdoLayout] | None = None) -> None:
        self.node = canopen.LocalNode(node_id, ds.velocity_drive_dictionary(node_id, pdos))
        self.network = network
        network.add_node(self.node)
        self.node_id = node_id
        self.lock = threading.RLock()
        self.state = ds.SWITCH_ON_DISABLED
        self.period_s = 0.002  # stepping period (set by SimulatedDriveSet)
        self.velocity = 0.0  # counts/s
        self.position = 0.0  # counts
        self.target = 0
        self.silent = False
        self.transitions: list[tuple[float, str]] = [(time.monotonic(), self.state)]
        self.received: list[tuple[float, int, int]] = []  # (t, controlword, target)
        self.pdo_writes: list[tuple[float, str, int, int]] = []  # (t, NMT state, index, sub)
        self._last_cw = 0
        self._tpdo_sent: dict[int, float] = {}
        self._nmt_state = ""
        self.node.add_write_callback(self._on_write)
        for m in self.node.rpdo.map.values():
            m.add_callback(self._on_rpdo)
        self.node.nmt.state = "PRE-OPERATIONAL"
        # After the NMT slave's own handler (subscribers run in order).
        network.subscribe(0x000, self._on_nmt)
        self._apply_pdos()
        self._publish_statusword()

    # ------------------------------------------------------------------ objects

    def _get(self, index: int) -> int:
        return self.node.sdo[index].raw

    def _publish_statusword(self) -> None:
        self.node.sdo[ds.STATUSWORD].raw = ds.STATUSWORD_OF[self.state]

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.transitions.append((time.monotonic(), state))
            self._publish_statusword()

    def wait_for(self, state: str, timeout: float) -> float | None:
        """Wait (polling, with a deadline) until the drive is in ``state``; its entry time or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.state == state:
                    return self.transitions[-1][0]
            time.sleep(0.001)
        return None

    def entered(self, state: str, after: float = 0.0) -> float | None:
        """Time the drive first entered ``state`` at or after ``after`` (monotonic), or None."""
        with self.lock:
            for t, s in self.transitions:
                if s == state and t >= after:
                    return t
        return None

    # ------------------------------------------------------------------ bus

    def _on_write(self, index: int, subindex: int, od: object, data: bytes) -> None:
        """SDO write hook: PDO configuration only outside OPERATIONAL, logged."""
        if ds.RPDO_COMM <= index < ds.TPDO_MAP + 0x200:
            state = self.node.nmt.state
            self.pdo_writes.append((time.monotonic(), state, index, subindex))
            if state == "OPERATIONAL":
                raise SdoAbortedError(self.ABORT_DEVICE_STATE)

    def _on_nmt(self, can_id: int, data: bytes, timestamp: float) -> None:
        state = self.node.nmt.state
        with self.lock:
            if state == "OPERATIONAL" and self._nmt_state != "OPERATIONAL":
                self._apply_pdos()
            self._nmt_state = state

    def _apply_pdos(self) -> None:
        """(Re)load every PDO's communication and mapping parameters from the dictionary."""
        with self.lock:
            for maps in (self.node.rpdo, self.node.tpdo):
                for m in maps.map.values():
                    if m.enabled and m.cob_id is not None:
                        try:
                            self.network.unsubscribe(m.cob_id, m.on_message)
                        except (KeyError, ValueError):
                            pass
                    m.read()  # from the drive's own dictionary: a local SDO upload
            self._tpdo_sent.clear()

    def pdo_mapping(self, kind: str, n: int) -> tuple[bool, int, tuple[int, ...]]:
        """``(enabled, COB-ID, mapped object indices)`` of RPDO/TPDO ``n`` in the dictionary now."""
        comm, mapping = (ds.RPDO_COMM, ds.RPDO_MAP) if kind == "rpdo" else (ds.TPDO_COMM,
                                                                             ds.TPDO_MAP)
        cob = self.node.sdo[comm + n - 1][1].raw
        rec = self.node.sdo[mapping + n - 1]
        objs = tuple(rec[k].raw >> 16 for k in range(1, rec[0].raw + 1))
        return not cob & ds.PDO_NOT_VALID, cob & 0x7FF, objs

    def _on_rpdo(self, m: canopen.pdo.PdoMap) -> None:
        if self.silent or self.node.nmt.state != "OPERATIONAL":
            return  # PDOs are only processed when OPERATIONAL
        with self.lock:
            cw = None
            for var in m.map:
                value = var.raw
                self.node.set_data(var.index, var.subindex, var.od.encode_raw(value))
                if var.index == ds.CONTROLWORD:
                    cw = value
                elif var.index == ds.TARGET_VELOCITY:
                    self.target = value
            self.received.append((time.monotonic(), cw, self.target))
            if cw is not None:
                self._apply_controlword(cw)

    def _apply_controlword(self, cw: int) -> None:
        s = self.state
        rising_reset = bool(cw & ds.CW_FAULT_RESET) and not (self._last_cw & ds.CW_FAULT_RESET)
        self._last_cw = cw
        if s in (ds.FAULT, ds.FAULT_REACTION_ACTIVE):
            if rising_reset and s == ds.FAULT:
                self._set_state(ds.SWITCH_ON_DISABLED)
            return
        if not cw & 0x02:  # disable voltage
            self._set_state(ds.SWITCH_ON_DISABLED)
        elif not cw & 0x04:  # quick stop
            if s == ds.OPERATION_ENABLED:
                self._set_state(ds.QUICK_STOP_ACTIVE)
            elif s in (ds.READY_TO_SWITCH_ON, ds.SWITCHED_ON):
                self._set_state(ds.SWITCH_ON_DISABLED)
        elif cw & 0x0F == ds.CW_SHUTDOWN:
            if s in (ds.SWITCH_ON_DISABLED, ds.SWITCHED_ON, ds.OPERATION_ENABLED):
                self._set_state(ds.READY_TO_SWITCH_ON)
        elif cw & 0x0F == ds.CW_SWITCH_ON:
            if s in (ds.READY_TO_SWITCH_ON, ds.OPERATION_ENABLED):
                self._set_state(ds.SWITCHED_ON)
        elif cw & 0x0F == ds.CW_ENABLE_OPERATION:
            if s == ds.SWITCHED_ON:
                self._set_state(ds.OPERATION_ENABLED)
            elif s == ds.QUICK_STOP_ACTIVE and self._get(ds.QUICK_STOP_OPTION) in (5, 6, 7, 8):
                self._set_state(ds.OPERATION_ENABLED)

    # ------------------------------------------------------------------ physics

    def step(self, dt: float) -> None:
        """Integrate ``dt`` seconds of motion and send the TPDOs."""
        with self.lock:
            v = self.velocity
            if self.state == ds.OPERATION_ENABLED and self._get(ds.MODES_OF_OPERATION) == \
                    ds.MODE_PROFILE_VELOCITY:
                goal = float(self.target)
                rate = self._get(ds.PROFILE_ACCEL if abs(goal) > abs(v) and goal * v >= 0
                                 else ds.PROFILE_DECEL)
            elif self.state == ds.QUICK_STOP_ACTIVE:
                goal, rate = 0.0, self._get(ds.QUICK_STOP_DECEL)
            elif self.state in (ds.FAULT, ds.FAULT_REACTION_ACTIVE):
                goal, rate = 0.0, self._get(ds.QUICK_STOP_DECEL)
            else:
                goal, rate = 0.0, self._get(ds.QUICK_STOP_DECEL)  # not powered: brake
            step = rate * dt
            v = goal if abs(goal - v) <= step else v + (step if goal > v else -step)
            self.position += 0.5 * (self.velocity + v) * dt
            self.velocity = v
            self.node.sdo[ds.VELOCITY_ACTUAL].raw = ds.clamp_i32(v)
            self.node.sdo[ds.POSITION_ACTUAL].raw = ds.clamp_i32(self.position)
            self.node.sdo[ds.MODES_DISPLAY].raw = self._get(ds.MODES_OF_OPERATION)
            if self.node.nmt.state == "OPERATIONAL" and not self.silent:
                self._send_tpdos(time.monotonic())

    def _send_tpdos(self, now: float) -> None:
        """Send every enabled TPDO with the dictionary's current values (lock held)."""
        for n, m in self.node.tpdo.map.items():
            if not m.enabled or not m.map:
                continue
            if m.event_timer and now - self._tpdo_sent.get(n, -1e9) < m.event_timer * 1e-3 - \
                    0.5 * self.period_s:
                continue
            for var in m.map:
                var.set_data(self.node.get_data(var.index, var.subindex))
            m.transmit()
            self._tpdo_sent[n] = now

    # ------------------------------------------------------------------ failures

    def inject_fault(self) -> None:
        """The drive faults (e.g. over-current): FAULT, motion braked, statusword bit 3."""
        with self.lock:
            self._set_state(ds.FAULT)

    def go_silent(self) -> None:
        """The drive drops off the bus: no heartbeat, no PDOs, commands ignored."""
        with self.lock:
            self.silent = True
        self.node.nmt.stop_heartbeat()


class SimulatedDriveSet:
    """Several simulated drives on their own network and a stepping thread.

    Parameters
    ----------
    channel : str
        python-can ``virtual`` channel (any name; buses on the same channel
        in this process see each other's frames).
    node_ids : sequence of int
    period_s : float
        Physics and TPDO period (wall clock).
    interface : str
        python-can interface (``virtual`` for in-process tests).
    pdos : dict, optional
        PDO mapping of every drive as delivered (see :class:`SimulatedDrive`).
    """

    def __init__(self, channel: str, node_ids: Sequence[int] = (1, 2), period_s: float = 0.002,
                 interface: str = "virtual", pdos: dict[str, ds.PdoLayout] | None = None) -> None:
        self.network = canopen.Network()
        self.network.NOTIFIER_CYCLE = 0.05
        self.network.connect(interface=interface, channel=channel, receive_own_messages=False)
        self.drives = {i: SimulatedDrive(self.network, i, pdos) for i in node_ids}
        self.period_s = float(period_s)
        for d in self.drives.values():
            d.period_s = self.period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bciarm-sim-drives", daemon=True)
        self._thread.start()

    def __getitem__(self, node_id: int) -> SimulatedDrive:
        return self.drives[node_id]

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.period_s):
            now = time.monotonic()
            for d in self.drives.values():
                d.step(now - last)
            last = now

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for d in self.drives.values():
            d.node.nmt.stop_heartbeat()
        self.network.disconnect()

    def __enter__(self) -> "SimulatedDriveSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

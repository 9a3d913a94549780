"""CiA 402 velocity-mode drives over CANopen (python-can + canopen): wheels or joints.

One driver for any number of axes, each a CiA 402 drive (node id) in
profile velocity mode: the wheelchair's two wheel motors, or an
exoskeleton's joints.  Joint names, node ids, speed limits and the unit
conversion (``counts_per_rad``: drive velocity units per rad/s) are
parameters.

Connect:
    NMT to PRE-OPERATIONAL; by SDO: producer heartbeat time (0x1017),
    profile velocity mode (0x6060 = 3), quick-stop option code 6 (ramp and
    hold, 0x605A), profile acceleration / deceleration and quick-stop
    deceleration, and the **PDO mapping** the driver uses
    (:data:`~bciarm.drivers.cia402.DRIVER_PDOS`, written through canopen's
    ``node.rpdo`` / ``node.tpdo`` save API to 0x1400/0x1600/0x1800/0x1A00:
    RPDO1 = controlword + target velocity, TPDO1 = statusword + velocity
    actual value, TPDO2 = position actual value, every other PDO disabled;
    TPDOs asynchronous with an event timer of ``feedback_ms``), so nothing
    depends on how a drive was delivered or last configured; wait for every
    drive's heartbeat; NMT START; then the 402
    state machine through RPDO1 controlwords: Shutdown → READY TO SWITCH ON,
    Switch on → SWITCHED ON, Enable operation → OPERATION ENABLED (a drive
    found in FAULT gets a fault reset first).  Every step waits on the
    drive's statusword (TPDO1) with a deadline and raises
    :class:`~bciarm.drivers.base.DriverError` naming the drive and state on
    time-out.

Run:
    ``command_velocity`` sends RPDO1 (controlword Enable operation + target
    velocity) to every drive; ``read`` returns the latest TPDO1/TPDO2
    values (velocity actual, position actual) converted to rad and rad/s.
    Feedback is decoded by the mapping, not by byte offsets: each received
    TPDO updates whichever of statusword / velocity / position it carries.

Supervision (a background thread, every ``supervise_period_s``):
    * **command timeout** — no command for ``command_timeout_s``: every
      drive gets a Quick stop controlword (it ramps down on its quick-stop
      deceleration and holds); the next command re-enables (QUICK STOP
      ACTIVE → OPERATION ENABLED);
    * **heartbeat consumer** — a drive silent for ``heartbeat_timeout_s``:
      the others are quick-stopped and the driver is *faulted*;
    * **drive fault** — a drive reporting FAULT: the others are
      quick-stopped and the driver is faulted.
    While faulted, commands are ignored (the drives stay stopped) until
    :meth:`CanOpen402Driver.reset_fault`.

Every quick stop is logged with its cause and ``time.monotonic()``
(:attr:`CanOpen402Driver.quick_stops`).
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any, Sequence

import numpy as np

from bciarm.drivers import cia402 as ds
from bciarm.drivers.base import Driver, DriverError, JointLimits, JointState, log


class _Axis:
    """Latest feedback of one drive."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.statusword: int | None = None
        self.velocity = 0
        self.position = 0
        self.t_feedback = -np.inf
        self.t_heartbeat = -np.inf
        self.cond = threading.Condition()

    @property
    def state(self) -> str | None:
        return None if self.statusword is None else ds.state_of(self.statusword)


class CanOpen402Driver(Driver):
    """CiA 402 velocity-mode drives on a CAN bus (see the module docstring).

    Parameters
    ----------
    channel : str
        python-can channel (``"can0"``, or any name for ``virtual``).
    interface : str
        python-can interface (``socketcan``, ``pcan``, ``virtual``, ...).
    node_ids : sequence of int
        One CANopen node id per axis, in joint order.
    joint_names : sequence of str
        Names of the axes (as in the robot's URDF).
    max_velocity : float or sequence of float
        Speed limit per axis, rad/s.
    counts_per_rad : float
        Drive velocity units (counts/s) per rad/s, and position counts per rad.
    accel, quick_stop_decel : float
        Profile acceleration/deceleration and quick-stop deceleration, rad/s².
    heartbeat_ms : int
        Producer heartbeat time written to every drive (0x1017).
    feedback_ms : int
        Event timer written to the feedback TPDOs (0x1800+n sub 5): each
        drive reports status, velocity and position this often.
    heartbeat_timeout_s : float
        Heartbeat consumer time: a drive silent this long is lost.
    command_timeout_s : float
        No ``command_velocity`` for this long → quick stop.
    supervise_period_s : float
        Period of the supervision thread.
    state_timeout_s : float
        Deadline of each NMT / state-machine step while connecting.
    bitrate : int, optional
        Passed to python-can for real interfaces.

    Attributes
    ----------
    quick_stops : list of (float, str, int)
        ``(time.monotonic(), cause, node_id)`` of every quick stop sent.
    faulted : str
        Why the driver is faulted ("" when not).
    last_command_t : float
        ``time.monotonic()`` of the last RPDO command sent by ``command_velocity``.
    """

    simulated = False

    def __init__(self, channel: str = "bciarm-can0", interface: str = "virtual",
                 node_ids: Sequence[int] = (1, 2),
                 joint_names: Sequence[str] = ("left_wheel_joint", "right_wheel_joint"),
                 max_velocity: float | Sequence[float] = 18.0, counts_per_rad: float = 1000.0,
                 accel: float = 40.0, quick_stop_decel: float = 100.0, heartbeat_ms: int = 20,
                 feedback_ms: int = 5, heartbeat_timeout_s: float = 0.1, command_timeout_s: float = 0.1,
                 supervise_period_s: float = 0.002, state_timeout_s: float = 1.0,
                 bitrate: int | None = None) -> None:
        super().__init__()
        self.channel, self.interface, self.bitrate = channel, interface, bitrate
        self.node_ids = tuple(int(i) for i in node_ids)
        self._joint_names = tuple(str(j) for j in joint_names)
        if len(self.node_ids) != len(self._joint_names) or not self.node_ids:
            raise ValueError(f"need one node id per joint, got {self.node_ids} for "
                             f"{self._joint_names}")
        if len(set(self.node_ids)) != len(self.node_ids) or not all(
                1 <= i <= 127 for i in self.node_ids):
            raise ValueError(f"node ids must be distinct, 1..127, got {self.node_ids}")
        n = len(self.node_ids)
        vmax = np.broadcast_to(np.asarray(max_velocity, dtype=float), (n,)).copy()
        self._limits = JointLimits(lower=np.full(n, -np.inf), upper=np.full(n, np.inf),
                                   max_velocity=vmax)
        self.counts_per_rad = float(counts_per_rad)
        self.accel = float(accel)
        self.quick_stop_decel = float(quick_stop_decel)
        self.heartbeat_ms = int(heartbeat_ms)
        self.feedback_ms = int(feedback_ms)
        if not 0 < self.feedback_ms < 1000 * float(heartbeat_timeout_s):
            raise ValueError(f"feedback_ms must be in (0, heartbeat timeout), got {feedback_ms}")
        self.heartbeat_timeout_s = float(heartbeat_timeout_s)
        self.command_timeout_s = float(command_timeout_s)
        self.supervise_period_s = float(supervise_period_s)
        self.state_timeout_s = float(state_timeout_s)
        self.quick_stops: list[tuple[float, str, int]] = []
        self.faulted = ""
        self.last_command_t = -np.inf
        self._axes = {i: _Axis(i) for i in self.node_ids}
        self._network: Any = None
        self._nodes: dict[int, Any] = {}
        self._rpdo: dict[int, Any] = {}
        self._lock = threading.RLock()
        self._stopped_for_timeout = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target = np.zeros(n, dtype=np.int64)

    # ------------------------------------------------------------------ contract

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def limits(self) -> JointLimits:
        return self._limits

    @classmethod
    def contract_instance(cls) -> "CanOpen402Driver":
        """A driver wired to simulated drives on a private virtual bus (contract tests).

        The simulated drives are closed with the driver.
        """
        import uuid

        from bciarm.testing.canopen_sim import SimulatedDriveSet

        channel = f"bciarm-contract-{uuid.uuid4().hex[:8]}"
        drives = SimulatedDriveSet(channel, (1, 2))
        drv = cls(channel=channel, node_ids=(1, 2))
        drv._owned = drives  # type: ignore[attr-defined]
        return drv

    # ------------------------------------------------------------------ bus plumbing

    def _send_rpdo(self, node_id: int, controlword: int, target: int) -> None:
        with self._lock:  # one RPDO buffer per drive, shared by commands and supervision
            m = self._rpdo[node_id]
            m[ds.CONTROLWORD].raw = controlword & 0xFFFF
            m[ds.TARGET_VELOCITY].raw = target
            m.transmit()

    def _on_tpdo(self, node_id: int, m: Any) -> None:
        """A TPDO of ``node_id`` arrived: take whatever feedback it carries (by its mapping)."""
        ax = self._axes[node_id]
        with ax.cond:
            for var in m.map:
                if var.index == ds.STATUSWORD:
                    ax.statusword = var.raw
                elif var.index == ds.VELOCITY_ACTUAL:
                    ax.velocity = var.raw
                elif var.index == ds.POSITION_ACTUAL:
                    ax.position = var.raw
            ax.t_feedback = time.monotonic()
            ax.cond.notify_all()

    def _configure_pdos(self, node: Any) -> None:
        """Write the driver's PDO mapping (:data:`~.cia402.DRIVER_PDOS`) by SDO.

        Must run in PRE-OPERATIONAL.  Every PDO of the predefined set is
        rewritten: the ones the driver uses mapped on their predefined
        COB-IDs, the others disabled (a leftover mapping could otherwise
        also carry the controlword).
        """
        for kind, maps in (("rpdo", node.rpdo), ("tpdo", node.tpdo)):
            layout = ds.DRIVER_PDOS[kind]
            for n, m in maps.map.items():
                objs = layout.get(n)
                m.clear()
                m.cob_id = ds.predefined_cob_id(kind, n, node.id)
                m.enabled = bool(objs)
                m.trans_type = ds.TRANSMISSION_ASYNC
                if kind == "tpdo":
                    m.inhibit_time = 0
                    m.event_timer = self.feedback_ms if objs else 0
                for index in objs or ():
                    m.add_variable(index)
                if kind == "tpdo" and objs:
                    m.add_callback(partial(self._on_tpdo, node.id))
        self._save_pdos(node)
        self._rpdo[node.id] = node.rpdo[1]

    def _save_pdos(self, node: Any) -> None:
        """Send the local PDO configuration of ``node`` to the drive (SDO) and subscribe."""
        node.rpdo.save()
        node.tpdo.save()

    def _on_heartbeat(self, can_id: int, data: bytes, timestamp: float) -> None:
        ax = self._axes.get(can_id - 0x700)
        if ax is not None:
            with ax.cond:
                ax.t_heartbeat = time.monotonic()
                ax.cond.notify_all()

    def _wait(self, node_id: int, what: str, ok: Any) -> None:
        """Wait (condition variable, deadline) until ``ok(axis)``; DriverError otherwise."""
        ax = self._axes[node_id]
        deadline = time.monotonic() + self.state_timeout_s
        with ax.cond:
            while not ok(ax):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DriverError(f"CANopen drive {node_id}: {what} not reached within "
                                      f"{self.state_timeout_s} s (state {ax.state})")
                ax.cond.wait(left)

    def _goto(self, node_id: int, controlword: int, state: str) -> None:
        self._send_rpdo(node_id, controlword, 0)
        self._wait(node_id, state, lambda ax: ax.state == state)

    # ------------------------------------------------------------------ Driver hooks

    def _connect(self) -> None:
        import canopen

        net = canopen.Network()
        net.NOTIFIER_CYCLE = 0.05
        kwargs: dict[str, Any] = {"interface": self.interface, "channel": self.channel}
        if self.bitrate is not None:
            kwargs["bitrate"] = self.bitrate
        net.connect(**kwargs)
        self._network = net
        try:
            cpr = self.counts_per_rad
            for i in self.node_ids:
                node = canopen.RemoteNode(i, ds.velocity_drive_dictionary(i))
                net.add_node(node)
                self._nodes[i] = node
                net.subscribe(0x700 + i, self._on_heartbeat)
                node.nmt.state = "PRE-OPERATIONAL"
                try:
                    node.sdo[ds.MODES_OF_OPERATION].raw = ds.MODE_PROFILE_VELOCITY
                    node.sdo[ds.QUICK_STOP_OPTION].raw = ds.QUICK_STOP_RAMP_AND_HOLD
                    node.sdo[ds.PROFILE_ACCEL].raw = int(self.accel * cpr)
                    node.sdo[ds.PROFILE_DECEL].raw = int(self.accel * cpr)
                    node.sdo[ds.QUICK_STOP_DECEL].raw = int(self.quick_stop_decel * cpr)
                    node.sdo[ds.PRODUCER_HEARTBEAT].raw = self.heartbeat_ms
                    self._configure_pdos(node)
                except canopen.sdo.SdoAbortedError as exc:
                    raise DriverError(
                        f"CANopen drive {i} on {self.interface}:{self.channel} refused its "
                        f"configuration by SDO ({exc}); it must accept profile velocity mode "
                        f"and PDO mapping in PRE-OPERATIONAL") from exc
                except canopen.sdo.SdoCommunicationError as exc:
                    raise DriverError(
                        f"CANopen drive {i} on {self.interface}:{self.channel} did not answer "
                        f"its configuration by SDO ({exc}); is it powered, on the bus, with "
                        f"node id {i}?") from exc
            for i in self.node_ids:
                self._wait(i, "heartbeat", lambda ax: ax.t_heartbeat > -np.inf)
                self._nodes[i].nmt.state = "OPERATIONAL"
                self._wait(i, "first TPDO (NMT OPERATIONAL)", lambda ax: ax.statusword is not None)
            for i in self.node_ids:
                self._enable(i)
        except Exception:
            net.disconnect()
            self._network = None
            raise
        self.last_command_t = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="bciarm-canopen402",
                                        daemon=True)
        self._thread.start()

    def _enable(self, node_id: int) -> None:
        """Walk the 402 state machine of one drive to OPERATION ENABLED."""
        state = self._axes[node_id].state
        if state in (ds.FAULT, ds.FAULT_REACTION_ACTIVE):
            self._send_rpdo(node_id, 0, 0)
            self._goto(node_id, ds.CW_FAULT_RESET, ds.SWITCH_ON_DISABLED)
        if self._axes[node_id].state == ds.QUICK_STOP_ACTIVE:
            self._goto(node_id, ds.CW_ENABLE_OPERATION, ds.OPERATION_ENABLED)
            return
        if self._axes[node_id].state != ds.OPERATION_ENABLED:
            self._goto(node_id, ds.CW_SHUTDOWN, ds.READY_TO_SWITCH_ON)
            self._goto(node_id, ds.CW_SWITCH_ON, ds.SWITCHED_ON)
            self._goto(node_id, ds.CW_ENABLE_OPERATION, ds.OPERATION_ENABLED)

    def _read(self) -> JointState:
        pos = np.array([self._axes[i].position for i in self.node_ids], dtype=float)
        vel = np.array([self._axes[i].velocity for i in self.node_ids], dtype=float)
        return JointState(pos / self.counts_per_rad, vel / self.counts_per_rad, time.monotonic())

    def _command_velocity(self, qdot: np.ndarray) -> None:
        with self._lock:
            if self.faulted:
                return  # drives stay quick-stopped until reset_fault()
            targets = [ds.clamp_i32(v * self.counts_per_rad) for v in qdot]
            if self._stopped_for_timeout:
                # Fresh commands after a command timeout: QUICK STOP ACTIVE ->
                # OPERATION ENABLED (quick stop option 6), with the new targets.
                self._stopped_for_timeout = False
            for i, t in zip(self.node_ids, targets):
                self._send_rpdo(i, ds.CW_ENABLE_OPERATION, t)
            self._target[:] = targets
            self.last_command_t = time.monotonic()

    def stop(self) -> None:
        """Target velocity zero on every drive (ramped at the profile deceleration)."""
        if self.connected:
            with self._lock:
                if not self.faulted:
                    for i in self.node_ids:
                        self._send_rpdo(i, ds.CW_ENABLE_OPERATION, 0)
                self._target[:] = 0

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        try:
            if self._network is not None:
                for i in self.node_ids:
                    self._send_rpdo(i, ds.CW_QUICK_STOP, 0)
                    self._send_rpdo(i, ds.CW_SHUTDOWN, 0)
                for node in self._nodes.values():
                    node.nmt.state = "PRE-OPERATIONAL"
        finally:
            if self._network is not None:
                self._network.disconnect()
                self._network = None
            owned = getattr(self, "_owned", None)
            if owned is not None:
                owned.close()

    # ------------------------------------------------------------------ supervision

    def quick_stop(self, cause: str, node_ids: Sequence[int] | None = None) -> None:
        """Send a Quick stop controlword to ``node_ids`` (default all) and log it."""
        with self._lock:
            now = time.monotonic()
            for i in self.node_ids if node_ids is None else node_ids:
                self._send_rpdo(i, ds.CW_QUICK_STOP, 0)
                self.quick_stops.append((now, cause, i))
            self._target[:] = 0

    def _fault(self, cause: str, node_id: int) -> None:
        with self._lock:
            if self.faulted:
                return
            self.faulted = f"drive {node_id}: {cause}"
            others = [i for i in self.node_ids if i != node_id]
            self.quick_stop(cause, others)
        log.error("CanOpen402Driver: %s; other drives quick-stopped", self.faulted)

    def _supervise(self) -> None:
        while not self._stop.wait(self.supervise_period_s):
            now = time.monotonic()
            with self._lock:
                if (not self.faulted and not self._stopped_for_timeout
                        and now - self.last_command_t > self.command_timeout_s):
                    self._stopped_for_timeout = True
                    self.quick_stop("command_timeout")
            for i, ax in self._axes.items():
                if now - ax.t_heartbeat > self.heartbeat_timeout_s:
                    self._fault("heartbeat lost", i)
                elif ax.state in (ds.FAULT, ds.FAULT_REACTION_ACTIVE):
                    self._fault("drive fault", i)

    def reset_fault(self) -> None:
        """Clear a driver fault: fault-reset and re-enable every drive (raises if one cannot)."""
        self._require_connected()
        with self._lock:
            for i in self.node_ids:
                self._enable(i)
            self.faulted = ""
            self._stopped_for_timeout = False
            self.last_command_t = time.monotonic()

    def drive_states(self) -> dict[int, str | None]:
        """CiA 402 state of every drive, from its latest statusword."""
        return {i: ax.state for i, ax in self._axes.items()}

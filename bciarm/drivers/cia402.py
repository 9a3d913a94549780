"""CiA 402 (CANopen drives and motion control) essentials shared by the driver and the simulated drive.

* :func:`velocity_drive_dictionary` — the object dictionary of a drive in
  profile velocity mode (the objects the driver uses), for both ends of the
  bus (the driver's ``RemoteNode`` and a simulated drive's ``LocalNode``).
* The power state machine: statusword decoding (:func:`state_of`) and the
  controlword commands (:data:`CW_SHUTDOWN`, ...).
* PDO communication and mapping objects (0x1400-0x1403 / 0x1600-0x1603
  receive, 0x1800-0x1803 / 0x1A00-0x1A03 transmit) and two layouts of them:
  :data:`DEFAULT_PDOS` (what a drive ships with, unless told otherwise) and
  :data:`DRIVER_PDOS` (what :class:`~bciarm.drivers.canopen402.CanOpen402Driver`
  writes by SDO before it starts a drive): RPDO1 = controlword (0x6040) +
  target velocity (0x60FF); TPDO1 = statusword (0x6041) + velocity actual
  value (0x606C); TPDO2 = position actual value (0x6064); every other PDO
  disabled.

Velocities and positions travel in drive units: ``counts/s`` and ``counts``
(the driver converts with its ``counts_per_rad``).
"""

from __future__ import annotations

from canopen import objectdictionary as od

# ----------------------------------------------------------------------------- objects
DEVICE_TYPE = 0x1000
PRODUCER_HEARTBEAT = 0x1017
CONTROLWORD = 0x6040
STATUSWORD = 0x6041
QUICK_STOP_OPTION = 0x605A
MODES_OF_OPERATION = 0x6060
MODES_DISPLAY = 0x6061
POSITION_ACTUAL = 0x6064
VELOCITY_ACTUAL = 0x606C
PROFILE_ACCEL = 0x6083
PROFILE_DECEL = 0x6084
QUICK_STOP_DECEL = 0x6085
TARGET_VELOCITY = 0x60FF

#: Modes of operation (0x6060).
MODE_PROFILE_VELOCITY = 3
#: Quick stop option code 6: slow down on the quick-stop ramp and stay in
#: QUICK STOP ACTIVE (an Enable operation command may then resume).
QUICK_STOP_RAMP_AND_HOLD = 6

# ----------------------------------------------------------------------------- controlword
CW_DISABLE_VOLTAGE = 0x0000
CW_QUICK_STOP = 0x0002
CW_SHUTDOWN = 0x0006
CW_SWITCH_ON = 0x0007
CW_ENABLE_OPERATION = 0x000F
CW_FAULT_RESET = 0x0080

# ----------------------------------------------------------------------------- states
NOT_READY = "NOT READY TO SWITCH ON"
SWITCH_ON_DISABLED = "SWITCH ON DISABLED"
READY_TO_SWITCH_ON = "READY TO SWITCH ON"
SWITCHED_ON = "SWITCHED ON"
OPERATION_ENABLED = "OPERATION ENABLED"
QUICK_STOP_ACTIVE = "QUICK STOP ACTIVE"
FAULT_REACTION_ACTIVE = "FAULT REACTION ACTIVE"
FAULT = "FAULT"

#: (mask, value, state) in decoding order (CiA 402, statusword bits 0-3, 5, 6).
_SW_STATES = (
    (0x4F, 0x00, NOT_READY),
    (0x4F, 0x40, SWITCH_ON_DISABLED),
    (0x6F, 0x21, READY_TO_SWITCH_ON),
    (0x6F, 0x23, SWITCHED_ON),
    (0x6F, 0x27, OPERATION_ENABLED),
    (0x6F, 0x07, QUICK_STOP_ACTIVE),
    (0x4F, 0x0F, FAULT_REACTION_ACTIVE),
    (0x4F, 0x08, FAULT),
)

#: Statusword bits of each state (bit 4 "voltage enabled" set where powered).
STATUSWORD_OF = {
    NOT_READY: 0x0000,
    SWITCH_ON_DISABLED: 0x0040,
    READY_TO_SWITCH_ON: 0x0031,
    SWITCHED_ON: 0x0033,
    OPERATION_ENABLED: 0x0037,
    QUICK_STOP_ACTIVE: 0x0017,
    FAULT_REACTION_ACTIVE: 0x001F,
    FAULT: 0x0008,
}


def state_of(statusword: int) -> str:
    """The CiA 402 power state a statusword reports."""
    for mask, value, state in _SW_STATES:
        if statusword & mask == value:
            return state
    return NOT_READY


# ----------------------------------------------------------------------------- PDOs
RPDO_COMM, RPDO_MAP, TPDO_COMM, TPDO_MAP = 0x1400, 0x1600, 0x1800, 0x1A00
#: PDOs per direction in the dictionary (the predefined connection set has four).
N_PDOS = 4
#: COB-ID bit 31: PDO not valid (disabled).
PDO_NOT_VALID = 1 << 31
#: Transmission type 255: asynchronous (event driven, device-profile specific).
TRANSMISSION_ASYNC = 255

#: One PDO: the objects it carries (index, in order) or None when disabled.
PdoLayout = dict[int, "tuple[int, ...] | None"]

#: A drive's mapping as delivered (CiA 402 velocity-mode defaults): the
#: driver must not rely on it, it writes :data:`DRIVER_PDOS` instead.
DEFAULT_PDOS: dict[str, PdoLayout] = {
    "rpdo": {1: (CONTROLWORD, TARGET_VELOCITY), 2: None, 3: None, 4: None},
    "tpdo": {1: (STATUSWORD, VELOCITY_ACTUAL), 2: (POSITION_ACTUAL,), 3: None, 4: None},
}

#: The mapping the driver writes by SDO in PRE-OPERATIONAL (PDO n on its
#: predefined COB-ID: RPDOn 0x100 + 0x100·n + id, TPDOn 0x080 + 0x100·n + id).
DRIVER_PDOS: dict[str, PdoLayout] = {
    "rpdo": {1: (CONTROLWORD, TARGET_VELOCITY), 2: None, 3: None, 4: None},
    "tpdo": {1: (STATUSWORD, VELOCITY_ACTUAL), 2: (POSITION_ACTUAL,), 3: None, 4: None},
}


def predefined_cob_id(kind: str, n: int, node_id: int) -> int:
    """COB-ID of RPDO/TPDO ``n`` (1-4) of ``node_id`` in the predefined connection set."""
    return (0x100 if kind == "rpdo" else 0x080) + 0x100 * n + node_id


def clamp_i32(value: float) -> int:
    return int(max(-(2**31), min(2**31 - 1, round(value))))


# ----------------------------------------------------------------------------- dictionary

def _var(index: int, name: str, data_type: int, access: str = "rw", default: int = 0,
         pdo: bool = False) -> od.ODVariable:
    v = od.ODVariable(name, index, 0)
    v.data_type = data_type
    v.access_type = access
    v.default = default
    v.pdo_mappable = pdo
    return v


def _pdo_records(d: od.ObjectDictionary, node_id: int, pdos: dict[str, PdoLayout]) -> None:
    """Add the PDO communication and mapping records, preset to the layout ``pdos``."""
    for kind, comm, mapping in (("rpdo", RPDO_COMM, RPDO_MAP), ("tpdo", TPDO_COMM, TPDO_MAP)):
        layout = pdos.get(kind, {})
        for n in range(1, N_PDOS + 1):
            objs = layout.get(n)
            cob = predefined_cob_id(kind, n, node_id) | (0 if objs else PDO_NOT_VALID)
            rec = od.ODRecord(f"{kind.upper()}{n} communication parameter", comm + n - 1)
            subs = [(0, "Highest sub-index supported", od.UNSIGNED8, "const",
                     5 if kind == "tpdo" else 2),
                    (1, "COB-ID", od.UNSIGNED32, "rw", cob),
                    (2, "Transmission type", od.UNSIGNED8, "rw", TRANSMISSION_ASYNC)]
            if kind == "tpdo":
                subs += [(3, "Inhibit time", od.UNSIGNED16, "rw", 0),
                         (5, "Event timer", od.UNSIGNED16, "rw", 0)]
            for sub, name, dtype, access, default in subs:
                rec.add_member(_sub(rec, sub, name, dtype, access, default))
            d.add_object(rec)
            rec = od.ODRecord(f"{kind.upper()}{n} mapping parameter", mapping + n - 1)
            entries = [d[i] for i in objs or ()]
            rec.add_member(_sub(rec, 0, "Number of mapped objects", od.UNSIGNED8, "rw",
                                len(entries)))
            for k in range(1, 9):
                v = entries[k - 1] if k <= len(entries) else None
                value = 0 if v is None else (v.index << 16 | v.subindex << 8 | len(v))
                rec.add_member(_sub(rec, k, f"Mapped object {k}", od.UNSIGNED32, "rw", value))
            d.add_object(rec)


def _sub(rec: od.ODRecord, sub: int, name: str, data_type: int, access: str,
         default: int) -> od.ODVariable:
    v = od.ODVariable(name, rec.index, sub)
    v.data_type, v.access_type, v.default = data_type, access, default
    return v


def velocity_drive_dictionary(node_id: int = 1,
                              pdos: dict[str, PdoLayout] | None = None) -> od.ObjectDictionary:
    """Object dictionary of a CiA 402 drive in profile velocity mode (see module docstring).

    Parameters
    ----------
    node_id : int
        The drive's node id (the PDO COB-IDs of the predefined connection set use it).
    pdos : dict, optional
        The drive's PDO mapping as stored in its dictionary,
        ``{"rpdo": {n: (index, ...) or None}, "tpdo": {...}}``; default
        :data:`DEFAULT_PDOS`.  Simulated drives with another mapping check
        that a driver configures the PDOs it uses instead of assuming them.
    """
    d = od.ObjectDictionary()
    for v in (
        _var(DEVICE_TYPE, "Device type", od.UNSIGNED32, "ro", 0x00020192),
        _var(PRODUCER_HEARTBEAT, "Producer heartbeat time", od.UNSIGNED16, "rw", 0),
        _var(CONTROLWORD, "Controlword", od.UNSIGNED16, "rw", 0, pdo=True),
        _var(STATUSWORD, "Statusword", od.UNSIGNED16, "ro", 0, pdo=True),
        _var(QUICK_STOP_OPTION, "Quick stop option code", od.INTEGER16, "rw",
             QUICK_STOP_RAMP_AND_HOLD),
        _var(MODES_OF_OPERATION, "Modes of operation", od.INTEGER8, "rw", 0, pdo=True),
        _var(MODES_DISPLAY, "Modes of operation display", od.INTEGER8, "ro", 0, pdo=True),
        _var(POSITION_ACTUAL, "Position actual value", od.INTEGER32, "ro", 0, pdo=True),
        _var(VELOCITY_ACTUAL, "Velocity actual value", od.INTEGER32, "ro", 0, pdo=True),
        _var(PROFILE_ACCEL, "Profile acceleration", od.UNSIGNED32, "rw", 10000),
        _var(PROFILE_DECEL, "Profile deceleration", od.UNSIGNED32, "rw", 10000),
        _var(QUICK_STOP_DECEL, "Quick stop deceleration", od.UNSIGNED32, "rw", 50000),
        _var(TARGET_VELOCITY, "Target velocity", od.INTEGER32, "rw", 0, pdo=True),
    ):
        d.add_object(v)
    _pdo_records(d, node_id, DEFAULT_PDOS if pdos is None else pdos)
    return d

"""CiA 402 (CANopen drives and motion control) essentials shared by the driver and the simulated drive.

* :func:`velocity_drive_dictionary` — the object dictionary of a drive in
  profile velocity mode (the objects the driver uses), for both ends of the
  bus (the driver's ``RemoteNode`` and a simulated drive's ``LocalNode``).
* The power state machine: statusword decoding (:func:`state_of`) and the
  controlword commands (:data:`CW_SHUTDOWN`, ...).
* The PDO layout the driver expects (predefined connection set, CiA 402
  default mapping for velocity mode): RPDO1 (0x200 + id) = controlword
  (0x6040, u16) + target velocity (0x60FF, i32); TPDO1 (0x180 + id) =
  statusword (0x6041, u16) + velocity actual value (0x606C, i32); TPDO2
  (0x280 + id) = position actual value (0x6064, i32).

Velocities and positions travel in drive units: ``counts/s`` and ``counts``
(the driver converts with its ``counts_per_rad``).
"""

from __future__ import annotations

import struct

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
RPDO1 = 0x200
TPDO1 = 0x180
TPDO2 = 0x280
_RPDO1 = struct.Struct("<Hi")
_TPDO1 = struct.Struct("<Hi")
_TPDO2 = struct.Struct("<i")


def pack_rpdo1(controlword: int, target_velocity: int) -> bytes:
    return _RPDO1.pack(controlword & 0xFFFF, target_velocity)


def unpack_rpdo1(data: bytes) -> tuple[int, int]:
    return _RPDO1.unpack(bytes(data[:6]))


def pack_tpdo1(statusword: int, velocity: int) -> bytes:
    return _TPDO1.pack(statusword & 0xFFFF, velocity)


def unpack_tpdo1(data: bytes) -> tuple[int, int]:
    return _TPDO1.unpack(bytes(data[:6]))


def pack_tpdo2(position: int) -> bytes:
    return _TPDO2.pack(position)


def unpack_tpdo2(data: bytes) -> int:
    return _TPDO2.unpack(bytes(data[:4]))[0]


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


def velocity_drive_dictionary() -> od.ObjectDictionary:
    """Object dictionary of a CiA 402 drive in profile velocity mode (see module docstring)."""
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
    return d

"""Messages that cross the bus: frozen dataclasses, one per topic family.

Every message has a :class:`Header` (``seq``, ``t_ns``, ``src``).  Messages
derived from a neural frame also carry that frame's ``seq`` and acquisition
time (``neural_seq``, ``neural_t_ns``) so end-to-end latency and provenance can
be measured anywhere downstream.

The schema of each field is declared in the dataclass field metadata
(:func:`array_field`); :mod:`bciarm.bus.codec` reads it to validate frames
coming off the wire.  Bump :data:`SCHEMA_VERSION` whenever a message changes
shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

SCHEMA_VERSION = 3  # 2: EffectorState.extra; 3: Intent.grasp, TaskState.goal

#: Topic families and their message classes are bound in :data:`TOPIC_TYPES`
#: (bottom of this module).  ``state.<effector>`` and ``hb.<node>`` take a
#: suffix; the others are exact.
PREFIX_TOPICS = ("state.", "hb.")


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """Constraints a message array must meet on the wire.

    Parameters
    ----------
    ndim : int
        Required number of dimensions.
    dtypes : tuple of str
        Allowed NumPy dtype strings (little-endian, e.g. ``"<f8"``).
    finite : bool
        Reject NaN and Inf (floating dtypes only).
    shape : tuple of int or None
        Fixed sizes per dimension (``None`` entries are free).
    max_size : int
        Upper bound on the number of elements (protects against oversized frames).
    """

    ndim: int = 1
    dtypes: tuple[str, ...] = ("<f8",)
    finite: bool = True
    shape: tuple[int | None, ...] | None = None
    max_size: int = 1 << 20


FLOAT_DTYPES = ("<f8", "<f4")
COUNT_DTYPES = ("|u1", "<u2", "<u4", "<i4", "<f4", "<f8")


def array_field(spec: ArraySpec, optional: bool = False) -> Any:
    """Declare a dataclass field holding a NumPy array validated by ``spec``.

    ``optional`` fields default to an empty float64 array.
    """
    if optional:
        return field(default_factory=lambda: np.zeros(0), metadata={"array": spec})
    return field(metadata={"array": spec})


@dataclass(frozen=True, slots=True)
class Header:
    """Common header of every message.

    Attributes
    ----------
    seq : int
        Per-publisher, per-topic sequence number, starting at 0.
    t_ns : int
        Monotonic publish time in nanoseconds (simulated clock in the inline
        runtime, ``time.monotonic_ns`` in real time).
    src : str
        Name of the publishing node.
    neural_seq : int
        ``seq`` of the neural frame this message derives from, or -1.
    neural_t_ns : int
        Acquisition time of that frame, or -1.
    """

    seq: int
    t_ns: int
    src: str
    neural_seq: int = -1
    neural_t_ns: int = -1

    def derived(self) -> tuple[int, int]:
        """Provenance to hand on to messages computed from this one.

        A neural frame is its own origin; any other message passes on what it
        carries.
        """
        return self.neural_seq, self.neural_t_ns


class Message:
    """Mixin for bus messages; subclasses are frozen dataclasses."""

    topic_family: ClassVar[str]
    header: Header

    def replace(self, **changes: Any) -> "Message":
        """Return a copy with ``changes`` applied (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True, slots=True)
class NeuralFrame(Message):
    """One bin of neural features (spike counts per channel).

    Its header's ``neural_seq``/``neural_t_ns`` equal its own ``seq`` and
    acquisition time, so everything derived from it can point back.
    """

    topic_family: ClassVar[str] = "neural"
    header: Header
    counts: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=COUNT_DTYPES, max_size=65536))
    bin_s: float = 0.05


@dataclass(frozen=True, slots=True)
class Intent(Message):
    """Decoded (or assisted) movement intent in the effector's task space.

    ``velocity`` has one entry per task axis (m/s for Cartesian space, rad/s
    for joint space and wrist axes).

    ``grasp`` (schema 3) is the discrete hand command of a grasp ("click")
    decoder: :data:`GRASP_NONE` (-1, no opinion: the gripper follows the
    continuous ``grasp`` axis), :data:`GRASP_RELEASE` (0) or
    :data:`GRASP_CLOSE` (1, squeeze at the grip-force limit).
    """

    topic_family: ClassVar[str] = "intent"
    header: Header
    velocity: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, max_size=64))
    space: str = "cartesian"
    grasp: int = -1


@dataclass(frozen=True, slots=True)
class EffectorState(Message):
    """What an effector did this control tick, after its safety chain.

    ``guards`` names the safety guards that acted on this tick (e.g.
    ``"speed"``, ``"workspace"``, ``"watchdog"``, ``"estop"``).

    ``extra`` (schema 2) carries effector-specific readings whose layout the
    effector documents; empty for the arm.  The wheelchair puts its heading,
    measured and commanded (v, ω), clearance and range-sensor readings there
    (:data:`bciarm.effectors.wheelchair.state.EXTRA_LAYOUT`).
    """

    topic_family: ClassVar[str] = "state."
    header: Header
    position: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, shape=(3,)))
    velocity: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, shape=(3,)))
    joint_position: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, max_size=64))
    joint_velocity: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, max_size=64))
    estopped: bool = False
    guards: tuple[str, ...] = ()
    extra: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, max_size=1024),
                                    optional=True)


@dataclass(frozen=True, slots=True)
class TaskState(Message):
    """The task's view: current trial, phase and target (world coordinates).

    ``mode`` is ``"open_loop"`` while the task drives the effector itself
    (calibration) and ``"closed_loop"`` while the decoder does.  ``outcome``
    is set on the message that ends a trial (``"success"`` or ``"timeout"``).

    ``goal`` (schema 3) is the full goal of a reach-and-grasp task, empty
    otherwise: :data:`GOAL_LAYOUT` -- world position (3), wrist orientation as
    a rotation vector from the arm's home orientation (3, rad), gripper
    aperture (m), wanted hand state (1 hold, 0 open) and the orientation
    tolerance (rad).
    """

    topic_family: ClassVar[str] = "task"
    header: Header
    block: str
    trial: int
    phase: str
    mode: str
    target: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, shape=(3,)))
    target_radius: float = 0.02
    outcome: str = ""
    goal: np.ndarray = array_field(ArraySpec(ndim=1, dtypes=FLOAT_DTYPES, max_size=16),
                                   optional=True)


#: Discrete hand commands carried by :attr:`Intent.grasp`.
GRASP_NONE, GRASP_RELEASE, GRASP_CLOSE = -1, 0, 1

#: Entries of :attr:`TaskState.goal` (reach-and-grasp tasks).
GOAL_LAYOUT = ("x", "y", "z", "rx", "ry", "rz", "aperture", "hold", "orientation_tol")


@dataclass(frozen=True, slots=True)
class Event(Message):
    """Operator, supervisor and protocol events (estop, resume, block_start, ...).

    ``data`` maps short keys to scalars or strings.
    """

    topic_family: ClassVar[str] = "event"
    header: Header
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Liveness and counters of one node (``hb.<node>``)."""

    topic_family: ClassVar[str] = "hb."
    header: Header
    node: str
    state: str
    counters: dict[str, int] = field(default_factory=dict)
    latency_p50_us: float = 0.0
    latency_p99_us: float = 0.0


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls for cls in (NeuralFrame, Intent, EffectorState, TaskState, Event, Heartbeat)
}

#: topic family -> message class
TOPIC_TYPES: dict[str, type[Message]] = {cls.topic_family: cls for cls in MESSAGE_TYPES.values()}

#: Event kinds every node understands.
EVENT_KINDS = (
    "estop",
    "resume",
    "block_start",
    "block_end",
    "decoder_update",
    "fault",
    "session_end",
    "collision",
    "assist",
    "mode",
    "stream",  # a neural input stream connected / lost / refused (LSL, Cerebus)
)


def topic_family(topic: str) -> str | None:
    """Return the family of ``topic`` (``"state."`` for ``"state.arm"``) or None."""
    if topic in TOPIC_TYPES:
        return topic
    for prefix in PREFIX_TOPICS:
        if topic.startswith(prefix) and len(topic) > len(prefix):
            return prefix
    return None


def message_class_for(topic: str) -> type[Message] | None:
    """The message class a topic carries, or None for an unknown topic."""
    family = topic_family(topic)
    return TOPIC_TYPES.get(family) if family is not None else None


def as_array(values: Any, dtype: str = "<f8") -> np.ndarray:
    """Convert ``values`` to a contiguous, little-endian array for a message."""
    return np.ascontiguousarray(values, dtype=np.dtype(dtype))

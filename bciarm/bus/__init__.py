"""The message bus: messages, codec, node API and runtimes."""

from bciarm.bus.messages import (
    SCHEMA_VERSION,
    EffectorState,
    Event,
    Header,
    Heartbeat,
    Intent,
    Message,
    NeuralFrame,
    TaskState,
)
from bciarm.bus.node import Node, NodeParams

__all__ = [
    "SCHEMA_VERSION",
    "EffectorState",
    "Event",
    "Header",
    "Heartbeat",
    "Intent",
    "Message",
    "NeuralFrame",
    "Node",
    "NodeParams",
    "TaskState",
]

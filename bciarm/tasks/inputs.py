"""The input dispatch every task shares: its effector's state, block start/end events."""

from __future__ import annotations

from typing import Any

from bciarm.bus.messages import EffectorState, Event, Message


class TaskInputs:
    """Mixin for task nodes: routes inputs to ``_on_state``, ``_start_block``, ``_end_block``.

    ``state.*`` messages of the configured effector (``params.effector``; any
    effector when None) go to ``_on_state``; ``block_start`` to
    ``_start_block(data)``; ``block_end`` and ``session_end`` to ``_end_block``;
    any other event to ``_on_event`` (default: ignored).
    """

    params: Any

    def on_message(self, topic: str, msg: Message) -> None:
        if isinstance(msg, EffectorState):
            if self.params.effector is None or topic == f"state.{self.params.effector}":
                self._on_state(msg)
        elif isinstance(msg, Event):
            if msg.kind == "block_start":
                self._start_block(msg.data)
            elif msg.kind in ("block_end", "session_end"):
                self._end_block()
            else:
                self._on_event(msg)

    def _on_state(self, msg: EffectorState) -> None:
        raise NotImplementedError

    def _start_block(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def _end_block(self) -> None:
        raise NotImplementedError

    def _on_event(self, msg: Event) -> None:
        """Any other event (e.g. a wheelchair's ``collision``); ignored by default."""

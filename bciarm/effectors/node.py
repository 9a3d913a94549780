"""Shared bus plumbing of effector nodes (arm, wheelchair, ...).

An effector node owns a controller (controller → safety chain → driver) and
turns bus traffic into calls on it: intents are offered to the safety chain,
``estop``/``resume`` events latch and clear it, task targets are shown in the
scene, and the node publishes ``state.<name>`` every tick.  Subclasses name
their controller and config classes and build the state message.
"""

from __future__ import annotations

from typing import Any, ClassVar

from bciarm.bus.messages import Event, Header, Intent, Message, TaskState
from bciarm.bus.node import Node


class EffectorNode(Node):
    """Base of effector nodes.

    Subclasses set ``config_class`` (the controller's pydantic config, whose
    fields are a subset of ``Params``), ``controller_class`` (built as
    ``controller_class(driver, config)``, with ``start``, ``offer_intent``,
    ``estop``, ``resume``, ``estopped``, ``intent_fresh``, ``update`` and
    ``close``), ``intent_space``, and implement :meth:`on_tick`.  ``Params``
    must have ``driver`` (registry name) and ``driver_params``.
    """

    config_class: ClassVar[type]
    controller_class: ClassVar[type]
    intent_space: ClassVar[str] = "cartesian"
    #: Topics published besides ``state.<name>``.
    extra_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, params: Any = None, **kwargs: Any) -> None:
        super().__init__(name, params, **kwargs)
        self.inputs = ("intent", "event", "task")
        self.state_topic = f"state.{name}"
        self.outputs = (self.state_topic, *self.extra_outputs)
        self.controller: Any = None
        self._intent_header: Header | None = None

    def make_driver(self) -> Any:
        """Instantiate the configured driver from the registry (not connected)."""
        from bciarm.registry import resolve

        return resolve("driver", self.params.driver)(**self.params.driver_params)

    def on_start(self) -> None:
        fields = set(self.config_class.model_fields)
        config = self.config_class(**self.params.model_dump(include=fields))
        self.controller = self.controller_class(self.make_driver(), config)
        self.controller.start(self.now_ns() / 1e9)

    def on_message(self, topic: str, msg: Message) -> None:
        ctl = self.controller
        if ctl is None:
            return
        if isinstance(msg, Intent):
            if msg.space != self.intent_space:
                self._reject("intent_space")
            elif ctl.offer_intent(msg.velocity, self.now_ns() / 1e9):
                self._intent_header = msg.header
            elif not ctl.estopped:
                self._reject("intent_invalid")
        elif isinstance(msg, Event):
            if msg.kind == "estop":
                ctl.estop(str(msg.data.get("reason", "")))
                self.log.warning("%s: e-stop latched (%s)", self.name, msg.header.src)
            elif msg.kind == "resume":
                if ctl.resume():
                    self.log.info("%s: e-stop cleared (%s)", self.name, msg.header.src)
            else:
                self.on_event(msg)
        elif isinstance(msg, TaskState):
            self.on_task(msg)

    def on_event(self, msg: Event) -> None:
        """Events other than estop/resume (default: ignored)."""

    def on_task(self, msg: TaskState) -> None:
        """Show the task's target in the scene (visual only)."""
        if self.controller.driver.connected:
            self.controller.driver.show_target(msg.target, msg.target_radius)

    def provenance(self, now_s: float) -> Header | None:
        """Header of the intent driving this tick, or None if it went stale."""
        return self._intent_header if self.controller.intent_fresh(now_s) else None

    def _reject(self, reason: str) -> None:
        self.counters.rejected += 1
        self.counters.rejected_by_reason[reason] += 1

    def on_stop(self) -> None:
        if self.controller is not None:
            self.controller.close()

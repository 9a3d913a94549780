"""What a simulated exoskeleton user sees: joint angles and a joint-space goal.

An exoskeleton patient intends joint motions (rad/s per active joint).  The
simulated user (:class:`~bciarm.sources.user.SimulatedUser`, unchanged: it
aims in any number of dimensions, through the feedback delay, with motor
noise) observes, in joint space:

* the active joints' angles, from the exoskeleton's state
  (``EffectorState.extra``, :mod:`bciarm.effectors.exoskeleton.layout`);
* the goal posture, from the task's ``joint_target`` event
  (``data = {joint name: rad}``), shown while the task's phase is
  ``reach``, ``hold`` or ``done``.

This module only translates those messages; the population encodes the
resulting joint-velocity intent like any other (cosine tuning, ``v_ref`` in
rad/s).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bciarm.bus.messages import EffectorState, Event


class JointView:
    """Joint-space observations for the simulated user.

    Parameters
    ----------
    axes : sequence of str
        The active joints, in intent order.
    """

    def __init__(self, axes: Sequence[str]) -> None:
        self.axes = tuple(axes)
        self.goal: np.ndarray | None = None

    def position(self, msg: EffectorState) -> np.ndarray | None:
        """Active joint angles carried by an exoskeleton state (None if it has no such layout)."""
        from bciarm.effectors.exoskeleton.layout import reading_of

        r = reading_of(msg)
        if r is None or r.active_position.size != len(self.axes):
            return None
        return r.active_position

    def on_event(self, msg: Event) -> bool:
        """Take the goal from a ``joint_target`` event; True if the goal changed."""
        if msg.kind != "joint_target":
            return False
        values = [msg.data.get(a) for a in self.axes]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            self.goal = np.array(values, dtype=float)
        else:
            self.goal = None
        return True

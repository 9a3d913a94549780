"""Pace a control loop on a real device's own clock (``Driver.advance`` of paced drivers).

A real robot's time passes on its controller's clock (libfranka
``RobotState.time``, RTDE ``timestamp``).  :class:`DeviceClockPacer` makes
``advance(dt)`` wait until that clock has moved on by ``dt`` since the
previous tick's deadline, so a loop that calls it once per tick (the inline
runtime, through the effector) runs at the device's pace: wall-clock pace on
a real robot, the simulator's pace when a simulator runs slower than real
time.
"""

from __future__ import annotations

import time
from typing import Callable


class DeviceClockPacer:
    """Tick deadlines on a device clock.

    Parameters
    ----------
    clock : callable
        Returns the device's time, s (monotonic while connected).

    Attributes
    ----------
    late_ticks : int
        Waits that gave up because the device clock did not move (a frozen
        link): after ``4·dt + 0.1`` s of wall time.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.late_ticks = 0
        self._deadline: float | None = None

    def reset(self) -> None:
        """Forget the deadline (after a reconnect, whose clock may restart)."""
        self._deadline = None

    def wait(self, dt: float) -> None:
        """Wait until the device clock reaches the next deadline (previous + ``dt``).

        A caller that fell more than a tick behind is not made to catch up in a
        burst: the deadline restarts from now.  A clock that jumps back (a
        restarted controller) also restarts it.
        """
        dt = float(dt)
        if not dt > 0:
            raise ValueError(f"advance(dt={dt}) needs a positive dt")
        now = self.clock()
        if self._deadline is None or now > self._deadline + dt or now < self._deadline - 2 * dt:
            self._deadline = now + dt
        else:
            self._deadline += dt
        give_up = time.monotonic() + 4 * dt + 0.1
        while now < self._deadline:
            if time.monotonic() > give_up:
                self.late_ticks += 1
                self._deadline = None
                return
            time.sleep(min(0.001, self._deadline - now))
            now = self.clock()

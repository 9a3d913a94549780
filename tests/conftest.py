"""Suite-wide isolation.

libfranka (through franky, in the Franka driver tests) makes the thread that opens
the robot ``SCHED_FIFO``; in the test runner that would leak into every later test
and into every process a test starts (they inherit the policy).  Put the runner
back to normal scheduling after each test.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _normal_scheduling_after_each_test():
    yield
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass

"""CPU scheduling of runtime processes (bciarm.bus.sched): applied where allowed, logged
and carried on where not.  Each case runs in a child process (never the test runner)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from bciarm.config import RealtimeSpec

CHILD = """
import logging, os, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from bciarm.bus import sched
{start}  # how the parent left us (the test runner's own policy must not leak in)
if {drop}:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)   # nobody: no privilege
got = sched.apply({priority}, {nice}, effector={effector})
print(got, os.sched_getscheduler(0) == os.SCHED_FIFO, os.getpriority(os.PRIO_PROCESS, 0))
"""


NORMAL = "os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))"
FIFO = "os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(30))"


def _child(priority: int, nice: int, effector: bool, drop: bool = False,
           start: str = NORMAL) -> tuple[str, str]:
    code = CHILD.format(priority=priority, nice=nice, effector=effector, drop=drop, start=start)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip(), p.stderr


def _privileged() -> bool:
    import resource

    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 20


def test_other_processes_take_their_nice_value():
    out, _ = _child(0, 7, effector=False)
    assert out == "nice:7 False 7"


def test_a_node_started_by_a_realtime_parent_runs_normally():
    if not _privileged():
        pytest.skip("SCHED_FIFO not allowed for this user (not root, RLIMIT_RTPRIO < 20)")
    out, _ = _child(0, 7, effector=False, start=FIFO)
    assert out == "nice:7 False 7"


def test_effector_process_runs_under_fifo_where_allowed():
    if not _privileged():
        pytest.skip("SCHED_FIFO not allowed for this user (not root, RLIMIT_RTPRIO < 20)")
    out, _ = _child(20, 0, effector=True)
    assert out == "fifo:20 True 0"


def test_without_privilege_an_effector_carries_on_and_says_so():
    if os.geteuid() != 0:
        out, err = _child(20, 0, effector=True)
    else:  # drop to nobody in the child
        out, err = _child(20, 0, effector=True, drop=True)
    if out.startswith("fifo:"):
        pytest.skip("this unprivileged user may use SCHED_FIFO (RLIMIT_RTPRIO set)")
    assert out.endswith("False 0") and out.startswith("nice:0")
    assert "SCHED_FIFO priority 20 not allowed" in err
    assert "effector process runs with normal scheduling" in err


def test_effector_priority_below_priority_is_a_clear_config_error():
    with pytest.raises(ValidationError, match="effector_priority.*below.*realtime.priority"):
        RealtimeSpec(priority=30, effector_priority=10)
    assert RealtimeSpec(priority=30, effector_priority=0).priority == 30
    assert RealtimeSpec().effector_priority == 20 and RealtimeSpec().spawn_nice == 10
    with pytest.raises(ValidationError):
        RealtimeSpec(nice=-5)  # lowering needs privilege: not a config option

"""CPU scheduling of the real-time runtime's processes: the last hop wins the CPU.

On a small machine the effector process must not wait for the CPU while
other work runs — least of all while the supervisor starts a replacement
process (an interpreter plus numpy, pybullet and zmq imports is hundreds of
milliseconds of CPU) at the very moment the effector's watchdog has to
stop the device.  Three levers, each applied where the OS allows it and
otherwise skipped with one logged line (never fatal):

* effector processes run under ``SCHED_FIFO`` (``realtime.effector_priority``):
  whenever they are runnable they get a core before any normally scheduled
  process.  Their loops block in ``poll`` between ticks (no busy wait), and
  the kernel's real-time throttling keeps a runaway from locking a core.
  Where ``SCHED_FIFO`` is refused (no root, no ``RLIMIT_RTPRIO``) they try a
  negative nice value (``EFFECTOR_FALLBACK_NICE``), which also needs
  privilege; otherwise they run as everything else, logged;
* every other node process runs at ``realtime.nice`` (0–19, default 0;
  raising one's own nice value needs no privilege);
* replacement processes do their imports at ``realtime.spawn_nice``
  (default 10: the warm spare waits, fully imported, to replace the next
  process that dies) and take their group's setting when they start.
  Lowering a nice value again needs privilege: where it is refused the
  process stays at ``spawn_nice`` (logged).

Apply the setting before the process starts any thread (ZeroMQ's I/O
thread receives the intents and control messages and must inherit it).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("bciarm.sched")

#: Nice value an effector process asks for where ``SCHED_FIFO`` is refused.
EFFECTOR_FALLBACK_NICE = -10


def set_fifo(priority: int) -> bool:
    """Run this process (and threads it starts afterwards) under ``SCHED_FIFO`` at
    ``priority`` (1–99).  Returns False, after logging why, if the OS refuses."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
        return True
    except (OSError, AttributeError) as exc:
        log.warning("SCHED_FIFO priority %d not allowed here (%s)", priority, exc)
        return False


def set_normal() -> None:
    """Leave any real-time policy inherited from the parent (a supervisor whose thread a
    driver library such as libfranka made ``SCHED_FIFO``, or a user's ``chrt``): a process
    whose spec says priority 0 runs under normal scheduling, whatever started it."""
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError) as exc:  # pragma: no cover - dropping RT is allowed
        log.warning("could not leave the inherited real-time policy (%s)", exc)


def set_nice(value: int) -> bool:
    """Set this process's nice value (absolute, -20..19).  Returns False, after
    logging why, if the OS refuses (lowering it needs privilege)."""
    value = max(-20, min(19, int(value)))
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) != value:
            os.setpriority(os.PRIO_PROCESS, 0, value)
        return True
    except (OSError, AttributeError) as exc:
        log.warning("nice %d not allowed here (%s): staying at nice %s", value, exc,
                    _nice_or_unknown())
        return False


def _nice_or_unknown() -> str:
    try:
        return str(os.getpriority(os.PRIO_PROCESS, 0))
    except OSError:  # pragma: no cover
        return "?"


def apply(priority: int = 0, nice: int = 0, effector: bool = False) -> str:
    """Apply a process's scheduling from its spec; return what is in force, for logs.

    Parameters
    ----------
    priority : int
        ``SCHED_FIFO`` priority (1–99); 0: normal scheduling at ``nice``.
    nice : int
        Nice value under normal scheduling.
    effector : bool
        The process drives a device: where ``SCHED_FIFO`` is refused, ask for
        :data:`EFFECTOR_FALLBACK_NICE` instead of ``nice``.

    Returns
    -------
    str
        ``"fifo:<priority>"`` or ``"nice:<value>"``.
    """
    if priority > 0:
        set_nice(nice if not effector else min(nice, 0))
        if set_fifo(priority):
            return f"fifo:{priority}"
        if effector:
            log.warning("effector process: trying nice %d instead", EFFECTOR_FALLBACK_NICE)
            if set_nice(EFFECTOR_FALLBACK_NICE):
                return f"nice:{EFFECTOR_FALLBACK_NICE}"
            set_normal()
            log.warning("effector process runs with normal scheduling: on a loaded machine "
                        "its stop may come later than stop_within_s (run as root or grant "
                        "RLIMIT_RTPRIO, e.g. `ulimit -r 20`, to give it priority)")
        return f"nice:{_nice_or_unknown()}"
    set_normal()
    set_nice(nice)
    return f"nice:{_nice_or_unknown()}"

"""Checks every driver and effector must pass, shipped with the package.

Modelled on Gymnasium's ``env_checker``: call :func:`check_driver` on a
factory for a new driver, or :func:`check_effector` on a factory for a new
effector node; each raises ``AssertionError`` with a plain-language message
naming what is wrong.

>>> check_driver(lambda: PyBulletArmDriver())
>>> check_effector(lambda: ArmEffector("arm"))

Simulated devices (``driver.simulated``) run on simulated time through
``advance``; for a real device the same checks wait on the wall clock, so
only run them with the robot clear of people and obstacles.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from bciarm.bus.messages import EffectorState, Event, Intent
from bciarm.drivers.base import Driver, JointLimits, JointState

#: Relative and absolute slack on velocity limits: physics solvers land a
#: hair above their target (pybullet: ~0.05 %).
VELOCITY_REL_TOL = 0.02
VELOCITY_ABS_TOL = 0.02


def _pass_time(driver: Driver, dt: float) -> None:
    if driver.simulated:
        driver.advance(dt)
    else:
        driver.advance(dt)
        time.sleep(dt)


def _finite_state(driver: Driver, n: int, when: str) -> JointState:
    state = driver.read()
    for name in ("position", "velocity"):
        a = np.asarray(getattr(state, name))
        assert a.shape == (n,), (
            f"{type(driver).__name__}.read() {when}: {name} has shape {a.shape}, expected ({n},) "
            f"(one entry per joint in joint_names)")
        assert np.all(np.isfinite(a)), (
            f"{type(driver).__name__}.read() {when}: {name} is not finite: {a}")
    return state


def _safe_direction(limits: JointLimits, q: np.ndarray) -> np.ndarray:
    """+1/-1 per joint, pointing away from the nearer position limit."""
    return np.where(limits.upper - q >= q - limits.lower, 1.0, -1.0)


def check_driver(make_driver: Callable[[], Driver], step_s: float = 0.01,
                 stop_within_s: float = 1.0) -> None:
    """Check that a driver honours the :class:`~bciarm.drivers.base.Driver` contract.

    Parameters
    ----------
    make_driver : callable
        Returns a new, unconnected driver.
    step_s : float
        Time step used with ``advance`` (a multiple of a simulator's physics step).
    stop_within_s : float
        ``stop()`` must bring every joint below 1 % of its speed limit within this time.

    Raises
    ------
    AssertionError
        Naming the broken promise.
    """
    driver = make_driver()
    name = type(driver).__name__
    assert isinstance(driver, Driver), f"{name} does not subclass bciarm.drivers.base.Driver"
    try:
        driver.connect()
        assert driver.connected, f"{name}.connected is False after connect()"
        joints = tuple(driver.joint_names)
        assert joints and all(isinstance(j, str) and j for j in joints), (
            f"{name}.joint_names must be a non-empty tuple of names, got {joints!r}")
        limits = driver.limits
        n = len(joints)
        assert limits.n == n, f"{name}.limits has {limits.n} joints but joint_names has {n}"
        vmax = limits.max_velocity
        ceiling = vmax * (1 + VELOCITY_REL_TOL) + VELOCITY_ABS_TOL

        start = _finite_state(driver, n, "after connect")
        assert np.all(start.position >= limits.lower - 1e-3) and np.all(
            start.position <= limits.upper + 1e-3), (
            f"{name} starts outside its joint limits: q={start.position}")

        # A small safe motion (10 % of the speed limit, away from the nearer limit) must move.
        direction = _safe_direction(limits, start.position)
        for _ in range(20):
            driver.command_velocity(0.1 * vmax * direction)
            _pass_time(driver, step_s)
        moved = _finite_state(driver, n, "during a small motion")
        travel = np.abs(moved.position - start.position)
        assert np.all(travel > 1e-3), (
            f"{name}: commanding 10% of max velocity for {20 * step_s:.2f} s did not move joint(s) "
            f"{[j for j, t in zip(joints, travel) if t <= 1e-3]} (travel {travel})")

        # stop() must bring the joints to rest within a bounded time.
        driver.stop()
        steps = max(1, int(round(stop_within_s / step_s)))
        for k in range(steps):
            _pass_time(driver, step_s)
            if np.all(np.abs(driver.read().velocity) <= 0.01 * vmax):
                break
        else:
            v = driver.read().velocity
            raise AssertionError(f"{name}: after stop() the joints still move at {v} rad/s "
                                 f"after {stop_within_s} s")

        # 10x the speed limit: the driver must clamp, as the last line of defence.
        q = driver.read().position
        direction = _safe_direction(limits, q)
        sent = driver.command_velocity(10.0 * vmax * direction)
        assert np.all(np.abs(sent) <= vmax + 1e-12), (
            f"{name}.command_velocity sent {sent} for a 10x command; must clamp to {vmax}")
        for k in range(5):
            _pass_time(driver, step_s)
            v = _finite_state(driver, n, "while commanded 10x the speed limit").velocity
            over = np.abs(v) > ceiling
            assert not np.any(over), (
                f"{name}: commanded 10x the speed limit, joint(s) "
                f"{[j for j, o in zip(joints, over) if o]} reached {np.abs(v)[over]} rad/s, "
                f"above the limit {vmax[over]}")
        driver.stop()
        for _ in range(steps):
            _pass_time(driver, step_s)

        # NaN / Inf must become zero velocity, never motion.
        for garbage in (np.full(n, np.nan), np.full(n, np.inf), np.full(n, -np.inf)):
            sent = driver.command_velocity(garbage)
            assert np.all(sent == 0.0), (
                f"{name}.command_velocity({garbage[0]}) sent {sent}; non-finite must become zero")
            for _ in range(5):
                _pass_time(driver, step_s)
                v = _finite_state(driver, n, f"after a {garbage[0]} command").velocity
                assert np.all(np.abs(v) <= ceiling), (
                    f"{name}: after a {garbage[0]} command joints move at {v}, above the limit")
        assert np.all(np.abs(driver.read().velocity) <= 0.05 * vmax + 1e-3), (
            f"{name}: non-finite commands did not bring the joints to rest "
            f"(velocity {driver.read().velocity})")

        # A wrong-size command is a programming error: it must raise, not move.
        try:
            driver.command_velocity(np.zeros(n + 1))
        except ValueError:
            pass
        else:
            raise AssertionError(f"{name}.command_velocity accepted {n + 1} entries for {n} joints")
    finally:
        driver.close()
    assert not driver.connected, f"{name}.connected is still True after close()"
    try:
        driver.close()
    except Exception as exc:  # noqa: BLE001 - any exception here is the failure we report
        raise AssertionError(
            f"{name}.close() a second time raised {exc!r}; it must be safe") from exc


# --------------------------------------------------------------------------- effectors


def _speed_bound(node: Any) -> tuple[float, float, float]:
    """``max_speed``, ``max_accel``, ``watchdog_s``: the node's own figures if it
    exposes them (e.g. a wheelchair's active profile, an arm's derived watchdog),
    else its params (``watchdog_timeout_s``, the watchdog in force, if defined)."""
    params = node.params
    max_speed = float(getattr(node, "max_speed", None) or params.max_speed)
    max_accel = float(getattr(node, "max_accel", None) or params.max_accel)
    watchdog = float(getattr(node, "watchdog_s", None)
                     or getattr(params, "watchdog_timeout_s", None) or params.watchdog_s)
    return max_speed, max_accel, watchdog


def check_effector(make_effector: Callable[[], Any], *, speed_tol: float = 0.02,
                   still_speed: float = 0.005) -> None:
    """Check an effector node's last-hop safety on a simulated clock.

    The effector must read ``intent`` and ``event``, publish
    :class:`~bciarm.bus.messages.EffectorState` on ``state.<name>`` every
    tick, expose ``intent_dim`` and ``params.max_speed``, ``params.max_accel``,
    ``params.watchdog_s`` and ``params.tick_s``.

    An effector whose physics differ from an arm's may declare (as
    attributes) ``max_speed`` / ``max_accel`` (its active limits, overriding
    the params), ``intent_space`` (default ``"cartesian"``),
    ``stopping_time_s`` (time to rest from ``max_speed`` once braking,
    default ``max_speed / max_accel``), ``estop_stop_s`` (physical stopping
    time of its e-stop, default 5 ticks) and ``response_time_s`` (time to
    get going on an intent, default 0.3 s).  The bounds are then checked
    against those declared figures, no looser.

    Checks: it moves on a valid intent; garbage intents (10x max speed, huge
    values, wrong sizes, NaN) never push the reported speed over
    ``max_speed + speed_tol``; after the last valid intent it comes to rest
    (speed below ``still_speed``) within ``watchdog_s + max_speed/max_accel``
    plus a settling allowance; an ``estop`` event stops it at once and
    stays latched through intents and other events, and only ``resume``
    clears it.

    Raises
    ------
    AssertionError
        Naming the broken promise.
    """
    from bciarm.bus.harness import NodeHarness

    node = make_effector()
    name = type(node).__name__
    for topic in ("intent", "event"):
        assert node.subscribes_to(topic), f"{name} does not read {topic!r}"
    topic = f"state.{node.name}"
    assert topic in node.outputs, f"{name} does not declare output {topic!r}"
    dim = int(node.intent_dim)
    max_speed, max_accel, watchdog = _speed_bound(node)
    tick = float(node.params.tick_s)
    space = str(getattr(node, "intent_space", "cartesian"))
    stopping = float(getattr(node, "stopping_time_s", max_speed / max_accel))
    estop_ticks = max(5, int(round(float(getattr(node, "estop_stop_s", 0.0)) / tick)))
    respond = max(0.3, float(getattr(node, "response_time_s", 0.3)))
    h = NodeHarness(node, tick_s=tick)
    try:
        def states() -> list[EffectorState]:
            return [m for m in h.sent(topic) if isinstance(m, EffectorState)]

        def speeds() -> np.ndarray:
            return np.array([np.linalg.norm(s.velocity) for s in states()])

        def intent(v: Any) -> None:
            h.send("intent", h.make("intent", Intent, velocity=np.asarray(v, dtype="<f8"),
                                    space=space))

        def hold(v: Any, seconds: float) -> None:
            # Re-send every tick, as a decoder would, so the watchdog stays fed.
            for _ in range(max(1, int(round(seconds / tick)))):
                intent(v)
                h.tick()

        h.tick(3)
        assert states(), f"{name} published nothing on {topic!r} in 3 ticks"

        direction = np.zeros(dim)
        direction[0] = 1.0
        home = states()[-1].position.copy()
        hold(0.5 * max_speed * direction, respond)
        assert speeds()[-1] > 0.1 * max_speed, (
            f"{name} did not move on a steady intent at half max speed "
            f"(speed {speeds()[-1]:.4f} m/s)")
        # Which way the first intent axis moves the effector: later phases head
        # back toward the start so that no phase is cut short by a workspace wall.
        along = states()[-1].position - home
        along = along / max(float(np.linalg.norm(along)), 1e-12)

        def homeward() -> np.ndarray:
            sign = 1.0 if float(along @ (home - states()[-1].position)) >= 0 else -1.0
            return sign * direction

        # Garbage: 10x max speed, huge, wrong size, NaN (the codec drops NaN; it must not matter).
        h.clear()
        rng = np.random.default_rng(0)
        garbage = [10 * max_speed * -direction, np.full(dim, 1e300), np.full(dim, -1e300),
                   np.ones(dim + 1), np.ones(dim - 1 if dim > 1 else dim + 2) * 5,
                   rng.normal(size=dim) * 100 * max_speed]
        for k in range(60):
            g = garbage[k % len(garbage)]
            intent(g)
            if k % 7 == 0:
                h.send("intent", h.make("intent", Intent, velocity=np.full(dim, np.nan),
                                        space=space))
            h.tick()
        top = float(speeds().max())
        assert top <= max_speed + speed_tol, (
            f"{name}: garbage intents pushed the speed to {top:.4f} m/s, above max_speed "
            f"{max_speed} (+{speed_tol})")

        # Watchdog: after the last valid intent, rest within the bound.
        hold(max_speed * homeward(), max(0.5, respond))
        h.clear()
        settle = 0.25
        bound = watchdog + stopping + settle
        h.advance(bound + 0.5)
        s = speeds()
        t = np.arange(1, s.size + 1) * tick
        moving = t[s > still_speed]
        last_moving = float(moving.max()) if moving.size else 0.0
        assert last_moving <= bound, (
            f"{name}: after the last intent it still moved at {s[t == last_moving][0]:.4f} m/s "
            f"{last_moving:.2f} s later; the watchdog bound is {bound:.2f} s "
            f"(watchdog {watchdog} s + stopping time {stopping:.2f} s "
            f"+ {settle} s settling)")
        assert float(s.max()) <= max_speed + speed_tol, (
            f"{name}: speed {s.max():.4f} m/s above max_speed while stopping")

        # E-stop: zero at once, latched through intents and other events; only resume clears.
        hold(0.5 * max_speed * homeward(), respond)
        h.clear()
        h.send("event", h.make("event", Event, kind="estop"))
        hold(max_speed * direction, 0.3)
        h.send("event", h.make("event", Event, kind="block_start"))
        hold(max_speed * direction, 0.3)
        st = states()
        assert st and all(m.estopped for m in st), f"{name}: estopped not reported after an e-stop"
        late = [m for m in st[estop_ticks:] if np.linalg.norm(m.velocity) > still_speed]
        assert not late, (
            f"{name}: still moving at {np.linalg.norm(late[0].velocity):.4f} m/s while e-stopped")
        h.clear()
        h.send("event", h.make("event", Event, kind="resume"))
        h.tick()
        st = states()
        assert st and not st[-1].estopped, f"{name}: still e-stopped after a resume event"
        assert np.linalg.norm(st[-1].velocity) <= still_speed + speed_tol, (
            f"{name}: started moving on resume without a fresh intent")
        hold(0.5 * max_speed * homeward(), respond)
        assert speeds()[-1] > 0.1 * max_speed, f"{name}: does not move again after resume"
    finally:
        h.close()
    try:
        node.on_stop()
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{name}.on_stop() a second time raised {exc!r}; "
                             f"it must be safe") from exc

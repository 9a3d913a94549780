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

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from bciarm.bus.messages import EffectorState, Event, Intent
from bciarm.drivers.base import Driver, JointLimits, JointState

#: Relative and absolute slack on velocity limits: physics solvers land a
#: hair above their target (pybullet: ~0.05 %).
VELOCITY_REL_TOL = 0.02
VELOCITY_ABS_TOL = 0.02


def _pass_time(driver: Driver, dt: float) -> None:
    driver.advance(dt)
    if not (driver.simulated or driver.paced):
        time.sleep(dt)  # a real device that does not pace its caller: wait on the wall clock


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


class _RejectionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "non-finite velocity command" not in record.getMessage()


@contextlib.contextmanager
def _quiet_rejections() -> Iterator[None]:
    """Silence the driver's warning for the garbage the check sends on purpose."""
    logger = logging.getLogger("bciarm.drivers")
    filt = _RejectionFilter()
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


def _safe_direction(limits: JointLimits, q: np.ndarray) -> np.ndarray:
    """+1/-1 per joint, pointing away from the nearer position limit."""
    return np.where(limits.upper - q >= q - limits.lower, 1.0, -1.0)


@dataclass
class CheckStep:
    """The outcome of one driver check.

    Attributes
    ----------
    name : str
        Short name (``connect``, ``read state``, ``small motion``, ...).
    ok : bool or None
        True passed, False failed, None skipped (not applicable).
    detail : str
        Plain-language account: what was seen, or what is wrong.
    seconds : float
        Wall time the step took.
    """

    name: str
    ok: bool | None
    detail: str
    seconds: float = 0.0


@dataclass
class DriverCheckReport:
    """What :func:`run_driver_checks` found, step by step."""

    driver: str
    steps: list[CheckStep] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True if no step failed (skipped steps do not fail)."""
        return bool(self.steps) and all(s.ok is not False for s in self.steps)

    @property
    def failures(self) -> list[CheckStep]:
        return [s for s in self.steps if s.ok is False]

    def as_dict(self) -> dict[str, Any]:
        return {"driver": self.driver, "passed": self.passed,
                "steps": [dataclasses.asdict(s) for s in self.steps]}


#: Check step names, in the order they run.
STEP_NAMES = ("connect", "read state", "small motion", "stop", "watchdog", "speed limit",
              "bad commands", "close")


class _Checker:
    """The driver checks as steps over one driver (see :func:`run_driver_checks`)."""

    def __init__(self, make_driver: Callable[[], Driver], step_s: float, stop_within_s: float):
        self.make_driver = make_driver
        self.step_s = step_s
        self.stop_within_s = stop_within_s
        self.driver: Driver | None = None
        self.name = getattr(make_driver, "__name__", "driver")

    # -- helpers

    def settle(self) -> float:
        """Pass time until every joint is below 1 % of its limit; seconds taken (device time)."""
        driver = self.driver
        vmax = driver.limits.max_velocity
        t0 = driver.read().t_s
        steps = max(1, int(round(self.stop_within_s / self.step_s)))
        for _ in range(steps):
            _pass_time(driver, self.step_s)
            state = driver.read()
            if np.all(np.abs(state.velocity) <= 0.01 * vmax):
                return float(state.t_s - t0)
        v = driver.read().velocity
        raise AssertionError(f"{self.name}: after stop() the joints still move at {v} rad/s "
                             f"after {self.stop_within_s} s")

    # -- steps (each returns a plain-language detail or raises AssertionError)

    def connect(self) -> str:
        driver = self.make_driver()
        self.name = name = type(driver).__name__
        assert isinstance(driver, Driver), f"{name} does not subclass bciarm.drivers.base.Driver"
        self.driver = driver
        driver.connect()
        assert driver.connected, f"{name}.connected is False after connect()"
        joints = tuple(driver.joint_names)
        assert joints and all(isinstance(j, str) and j for j in joints), (
            f"{name}.joint_names must be a non-empty tuple of names, got {joints!r}")
        limits = driver.limits
        assert limits.n == len(joints), (
            f"{name}.limits has {limits.n} joints but joint_names has {len(joints)}")
        return f"connected to {name}: {len(joints)} joints ({', '.join(joints)})"

    def read_state(self) -> str:
        driver, limits = self.driver, self.driver.limits
        start = _finite_state(driver, limits.n, "after connect")
        assert np.all(start.position >= limits.lower - 1e-3) and np.all(
            start.position <= limits.upper + 1e-3), (
            f"{self.name} starts outside its joint limits: q={start.position}")
        return (f"position {np.round(start.position, 3).tolist()} rad, all finite and inside "
                f"the joint limits")

    def small_motion(self) -> str:
        # A small safe motion (10 % of the speed limit, away from the nearer limit) must move.
        driver, limits = self.driver, self.driver.limits
        vmax, n, joints = limits.max_velocity, limits.n, driver.joint_names
        start = driver.read()
        direction = _safe_direction(limits, start.position)
        for _ in range(20):
            driver.command_velocity(0.1 * vmax * direction)
            _pass_time(driver, self.step_s)
        moved = _finite_state(driver, n, "during a small motion")
        travel = np.abs(moved.position - start.position)
        assert np.all(travel > 1e-3), (
            f"{self.name}: commanding 10% of max velocity for {20 * self.step_s:.2f} s did not "
            f"move joint(s) {[j for j, t in zip(joints, travel) if t <= 1e-3]} (travel {travel})")
        return (f"every joint moved ({travel.min():.3f}–{travel.max():.3f} rad) at 10 % of its "
                f"speed limit for {20 * self.step_s:.2f} s, away from its nearer limit")

    def stop(self) -> str:
        # stop() must bring the joints to rest within a bounded time.
        self.driver.stop()
        took = self.settle()
        return f"at rest {took:.3f} s after stop() (bound {self.stop_within_s} s)"

    def watchdog(self) -> str | None:
        """Commands cease (no stop()): a driver with a watchdog must bring the device to rest."""
        driver = self.driver
        timeout = getattr(driver, "command_timeout_s", None)
        if timeout is None:
            return None
        limits = driver.limits
        vmax = limits.max_velocity
        direction = _safe_direction(limits, driver.read().position)
        for _ in range(10):
            driver.command_velocity(0.1 * vmax * direction)
            _pass_time(driver, self.step_s)
        last = driver.read()
        assert np.any(np.abs(last.velocity) > 0.02 * vmax), (
            f"{self.name}: not moving before the watchdog test (velocity {last.velocity})")
        bound = float(timeout) + self.stop_within_s
        steps = max(1, int(round((bound + 0.5) / self.step_s)))
        for _ in range(steps):
            _pass_time(driver, self.step_s)  # and send nothing
            state = driver.read()
            if np.all(np.abs(state.velocity) <= 0.01 * vmax):
                took = float(state.t_s - last.t_s)
                assert took <= bound, (
                    f"{self.name}: with no command for {took:.3f} s the device came to rest only "
                    f"after its watchdog bound ({timeout} s + {self.stop_within_s} s)")
                return (f"no command sent: at rest {took:.3f} s after the last one "
                        f"(driver watchdog {timeout} s)")
        raise AssertionError(
            f"{self.name}: commands stopped, but after {steps * self.step_s:.1f} s the device "
            f"still moves at {driver.read().velocity} rad/s; its watchdog "
            f"(command_timeout_s={timeout}) did not stop it")

    def speed_limit(self) -> str:
        # 10x the speed limit: the driver must clamp, as the last line of defence.
        driver, limits = self.driver, self.driver.limits
        vmax, n, joints = limits.max_velocity, limits.n, driver.joint_names
        ceiling = vmax * (1 + VELOCITY_REL_TOL) + VELOCITY_ABS_TOL
        direction = _safe_direction(limits, driver.read().position)
        sent = driver.command_velocity(10.0 * vmax * direction)
        assert np.all(np.abs(sent) <= vmax + 1e-12), (
            f"{self.name}.command_velocity sent {sent} for a 10x command; must clamp to {vmax}")
        top = np.zeros(n)
        for _ in range(5):
            _pass_time(driver, self.step_s)
            v = _finite_state(driver, n, "while commanded 10x the speed limit").velocity
            top = np.maximum(top, np.abs(v))
            over = np.abs(v) > ceiling
            assert not np.any(over), (
                f"{self.name}: commanded 10x the speed limit, joint(s) "
                f"{[j for j, o in zip(joints, over) if o]} reached {np.abs(v)[over]} rad/s, "
                f"above the limit {vmax[over]}")
        driver.stop()
        self.settle()
        return (f"a 10x command was clamped to the limit; measured speed at most "
                f"{float(np.max(top / vmax)):.0%} of the limit")

    def bad_commands(self) -> str:
        # NaN / Inf must become zero velocity, never motion.
        driver, limits = self.driver, self.driver.limits
        vmax, n = limits.max_velocity, limits.n
        ceiling = vmax * (1 + VELOCITY_REL_TOL) + VELOCITY_ABS_TOL
        for garbage in (np.full(n, np.nan), np.full(n, np.inf), np.full(n, -np.inf)):
            with _quiet_rejections():
                sent = driver.command_velocity(garbage)
            assert np.all(sent == 0.0), (
                f"{self.name}.command_velocity({garbage[0]}) sent {sent}; non-finite must "
                f"become zero")
            for _ in range(5):
                _pass_time(driver, self.step_s)
                v = _finite_state(driver, n, f"after a {garbage[0]} command").velocity
                assert np.all(np.abs(v) <= ceiling), (
                    f"{self.name}: after a {garbage[0]} command joints move at {v}, above "
                    f"the limit")
        assert np.all(np.abs(driver.read().velocity) <= 0.05 * vmax + 1e-3), (
            f"{self.name}: non-finite commands did not bring the joints to rest "
            f"(velocity {driver.read().velocity})")
        # A wrong-size command is a programming error: it must raise, not move.
        try:
            driver.command_velocity(np.zeros(n + 1))
        except ValueError:
            pass
        else:
            raise AssertionError(f"{self.name}.command_velocity accepted {n + 1} entries for "
                                 f"{n} joints")
        return "NaN and ±Inf commands became zero velocity; a wrong-size command was refused"

    def gripper(self) -> str:
        """A driver with a gripper (``bciarm.drivers.gripper``): limits, reading, close, open."""
        from bciarm.drivers.gripper import has_gripper

        driver = self.driver
        assert driver is not None
        if not has_gripper(driver):
            return "no gripper"
        lim = driver.gripper_limits()
        assert 0.0 <= lim.min_aperture < lim.max_aperture and lim.max_speed > 0 \
            and lim.max_force > 0, f"{self.name}.gripper_limits() not sane: {lim}"

        def aperture() -> float:
            st = driver.read_gripper()
            a = float(st.aperture)
            assert math.isfinite(a) and lim.min_aperture - 1e-3 <= a <= lim.max_aperture + 1e-3, \
                f"{self.name}.read_gripper() aperture {a} outside {lim}"
            return a

        def run(v: float, force: float, seconds: float) -> float:
            for _ in range(max(1, round(seconds / self.step_s))):
                driver.command_gripper(v, force)
                _pass_time(driver, self.step_s)
            return aperture()

        speed = 0.5 * lim.max_speed
        a0 = aperture()
        if a0 - lim.min_aperture < 0.01:  # start from an open hand
            a0 = run(speed, lim.max_force, 0.5)
        # Closing with a force over the hardware's limit: the driver clamps it.
        a1 = run(-speed, 10.0 * lim.max_force, 0.3)
        assert a1 < a0 - 0.003, f"{self.name}: the gripper did not close ({a0:.4f} -> {a1:.4f} m)"
        a2 = run(speed, lim.max_force, 0.3)
        assert a2 > a1 + 0.003, f"{self.name}: the gripper did not open ({a1:.4f} -> {a2:.4f} m)"
        run(0.0, lim.max_force, 0.05)
        run(float("nan"), float("nan"), 0.05)  # garbage: no exception, fingers hold
        return (f"closed {a0 * 1e3:.1f} -> {a1 * 1e3:.1f} mm (force asked 10x the "
                f"{lim.max_force:g} N limit), opened to {a2 * 1e3:.1f} mm; NaN held")

    def close(self) -> str:
        driver = self.driver
        if driver is None:
            return "nothing to close"
        was_connected = driver.connected
        driver.close()
        assert not driver.connected, f"{self.name}.connected is still True after close()"
        try:
            driver.close()
        except Exception as exc:  # noqa: BLE001 - any exception here is the failure we report
            raise AssertionError(
                f"{self.name}.close() a second time raised {exc!r}; it must be safe") from exc
        if not was_connected:
            return "released (it never connected); a second close() was harmless"
        return "stopped and released; a second close() was harmless"


def run_driver_checks(make_driver: Callable[[], Driver], step_s: float = 0.01,
                      stop_within_s: float = 1.0, speed_limit: bool = True,
                      progress: Callable[[CheckStep], None] | None = None) -> DriverCheckReport:
    """Run the driver checks step by step and report every outcome.

    Steps: ``connect``, ``read state``, ``small motion`` (10 % of the speed
    limit, away from the nearer joint limit, 0.2 s), ``stop`` (at rest within
    ``stop_within_s``), ``watchdog`` (a driver with a ``command_timeout_s``
    attribute: commands cease without ``stop()`` and the device must come to
    rest within ``command_timeout_s + stop_within_s``; skipped for drivers
    without a device-side watchdog, e.g. simulations whose motors hold their
    last command), ``speed limit`` (a 10× command is clamped; moves every
    joint at its full speed limit for a few ticks), ``bad commands`` (NaN/Inf
    become zero, a wrong-size command is refused), ``gripper`` (a driver with
    the gripper methods of :mod:`bciarm.drivers.gripper`: sane limits, a
    reading inside them, closes with a force over its limit asked, opens, a
    NaN command is harmless; "no gripper" otherwise), ``close``.  After a
    failure the remaining motion steps are skipped and the device is stopped
    and closed.

    Parameters
    ----------
    make_driver : callable
        Returns a new, unconnected driver.
    step_s : float
        Time step used with ``advance`` (a multiple of a simulator's physics step).
    stop_within_s : float
        Bound on coming to rest after ``stop()``, or after the watchdog's timeout.
    speed_limit : bool
        Run the ``speed limit`` step (full-speed motion for ~50 ms).
    progress : callable, optional
        Called with each :class:`CheckStep` as it completes.

    Returns
    -------
    DriverCheckReport
    """
    checker = _Checker(make_driver, step_s, stop_within_s)
    report = DriverCheckReport(checker.name)
    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("connect", checker.connect), ("read state", checker.read_state),
        ("small motion", checker.small_motion), ("stop", checker.stop),
        ("watchdog", checker.watchdog), ("speed limit", checker.speed_limit),
        ("bad commands", checker.bad_commands), ("gripper", checker.gripper)]
    failed = False

    def record(step: CheckStep) -> None:
        report.steps.append(step)
        if progress is not None:
            progress(step)

    for name, fn in steps:
        if failed or (name == "speed limit" and not speed_limit):
            why = ("not run after an earlier failure" if failed
                   else "not run (moves every joint at its full speed limit; ask for it)")
            record(CheckStep(name, None, why))
            continue
        t0 = time.monotonic()
        try:
            detail = fn()
        except AssertionError as exc:
            failed = True
            record(CheckStep(name, False, str(exc), time.monotonic() - t0))
        except Exception as exc:  # noqa: BLE001 - a driver error is a failed check, said plainly
            failed = True
            record(CheckStep(name, False, f"{checker.name} raised {type(exc).__name__}: {exc}",
                             time.monotonic() - t0))
        else:
            if detail is None:
                detail = (f"{checker.name} has no driver-side watchdog (command_timeout_s): a "
                          "simulation whose motors hold their last command; the effector's "
                          "watchdog stops it")
                record(CheckStep(name, None, detail, time.monotonic() - t0))
            else:
                record(CheckStep(name, True, detail, time.monotonic() - t0))
        if failed and checker.driver is not None and checker.driver.connected:
            try:
                checker.driver.stop()
            except Exception:  # noqa: BLE001 - close() below tries again
                pass
    report.driver = checker.name
    t0 = time.monotonic()
    try:
        detail = checker.close()
    except AssertionError as exc:
        record(CheckStep("close", False, str(exc), time.monotonic() - t0))
    except Exception as exc:  # noqa: BLE001
        record(CheckStep("close", False, f"{checker.name}.close() raised "
                                         f"{type(exc).__name__}: {exc}", time.monotonic() - t0))
    else:
        record(CheckStep("close", True, detail, time.monotonic() - t0))
    return report


def check_driver(make_driver: Callable[[], Driver], step_s: float = 0.01,
                 stop_within_s: float = 1.0) -> None:
    """Check that a driver honours the :class:`~bciarm.drivers.base.Driver` contract.

    Runs every step of :func:`run_driver_checks` (the speed-limit step
    included) and raises on the first failure.

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
    report = run_driver_checks(make_driver, step_s, stop_within_s, speed_limit=True)
    for step in report.failures:
        raise AssertionError(step.detail)


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
    ``state_speed(state)`` (the speed of a state in intent units, when its
    ``velocity`` is not: an exoskeleton driven in joint space reports its
    palm velocity but is bounded in rad/s; default ``|state.velocity|``),
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

        speed_of = getattr(node, "state_speed", None) or (
            lambda s: float(np.linalg.norm(s.velocity)))

        def speeds() -> np.ndarray:
            return np.array([speed_of(s) for s in states()])

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
        late = [m for m in st[estop_ticks:] if speed_of(m) > still_speed]
        assert not late, (
            f"{name}: still moving at {speed_of(late[0]):.4f} m/s while e-stopped")
        h.clear()
        h.send("event", h.make("event", Event, kind="resume"))
        h.tick()
        st = states()
        assert st and not st[-1].estopped, f"{name}: still e-stopped after a resume event"
        assert speed_of(st[-1]) <= still_speed + speed_tol, (
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

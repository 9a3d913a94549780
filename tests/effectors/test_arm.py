"""ArmEffector / ArmController acceptance tests on the simulated Panda.

Everything runs on the simulated clock.  Speeds are measured from the physics
(``PyBulletArmDriver.ee_state``: pybullet's own link velocity), not from what
the controller believes it commanded.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from bciarm import registry
from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import EffectorState, Event, Intent, TaskState
from bciarm.drivers.pybullet_arm import PyBulletArmDriver
from bciarm.effectors.arm import ArmController, ArmEffector
from bciarm.effectors.kinematics import orientation_error
from bciarm.testing.driver_checks import check_effector

MAX_SPEED = 0.25
MAX_ACCEL = 1.0
MAX_DECEL = 13.0     # the default braking deceleration of a watchdog stop
STOP_WITHIN = 0.1    # the default stop contract
TICK = 0.01
WATCHDOG = STOP_WITHIN - TICK - 2 * TICK  # derived: a tick to notice, 2 ticks of braking
SPEED_TOL = 0.01     # m/s over max_speed allowed in the measured physics
STILL = 0.005        # m/s: "stopped"
STOP_BOUND = STOP_WITHIN + TICK  # the contract, measured in the physics after each tick


@pytest.fixture
def ctl():
    c = ArmController(PyBulletArmDriver())
    c.start()
    yield c
    c.close()


@pytest.fixture
def harness():
    node = ArmEffector("arm")
    h = NodeHarness(node, tick_s=TICK)
    yield h, node
    h.close()


def physics(ctl_or_node) -> tuple[np.ndarray, np.ndarray]:
    ctl = getattr(ctl_or_node, "controller", ctl_or_node)
    return ctl.driver.ee_state()


class Meter:
    """Collects physics measurements after every tick."""

    def __init__(self, ctl: ArmController) -> None:
        self.ctl = ctl
        self.speed: list[float] = []
        self.vel: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []
        self.joint_ratio: list[float] = []
        self.vmax = ctl.driver.limits.max_velocity

    def reset(self) -> None:
        for samples in (self.speed, self.vel, self.pos, self.joint_ratio):
            samples.clear()

    def sample(self) -> None:
        pos, vel = self.ctl.driver.ee_state()
        self.speed.append(float(np.linalg.norm(vel)))
        self.vel.append(np.asarray(vel, float))
        self.pos.append(pos)
        self.joint_ratio.append(float(np.max(np.abs(self.ctl.driver.read().velocity) / self.vmax)))

    def t_still(self, skip: int = 0) -> float:
        """Time (s, whole ticks after sample ``skip``) until the motion the arm had at
        sample ``skip`` ended: speed, or speed along that direction, below STILL.  (Once
        stopped, station keeping may pull the arm back a millimetre at a few mm/s: not
        the motion a stop must end.)"""
        u = self.vel[skip] / max(self.speed[skip], 1e-12)
        after = [i for i in range(skip + 1, len(self.vel))
                 if self.speed[i] < STILL or self.vel[i] @ u < STILL]
        assert after, "never came to rest"
        return (after[0] - skip) * TICK


# --------------------------------------------------------------------------- limits hold


GARBAGE = [
    np.array([2.5, 0.0]),             # 10x max speed
    np.array([-2.5, 2.5]),
    np.array([np.nan, 0.0]),
    np.array([np.inf, -np.inf]),
    np.array([1e300, -1e300]),
    np.array([0.1, 0.1, 0.1]),        # wrong size
    np.array([0.1]),
]


def test_garbage_intents_direct_never_exceed_limits_and_stop(ctl):
    meter = Meter(ctl)
    rng = np.random.default_rng(0)
    for k in range(300):
        ctl.update(GARBAGE[rng.integers(len(GARBAGE))])
        meter.sample()
    assert max(meter.speed) <= MAX_SPEED + SPEED_TOL
    assert max(meter.joint_ratio) <= 1.0
    # 10x speed the whole time, into the workspace wall: still within limits and the box.
    for k in range(200):
        ctl.update(np.array([2.5, 2.5]))
        meter.sample()
    assert max(meter.speed) <= MAX_SPEED + SPEED_TOL
    lo, hi = ctl.workspace
    assert all(np.all(p >= lo - 0.005) and np.all(p <= hi + 0.005) for p in meter.pos)
    # Then only garbage: it must come to rest within stop_within_s (+ one tick: the
    # physics measured after the tick).
    for k in range(40):
        ctl.update(np.array([-2.5, 0.0]))  # get moving again at full speed
    meter.reset()
    meter.sample()
    for k in range(100):
        ctl.update([np.nan, np.inf][k % 2] * np.ones(2))
        meter.sample()
    s = np.array(meter.speed)
    assert s[0] > 0.8 * MAX_SPEED  # it was moving when the garbage started
    assert meter.t_still() <= STOP_BOUND
    assert ctl.cartesian.rejected >= 100


def test_garbage_through_the_bus_never_exceeds_limits(harness):
    h, node = harness
    meter = Meter(node.controller)
    for k in range(300):
        v = GARBAGE[k % len(GARBAGE)]
        h.send("intent", h.make("intent", Intent, velocity=v))  # NaN/Inf: rejected by the codec
        h.tick()
        meter.sample()
    assert max(meter.speed) <= MAX_SPEED + SPEED_TOL
    assert max(meter.joint_ratio) <= 1.0
    states = h.sent("state.arm")
    assert len(states) == 300
    assert max(np.linalg.norm(s.velocity) for s in states) <= MAX_SPEED + SPEED_TOL
    assert node.counters.rejected > 0  # wrong sizes and NaN/Inf were counted
    assert any("speed" in s.guards for s in states)
    # Get going at full speed, then only garbage: it must come to rest in bounded time.
    for k in range(40):
        h.send("intent", h.make("intent", Intent, velocity=np.array([-MAX_SPEED, 0.0])))
        h.tick()
    meter.reset()
    meter.sample()
    for k in range(100):
        v = [np.array([np.nan, 0.0]), np.array([np.inf, 1.0]), np.ones(3)][k % 3]
        h.send("intent", h.make("intent", Intent, velocity=v))
        h.tick()
        meter.sample()
    s = np.array(meter.speed)
    assert s[0] > 0.8 * MAX_SPEED
    # NaN/Inf never reach the node (the codec rejects them): the watchdog stops it; the
    # wrong-size one (third) is rejected by the node and brakes at once.
    assert meter.t_still() <= STOP_BOUND


def test_joint_velocities_within_configured_cap():
    c = ArmController(PyBulletArmDriver(), max_joint_velocity=0.3, max_speed=1.0, max_accel=5.0,
                      stop_within_s=0.2)  # 1 m/s takes longer to stop than 100 ms
    c.start()
    try:
        worst = 0.0
        acted = set()
        for k in range(150):
            st = c.update(np.array([1.0, -1.0]) if k < 100 else np.array([-1.0, 0.0]))
            worst = max(worst, float(np.abs(c.driver.read().velocity).max()))
            acted.update(st.guards)
            assert np.all(np.abs(st.joint_command) <= 0.3 + 1e-12)
        assert worst <= 0.3 * 1.02 + 0.01
        assert "joint_speed" in acted  # the cap, not the Cartesian limits, is what bound it
    finally:
        c.close()


# --------------------------------------------------------------------------- watchdog, e-stop


def test_watchdog_stops_within_bound(harness):
    h, node = harness
    meter = Meter(node.controller)
    for k in range(60):  # 0.6 s at max speed (-x has 0.2 m of room)
        h.send("intent", h.make("intent", Intent, velocity=np.array([-MAX_SPEED, 0.0])))
        h.tick()
    assert np.linalg.norm(physics(node)[1]) > 0.9 * MAX_SPEED
    start = physics(node)[0]
    meter.sample()  # the tick of the last intent
    for k in range(int(1.5 / TICK)):
        h.tick()
        meter.sample()
    s = np.array(meter.speed)
    t_stop = meter.t_still()
    assert t_stop <= STOP_BOUND, f"stopped after {t_stop:.3f} s, bound {STOP_BOUND:.3f} s"
    # It brakes, not locks: at full speed well into the watchdog delay, then a tick at
    # part speed (max_decel: 0.13 m/s per tick) before rest.
    assert s[int(WATCHDOG / TICK) // 2] > 0.9 * MAX_SPEED
    assert any(0.2 * MAX_SPEED < v < 0.8 * MAX_SPEED for v in s[:int(STOP_BOUND / TICK) + 1])
    distance = np.linalg.norm(meter.pos[-1] - start)
    ideal = MAX_SPEED * (WATCHDOG + TICK) + MAX_SPEED ** 2 / (2 * MAX_DECEL)
    assert distance <= ideal + 0.01
    assert "watchdog" in h.sent("state.arm")[-1].guards


def test_a_late_tick_commands_what_the_stop_has_reached():
    """The control process missed ticks (no CPU): the first tick it gets commands the speed
    the stop should have by then, so the stop contract holds however late it comes.
    (A slow-braking device, where one tick of braking is far from enough.)"""
    c = ArmController(PyBulletArmDriver(), {"stop_within_s": 0.3, "max_decel": 2.0})
    c.start(0.0)
    try:
        wd = c.config.watchdog_timeout_s                  # 0.3 - a tick - 0.13 s of braking
        for k in range(1, 40):
            c.update(np.array([-MAX_SPEED, 0.0]), k * TICK)
        t_last = 39 * TICK
        t = t_last
        while t + TICK < t_last + wd:
            t += TICK
            st = c.update(None, t)
            assert np.linalg.norm(st.command) == pytest.approx(MAX_SPEED)
        moving = np.max(np.abs(st.joint_command))
        st = c.update(None, t_last + 0.2)                 # late, inside the braking
        assert np.linalg.norm(st.command) <= MAX_SPEED - 2.0 * (0.2 - wd) + 1e-9
        st = c.update(None, t_last + 0.3)                 # late, at the contract's end
        assert np.all(st.command == 0.0)
        # the joints follow (what is left is the station keeping's small correction)
        assert np.max(np.abs(st.joint_command)) < 0.1 * moving
    finally:
        c.close()


def test_estop_zero_command_within_one_tick_and_resume(harness, monkeypatch):
    h, node = harness
    sent: list[np.ndarray] = []
    drv = node.controller.driver
    real = drv._command_velocity
    monkeypatch.setattr(drv, "_command_velocity", lambda q: (sent.append(q.copy()), real(q)))
    for k in range(40):
        h.send("intent", h.make("intent", Intent, velocity=np.array([0.2, 0.1])))
        h.tick()
    assert np.abs(sent[-1]).max() > 0.05
    sent.clear()
    h.send("event", h.make("event", Event, kind="estop"))
    assert sent and np.all(sent[-1] == 0)          # driver.stop() on the message itself
    h.clear()
    for k in range(30):
        h.send("intent", h.make("intent", Intent, velocity=np.array([0.2, 0.1])))
        h.tick()
        assert np.all(sent[-1] == 0)               # every tick while latched commands zero
    h.send("event", h.make("event", Event, kind="block_start"))
    h.tick(10)
    states = h.sent("state.arm")
    assert all(s.estopped for s in states) and all("estop" in s.guards for s in states)
    assert np.linalg.norm(states[-1].velocity) < STILL
    assert np.linalg.norm(physics(node)[1]) < STILL
    # Only resume clears it; and it needs a fresh intent to move.
    h.send("event", h.make("event", Event, kind="resume"))
    h.tick(5)
    assert not h.sent("state.arm")[-1].estopped
    assert np.linalg.norm(physics(node)[1]) < STILL
    for k in range(30):
        h.send("intent", h.make("intent", Intent, velocity=np.array([0.2, 0.0])))
        h.tick()
    assert np.linalg.norm(physics(node)[1]) > 0.15


def test_estop_direct(ctl):
    for k in range(40):
        ctl.update(np.array([0.2, 0.0]))
    ctl.estop("test")
    st = ctl.update(np.array([0.2, 0.0]))
    assert st.estopped and np.all(st.joint_command == 0) and np.all(st.command == 0)
    assert ctl.offer_intent(np.array([0.2, 0.0]), ctl.now_s) is False
    assert ctl.resume() is True
    assert ctl.resume() is False


# --------------------------------------------------------------------------- reaching


@pytest.mark.parametrize("offset", [(0.12, 0.10), (-0.15, -0.2)])
def test_reaches_a_point_in_the_plane_holding_height_and_orientation(ctl, offset):
    x0, quat0 = ctl.last.position.copy(), ctl.last.orientation.copy()
    target = x0 + np.array([*offset, 0.0])
    direction = (target - x0)[:2] / np.linalg.norm((target - x0)[:2])
    worst_dz = worst_rot = 0.0
    # A steady intent toward the target, then (like a user) slowing near it.
    for k in range(int(3.0 / TICK)):
        err = (target - ctl.last.position)[:2]
        speed = min(0.2, 2.0 * float(np.linalg.norm(err)))
        st = ctl.update(direction * speed if k < 100 else err * 2.0)
        worst_dz = max(worst_dz, abs(st.position[2] - x0[2]))
        worst_rot = max(worst_rot, float(np.linalg.norm(orientation_error(quat0, st.orientation))))
    pos = physics(ctl)[0]
    assert np.linalg.norm(pos[:2] - target[:2]) < 0.003
    assert worst_dz < 0.003              # height held
    assert worst_rot < 0.02              # orientation held (rad)


def test_three_axis_task_moves_in_z():
    c = ArmController(PyBulletArmDriver(), axes=("x", "y", "z"))
    c.start()
    try:
        z0 = c.last.position[2]
        for k in range(100):
            c.update(np.array([0.0, 0.0, 0.1]))
        assert c.last.position[2] - z0 > 0.08
    finally:
        c.close()


def test_check_effector_passes():
    check_effector(lambda: ArmEffector("arm"))


class IgnoresEstop(ArmEffector):
    def on_message(self, topic, msg):
        if isinstance(msg, Event):
            return
        super().on_message(topic, msg)


class NoWatchdog(ArmEffector):
    def on_tick(self, now_ns):
        # Re-offer the last intent every tick: the watchdog never sees it go stale.
        ctl = self.controller
        if ctl.cartesian._intent is not None:
            ctl.cartesian._intent_t = now_ns / 1e9
        super().on_tick(now_ns)


@pytest.mark.parametrize("broken, message", [(IgnoresEstop, "e-stop"),
                                             (NoWatchdog, "watchdog bound")])
def test_check_effector_catches_broken_effectors(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_effector(lambda: broken("arm"))


# --------------------------------------------------------------------------- node plumbing


def test_registered_and_params_validated():
    assert registry.resolve("effector", "arm") is ArmEffector
    with pytest.raises(ValidationError, match="colour"):
        ArmEffector("arm", colour="red")
    with pytest.raises(ValidationError):
        ArmEffector("arm", axes=["x", "x"])
    with pytest.raises(ValidationError):
        ArmEffector("arm", axes=["w"])
    with pytest.raises(ValidationError):
        ArmEffector("arm", max_speed=-1)
    with pytest.raises(ValidationError):
        ArmEffector("arm", workspace={"lower": [0, 0, 0], "upper": [1, -1, 1]})
    node = ArmEffector("left", {"max_speed": 0.1, "driver_params": {"scene": "arm_table"}})
    assert node.outputs == ("state.left",) and node.inputs == ("intent", "event", "task")
    assert node.tick_s == 0.01 and node.intent_dim == 2


def test_state_carries_provenance_and_shows_target(harness):
    h, node = harness
    hdr = h.header("intent", neural_seq=41, neural_t_ns=123)
    h.send("intent", Intent(header=hdr, velocity=np.array([0.05, 0.0])))
    h.tick()
    st = h.sent("state.arm")[-1]
    assert isinstance(st, EffectorState)
    assert (st.header.neural_seq, st.header.neural_t_ns) == (41, 123)
    assert st.position.shape == (3,) and st.joint_position.shape == (7,)
    h.tick(int(0.2 / TICK))  # intent goes stale: no longer derived from it
    assert h.sent("state.arm")[-1].header.neural_seq == -1
    h.send("task", h.make("task", TaskState, block="b", trial=1, phase="reach",
                          mode="closed_loop", target=np.array([0.0, 0.1, 0.9]),
                          target_radius=0.03))
    assert node.controller.driver._target_body is not None
    # Intents in another space are refused and counted.
    h.send("intent", h.make("intent", Intent, velocity=np.array([0.1, 0.0]), space="joint"))
    assert node.counters.rejected_by_reason["intent_space"] == 1


def test_workspace_override_and_on_stop_twice():
    node = ArmEffector("arm", workspace={"lower": [-0.15, -0.05, 0.8], "upper": [-0.05, 0.05, 1.0]})
    h = NodeHarness(node, tick_s=TICK)
    for k in range(150):
        h.send("intent", h.make("intent", Intent, velocity=np.array([2.5, 2.5])))
        h.tick()
    pos = physics(node)[0]
    assert pos[0] <= -0.05 + 0.003 and pos[1] <= 0.05 + 0.003
    h.close()
    node.on_stop()
    assert not node.controller.driver.connected


# --------------------------------------------------------------------------- stop contract


def test_stop_contract_derives_the_watchdog_and_rejects_a_device_that_cannot_stop():
    from bciarm.effectors.arm import ArmConfig

    cfg = ArmConfig()
    assert cfg.stop_within_s == pytest.approx(0.1)
    assert cfg.braking_s == pytest.approx(2 * TICK)              # 0.25 m/s at 13 m/s²: 2 ticks
    assert cfg.watchdog_timeout_s == pytest.approx(WATCHDOG)      # 0.1 - a tick - braking
    # a device that brakes at 2 m/s² cannot stop 0.25 m/s within 100 ms
    with pytest.raises(ValidationError, match="max_decel.*stop_within_s"):
        ArmConfig(max_decel=2.0)
    # an explicit watchdog must leave room for the braking
    with pytest.raises(ValidationError, match="watchdog_s.*exceeds stop_within_s"):
        ArmConfig(watchdog_s=0.1)
    assert ArmConfig(watchdog_s=0.05).watchdog_timeout_s == 0.05
    # a longer contract is allowed, and derives a longer watchdog
    assert ArmConfig(stop_within_s=0.3, max_decel=2.0).watchdog_timeout_s == pytest.approx(
        0.3 - TICK - 13 * TICK)
    with pytest.raises(ValidationError, match="max_decel.*at least max_accel"):
        ArmConfig(max_accel=5.0, max_decel=4.0)

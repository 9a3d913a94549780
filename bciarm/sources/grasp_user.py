"""A simulated user who reaches, turns the wrist and grasps (7-D task space).

What the user sees (with the visual feedback delay) is the hand's pose --
position, wrist rotation from home (rotation vector) and aperture -- and the
task's goal (:data:`~bciarm.bus.messages.GOAL_LAYOUT`).  It aims each part
straight at the goal with the speed profile of :func:`~bciarm.sources.user.aim_velocity`
(its own preferred speed and gain per part: m/s, rad/s, m/s), adds motor noise
as :class:`~bciarm.sources.user.SimulatedUser` does, and decides whether to
hold: it starts *intending to grasp* once the goal asks for a hold and the
hand is at the goal (within the task's acceptance radius), and keeps
intending it for as long as the goal asks for a hold -- a sustained attempted
squeeze, the signal a grasp ("click") decoder picks up.  A grasp that closes
on nothing (aperture under 2 cm) is let go and tried again 0.6 s later.  An
open hand that is to go down around something is lined up over it first
(:func:`line_up`: it goes down only as the lateral error shrinks).

:func:`reach_grasp_velocity` (no noise, no delay) is also the task's
open-loop autopilot, so calibration sees the same movements the user intends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from bciarm.sources.user import aim_velocity
from bciarm.space import ARM_INDEX

#: Default speeds (preferred speed, gain) of the three parts.
DEFAULT_SPEED = 0.2           # m/s (Box and Blocks is a speed test)
DEFAULT_GAIN = 2.5            # 1/s
DEFAULT_ANGULAR_SPEED = 0.5   # rad/s
DEFAULT_ANGULAR_GAIN = 2.5    # 1/s
DEFAULT_APERTURE_SPEED = 0.06  # m/s
DEFAULT_APERTURE_GAIN = 4.0   # 1/s
#: A hand closed to less than this holds nothing: a missed grasp, m.
MISSED_APERTURE = 0.02
#: After letting go of a missed grasp the user waits this long before trying again, s.
RETRY_S = 0.6
#: Lining up before lowering an open hand onto something: the user keeps the hand at
#: least ``LINE_UP_SLOPE * (lateral error - LINE_UP_SLACK)`` above a goal below it.
LINE_UP_SLOPE = 3.0
LINE_UP_SLACK = 0.005   # m
#: A goal aperture at least this wide is an open hand about to go around something, m.
OPEN_HAND = 0.06


@dataclass(frozen=True)
class Speeds:
    """Preferred speed and gain of each part of the movement."""

    speed: float = DEFAULT_SPEED
    gain: float = DEFAULT_GAIN
    angular_speed: float = DEFAULT_ANGULAR_SPEED
    angular_gain: float = DEFAULT_ANGULAR_GAIN
    aperture_speed: float = DEFAULT_APERTURE_SPEED
    aperture_gain: float = DEFAULT_APERTURE_GAIN
    line_up_slope: float = LINE_UP_SLOPE


@dataclass(frozen=True)
class HandView:
    """The hand as seen on screen: position (3), wrist rotation from home (3), aperture."""

    position: np.ndarray
    rotation: np.ndarray
    aperture: float


def line_up(position: np.ndarray, goal: np.ndarray, aperture: float,
            slope: float = LINE_UP_SLOPE) -> np.ndarray:
    """Where a person aims an open hand that is to go down around something at ``goal``.

    Lowering a misaligned open hand onto a block puts a finger on the block (or
    pushes it away), so people line the hand up over the object first and lower
    it as the error shrinks: the aim point stays ``slope * (lateral error -
    LINE_UP_SLACK)`` above the goal, never above the hand's own height (the hand
    does not rise, it stops going down).  Only for a goal below the hand that
    wants the hand open (``aperture >= OPEN_HAND``); ``slope`` 0 aims straight.
    """
    goal = np.asarray(goal, dtype=float)
    if slope <= 0 or aperture < OPEN_HAND or goal[2] >= position[2]:
        return goal
    lateral = float(np.linalg.norm(goal[:2] - position[:2]))
    floor = goal[2] + slope * max(0.0, lateral - LINE_UP_SLACK)
    out = goal.copy()
    out[2] = max(goal[2], min(position[2], floor))
    return out


def reach_grasp_velocity(hand: HandView, goal: np.ndarray, speeds: Speeds) -> np.ndarray:
    """Noise-free 7-D intent ``[v (3), omega (3), aperture rate]`` from ``hand`` to ``goal``.

    The translation aims at :func:`line_up` of the goal (straight at it unless an
    open hand is to go down onto something).
    """
    goal = np.asarray(goal, dtype=float)
    aim = line_up(hand.position, goal[:3], float(goal[6]), speeds.line_up_slope)
    v = aim_velocity(hand.position, aim, speeds.speed, speeds.gain)
    w = aim_velocity(hand.rotation, goal[3:6], speeds.angular_speed, speeds.angular_gain)
    a = aim_velocity(np.array([hand.aperture]), goal[6:7], speeds.aperture_speed,
                     speeds.aperture_gain)
    return np.r_[v, w, a]


def at_goal(hand: HandView, goal: np.ndarray, radius: float) -> bool:
    """Hand inside the goal's acceptance radius (position) and orientation tolerance."""
    goal = np.asarray(goal, dtype=float)
    near = np.linalg.norm(hand.position - goal[:3]) <= radius
    tol = goal[8] if goal.size > 8 and goal[8] > 0 else np.inf
    return bool(near and np.linalg.norm(hand.rotation - goal[3:6]) <= tol)


class ReachGraspUser:
    """Delayed-feedback user for reach-and-grasp tasks.

    Parameters
    ----------
    axes : sequence of str
        Task axes (arm axes, :data:`~bciarm.space.ARM_AXES`); the intent has
        one entry per axis.
    feedback_delay_s : float
    speeds : Speeds
    noise_rel : float
        Signal-dependent noise, fraction of the intended speed of each part.
    noise_abs : float
        Constant noise, m/s (translation and aperture); the wrist gets
        ``noise_abs * angular_speed / speed`` rad/s.
    rng : numpy.random.Generator or int or None
    """

    def __init__(self, axes: list[str], *, feedback_delay_s: float = 0.15,
                 speeds: Speeds = Speeds(), noise_rel: float = 0.15, noise_abs: float = 0.005,
                 rng: np.random.Generator | int | None = None) -> None:
        self.axes = list(axes)
        self.idx = np.array([ARM_INDEX[a] for a in self.axes])
        self.feedback_delay_s = float(feedback_delay_s)
        self.speeds = speeds
        self.noise_rel = float(noise_rel)
        self.noise_abs = float(noise_abs)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._seen: deque[tuple[float, HandView | None, np.ndarray | None, float]] = deque()
        self.holding_intent = False
        self._retry_after = -np.inf
        self.intended_velocity = np.zeros(len(self.axes))

    def observe(self, t_s: float, hand: HandView | None, goal: np.ndarray | None,
                radius: float) -> None:
        """Record what is on screen at ``t_s`` (non-decreasing times)."""
        self._seen.append((float(t_s), hand, None if goal is None else np.array(goal, float),
                           float(radius)))

    def _perceived(self, t_s: float) -> tuple[HandView | None, np.ndarray | None, float]:
        cutoff = t_s - self.feedback_delay_s + 1e-9
        seen = self._seen
        while len(seen) >= 2 and seen[1][0] <= cutoff:
            seen.popleft()
        if not seen or seen[0][0] > cutoff:
            return None, None, 0.0
        return seen[0][1], seen[0][2], seen[0][3]

    def intend(self, t_s: float) -> tuple[np.ndarray, bool]:
        """Intended velocity (task axes) and grasp intent at ``t_s``."""
        hand, goal, radius = self._perceived(t_s)
        k = len(self.axes)
        if hand is None or goal is None or goal.size < 8:
            self.holding_intent = False
            self.intended_velocity = np.zeros(k)
            return self.intended_velocity.copy(), False
        full = reach_grasp_velocity(hand, goal, self.speeds)
        # Noise per part, scaled to that part's units; drawn every call.
        n = self.rng.standard_normal((2, 7))
        s = self.speeds
        scale = np.r_[np.full(3, 1.0), np.full(3, s.angular_speed / s.speed), 1.0]
        parts = (slice(0, 3), slice(3, 6), slice(6, 7))
        for sl in parts:
            speed = float(np.linalg.norm(full[sl]))
            full[sl] += self.noise_rel * speed * n[0, sl] + self.noise_abs * scale[sl] * n[1, sl]
        wants = goal[7] >= 0.5
        if self.holding_intent and hand.aperture < MISSED_APERTURE:
            # The hand closed on nothing: let go (the hand opens), then try again.
            self.holding_intent = False
            self._retry_after = t_s + RETRY_S
        elif t_s >= self._retry_after:
            self.holding_intent = bool(wants and (self.holding_intent
                                                  or at_goal(hand, goal, radius)))
        self.intended_velocity = full[self.idx]
        return self.intended_velocity.copy(), self.holding_intent

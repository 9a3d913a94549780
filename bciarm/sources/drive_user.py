"""A simulated wheelchair user: forms a 2-D drive intent (forward, turn) from delayed feedback.

The user sees the chair's pose ``(x, y, heading)`` and the task's current
target (the next point of the route they know, see
:mod:`bciarm.tasks.navigation`) ``feedback_delay_s`` ago, and intends, as
fractions of the chair's speed profile (each in [-1, 1])::

    e       = heading error to the target (wrapped to [-π, π])
    turn    = clip(turn_gain · e, -1, 1)
    forward = preferred · tanh(d / approach_m) · max(0, cos e)²   (0 if |e| > turn_only)

so they turn toward the target while rolling slowly, turn on the spot when
it is far off to the side, and roll on at their preferred fraction of top
speed when it is ahead.  A user who sees the chair not moving at all for
``stuck_s`` while they want it to (the collision guard refuses: wedged at a
door jamb, say) does what a driver does (:class:`Unsticker`): backs up if
it was forward motion that was refused, rolls on straight-ish if it was a
turn (the rear still in a doorway), and keeps steering toward the target
meanwhile, so they come back at it from a better angle.  Motor noise as for the reaching user: Gaussian,
``noise_rel`` × the intent plus ``noise_abs``, per axis.

The same policy without noise or delay (:func:`drive_intent`) is the
navigation task's autopilot in open-loop calibration, so the decoder is fit
on the same kind of intent the user produces in closed loop.
"""

from __future__ import annotations

import math

import numpy as np

from bciarm.sources.user import SimulatedUser

DEFAULT_PREFERRED = 0.8
DEFAULT_TURN_GAIN = 1.6
DEFAULT_APPROACH_M = 0.5
DEFAULT_TURN_ONLY = 1.0
DEFAULT_NOISE_REL = 0.1
DEFAULT_NOISE_ABS = 0.05


def wrap_angle(a: float) -> float:
    """``a`` wrapped to [-π, π)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def drive_intent(pose: np.ndarray, target: np.ndarray, preferred: float = DEFAULT_PREFERRED,
                 turn_gain: float = DEFAULT_TURN_GAIN, approach_m: float = DEFAULT_APPROACH_M,
                 turn_only: float = DEFAULT_TURN_ONLY) -> np.ndarray:
    """Noise-free ``[forward, turn]`` toward ``target`` (x, y) from ``pose`` (x, y, heading)."""
    dx, dy = float(target[0] - pose[0]), float(target[1] - pose[1])
    d = math.hypot(dx, dy)
    if d < 1e-9:
        return np.zeros(2)
    e = wrap_angle(math.atan2(dy, dx) - float(pose[2]))
    turn = max(-1.0, min(1.0, turn_gain * e))
    forward = 0.0 if abs(e) > turn_only else (
        preferred * math.tanh(d / approach_m) * max(0.0, math.cos(e)) ** 2)
    return np.array([forward, turn])


class Unsticker:
    """What a driver does when the chair will not move as asked: back up or roll on, and re-aim.

    If the pose has not changed (5 cm, 0.1 rad) for ``stuck_s`` while the
    intent asks for motion, the forward intent becomes ``±push`` for
    ``unstick_s``, and the turn intent ``push_turn`` × what it was: the user
    concentrates on the push (through a decoder a strong turn intent bleeds
    into the decoded forward speed) but still leans toward the target,
    re-aiming while they move:

    * backward if they were asking to roll forward (something is in the way
      ahead: back off and come at it again);
    * forward if they were mostly turning (a turn refused in a doorway is
      freed by rolling out of it first);
    * the other way if the previous push did not move the chair at all.

    ``stuck_s`` (2 s) is the user's patience: through a decoder the chair
    answers a changed intent only after its lag (and a wake-up from idle),
    so a user who pushed back and now asks to go forward again waits that
    long before concluding the chair is stuck (at 1 s the simulated user
    kept backing away from a doorway the chair was about to pass).
    """

    def __init__(self, stuck_s: float = 2.0, unstick_s: float = 1.5, push: float = 0.8,
                 push_turn: float = 0.3) -> None:
        self.stuck_s, self.unstick_s, self.push = float(stuck_s), float(unstick_s), float(push)
        self.push_turn = float(push_turn)
        self.reset()

    def reset(self) -> None:
        self._anchor: tuple[float, np.ndarray] | None = None
        self._push_until = -np.inf
        self._push = self.push
        self._push_from: np.ndarray | None = None
        self._push_moved = True
        self.episodes = 0

    @staticmethod
    def _moved(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.hypot(*(a[:2] - b[:2])) > 0.05 or abs(a[2] - b[2]) > 0.1)

    def adjust(self, t_s: float, pose: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The intent ``u`` at ``t_s`` given the chair's ``pose``, pushed on if wedged."""
        pose = np.asarray(pose, dtype=float)
        if t_s < self._push_until:
            if self._push_from is not None and self._moved(pose, self._push_from):
                self._push_moved = True
            return np.array([self._push, self.push_turn * u[1]])
        moved = self._anchor is None or self._moved(pose, self._anchor[1])
        if moved or not np.any(np.abs(u) > 0.3):
            self._anchor = (t_s, pose.copy())
        elif t_s - self._anchor[0] >= self.stuck_s:
            if self.episodes and not self._push_moved:
                sign = -math.copysign(1.0, self._push)  # that way did nothing: the other
            else:
                sign = -1.0 if u[0] > 0.3 else 1.0
            self._push = sign * self.push
            self.episodes += 1
            self._push_until = t_s + self.unstick_s
            self._push_from, self._push_moved = pose.copy(), False
            self._anchor = (self._push_until, pose.copy())  # patience restarts after the push
            return np.array([self._push, self.push_turn * u[1]])
        return u


class DriveUser(SimulatedUser):
    """A wheelchair user with delayed feedback and motor noise (see the module docstring).

    Observations are ``position = (x, y, heading)`` and ``target = (x, y, z)``.
    """

    def __init__(self, *, feedback_delay_s: float = 0.15, preferred: float = DEFAULT_PREFERRED,
                 turn_gain: float = DEFAULT_TURN_GAIN, approach_m: float = DEFAULT_APPROACH_M,
                 turn_only: float = DEFAULT_TURN_ONLY, noise_rel: float = DEFAULT_NOISE_REL,
                 noise_abs: float = DEFAULT_NOISE_ABS,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__(3, feedback_delay_s=feedback_delay_s, preferred_speed=preferred,
                         gain=1.0, noise_rel=noise_rel, noise_abs=noise_abs, rng=rng)
        self.turn_gain = float(turn_gain)
        self.approach_m = float(approach_m)
        self.turn_only = float(turn_only)
        self.unsticker = Unsticker()
        self.intended_velocity = np.zeros(2)

    def intend(self, t_s: float) -> np.ndarray:
        """Intended ``[forward, turn]`` at ``t_s`` (zero until something was seen)."""
        pos, tgt = self.perceived(t_s)
        if pos is None or tgt is None:
            u = np.zeros(2)
            self.unsticker.reset()
        else:
            u = drive_intent(pos, tgt, self.preferred_speed, self.turn_gain, self.approach_m,
                             self.turn_only)
            u = self.unsticker.adjust(t_s, pos, u)
            n = self.rng.standard_normal((2, 2))
            u = u + self.noise_rel * np.abs(u) * n[0] + self.noise_abs * n[1]
        self.intended_velocity = u
        return u.copy()

    def reset(self) -> None:
        super().reset()
        self.intended_velocity = np.zeros(2)
        self.unsticker.reset()

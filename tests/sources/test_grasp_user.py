"""The reach-and-grasp user's aim: lining an open hand up over a goal below it."""

import numpy as np

from bciarm.sources.grasp_user import (
    LINE_UP_SLACK,
    LINE_UP_SLOPE,
    HandView,
    Speeds,
    line_up,
    reach_grasp_velocity,
)


def _goal(pos, aperture=0.075, hold=0.0):
    return np.r_[pos, np.zeros(3), aperture, hold, 0.0]


def test_an_open_hand_lines_up_before_going_down():
    goal = np.array([0.0, 0.0, 0.65])
    # 3 cm off sideways, 10 cm up: stays at or above the cone over the goal.
    aim = line_up(np.array([0.0, 0.03, 0.75]), goal, 0.075)
    np.testing.assert_allclose(aim, [0.0, 0.0, 0.65 + LINE_UP_SLOPE * (0.03 - LINE_UP_SLACK)])
    # Lined up (within the slack): straight at the goal.
    np.testing.assert_allclose(line_up(np.array([0.003, 0.0, 0.75]), goal, 0.075), goal)
    # Too low for its error: stops going down, does not rise.
    aim = line_up(np.array([0.0, 0.05, 0.66]), goal, 0.075)
    np.testing.assert_allclose(aim, [0.0, 0.0, 0.66])
    # Not for a closed hand (carrying), a goal above the hand, or slope 0.
    np.testing.assert_allclose(line_up(np.array([0.0, 0.03, 0.75]), goal, 0.045), goal)
    up = np.array([0.0, 0.0, 0.80])
    np.testing.assert_allclose(line_up(np.array([0.0, 0.03, 0.75]), up, 0.075), up)
    np.testing.assert_allclose(line_up(np.array([0.0, 0.03, 0.75]), goal, 0.075, 0.0), goal)


def test_the_aim_moves_sideways_first():
    hand = HandView(np.array([0.0, 0.04, 0.70]), np.zeros(3), 0.075)
    v = reach_grasp_velocity(hand, _goal([0.0, 0.0, 0.65]), Speeds())
    assert v[1] < 0 and v[2] == 0.0          # toward the goal sideways, not down yet
    straight = reach_grasp_velocity(hand, _goal([0.0, 0.0, 0.65]), Speeds(line_up_slope=0))
    assert straight[2] < 0

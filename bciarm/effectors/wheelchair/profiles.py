"""Speed profiles of a powered wheelchair (indoor / outdoor) and their stopping figures.

A profile bounds every motion the controller may command: forward and
backward speed, turn rate, acceleration, deceleration and jerk (for the
forward speed and, separately, for the turn rate).  Profiles are plain
pydantic models, so a config may override any field::

    profile: indoor
    profiles: {indoor: {max_forward: 0.6}}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DriveProfile(BaseModel):
    """Motion limits of one driving profile.

    Attributes
    ----------
    max_forward, max_backward : float
        Speed limits, m/s (both positive).
    max_turn : float
        Turn-rate limit, rad/s.
    accel, decel : float
        Limits on speeding up and on slowing down, m/s².
    jerk : float
        Limit on the rate of change of acceleration, m/s³.
    turn_accel, turn_decel : float
        Same for the turn rate, rad/s².
    turn_jerk : float
        rad/s³.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_forward: float = Field(0.8, gt=0)
    max_backward: float = Field(0.3, gt=0)
    max_turn: float = Field(0.8, gt=0)
    accel: float = Field(0.6, gt=0)
    decel: float = Field(1.0, gt=0)
    jerk: float = Field(2.0, gt=0)
    turn_accel: float = Field(1.5, gt=0)
    turn_decel: float = Field(2.0, gt=0)
    turn_jerk: float = Field(6.0, gt=0)


#: Built-in profiles.  Indoor: 0.8 m/s (2.9 km/h), gentle.  Outdoor: 1.8 m/s
#: (6.5 km/h, the usual class-B powered-chair top speed), firmer braking.
PROFILES: dict[str, DriveProfile] = {
    "indoor": DriveProfile(),
    "outdoor": DriveProfile(max_forward=1.8, max_backward=0.5, max_turn=1.0, accel=0.8,
                            decel=1.2, jerk=2.5, turn_accel=1.5, turn_decel=2.0, turn_jerk=6.0),
}

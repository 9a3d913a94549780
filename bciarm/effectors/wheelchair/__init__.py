"""Powered wheelchair: profiles, jerk-limited motion, shared control, controller and node."""

from bciarm.effectors.wheelchair.assist import AssistConfig, Footprint, SharedControl
from bciarm.effectors.wheelchair.controller import WheelchairConfig, WheelchairController
from bciarm.effectors.wheelchair.motion import JerkLimiter, stopping_bound, stopping_distance
from bciarm.effectors.wheelchair.node import EXTRA_LAYOUT, WheelchairEffector
from bciarm.effectors.wheelchair.profiles import PROFILES, DriveProfile

__all__ = ["AssistConfig", "DriveProfile", "EXTRA_LAYOUT", "Footprint", "JerkLimiter",
           "PROFILES", "SharedControl", "WheelchairConfig", "WheelchairController",
           "WheelchairEffector", "stopping_bound", "stopping_distance"]

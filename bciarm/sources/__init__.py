"""Neural sources: simulated population + user (closed loop), and later LSL,
replay and hardware inlets.

The pure-NumPy models (:class:`CosineTunedPopulation`, :class:`SimulatedUser`)
have no bus dependency and can be used directly in notebooks and offline
studies; :class:`SimulatedSource` wraps them as a bus node (registry name
``"simulated"``).
"""

from bciarm.sources.population import CosineTunedPopulation
from bciarm.space import axis_indices
from bciarm.sources.user import SimulatedUser, aim_velocity

__all__ = ["CosineTunedPopulation", "SimulatedUser", "aim_velocity", "axis_indices"]

"""Upper-limb exoskeleton: patient profiles, assist-as-needed, controller and node."""

from bciarm.effectors.exoskeleton.assist import AssistConfig, assist_as_needed
from bciarm.effectors.exoskeleton.controller import ExoConfig, ExoController
from bciarm.effectors.exoskeleton.layout import ExoReading, reading_of
from bciarm.effectors.exoskeleton.node import ExoEffector
from bciarm.effectors.exoskeleton.profile import PatientProfile, ProfileError, load_profile

__all__ = ["AssistConfig", "ExoConfig", "ExoController", "ExoEffector", "ExoReading",
           "PatientProfile", "ProfileError", "assist_as_needed", "load_profile", "reading_of"]

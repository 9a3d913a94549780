"""Checks shipped with bciarm that every registered component must pass.

Third-party drivers, effectors, decoders, scenes, sources and tasks run the
same checks as the built-ins (``tests/test_contracts.py`` runs them over every
registry entry).
"""

from bciarm.testing.decoder_checks import check_decoder
from bciarm.testing.driver_checks import check_driver, check_effector, run_driver_checks
from bciarm.testing.node_checks import check_node
from bciarm.testing.scene_checks import check_scene

__all__ = ["check_decoder", "check_driver", "check_effector", "check_node", "check_scene",
           "run_driver_checks"]

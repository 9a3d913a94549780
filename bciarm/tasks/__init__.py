"""Tasks (targets, trial phases, outcomes) and their performance metrics.

:class:`CenterOutTask` is registered as task ``"center_out"``;
:func:`compute_metrics` summarises its :class:`TrialRecord` list.
"""

from bciarm.tasks.metrics import TrialRecord, compute_metrics, index_of_difficulty

__all__ = ["TrialRecord", "compute_metrics", "index_of_difficulty"]

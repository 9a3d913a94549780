"""Decoders: neural features to movement intent.

:class:`KalmanDecoder` is the compiled Kalman-filter velocity decoder;
:class:`KalmanReference` a plain-NumPy textbook filter used to check it.
"""

from bciarm.decoders.kalman import KalmanDecoder
from bciarm.decoders.kalman_reference import KalmanReference

__all__ = ["KalmanDecoder", "KalmanReference"]

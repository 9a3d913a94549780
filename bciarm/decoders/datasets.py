"""Recordings for offline decoder evaluation: counts, velocities, bin width.

Three sources are read into one :class:`Recording`:

* a StevensonV2-style MATLAB file (``spikes`` (N, T), ``handVel`` (3, T),
  ``handPos`` (3, T), ``timeBase``); all-zero velocity rows are dropped;
* a bciarm session folder (its ``messages.bcilog``): neural frames paired with
  the effector's mean velocity over the same bin shifted by the calibration
  lag of the session's ``config.yaml``;
* an NWB file (needs ``pynwb``): the first ``TimeSeries`` of spike counts in
  ``processing/ecephys`` or ``acquisition`` named like ``*spike*``/``*count*``
  and a velocity ``TimeSeries`` named like ``*vel*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Recording", "RecordingError", "load_recording"]


class RecordingError(ValueError):
    """The path is not a readable recording; the message says why and what to do."""


@dataclass
class Recording:
    """Binned neural data aligned with kinematics.

    Attributes
    ----------
    counts : (T, N) ndarray
        Spike counts per bin.
    velocity : (T, k) ndarray
    dt : float
        Bin width, s.
    position : (T, k) ndarray or None
    source : str
        What was read (for reports).
    """

    counts: np.ndarray
    velocity: np.ndarray
    dt: float
    position: np.ndarray | None
    source: str


def load_recording(path: str | Path) -> Recording:
    """Read a ``.mat`` file, a bciarm session folder or an ``.nwb`` file.

    Raises
    ------
    RecordingError
        Unknown format, missing fields, or pynwb not installed for NWB.
    """
    path = Path(path)
    if path.is_dir():
        return _load_session(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".mat":
        return _load_mat(path)
    if path.suffix.lower() == ".nwb":
        return _load_nwb(path)
    raise RecordingError(f"{path}: unknown recording format; give a StevensonV2-style .mat file, "
                         f"a bciarm session folder or an .nwb file")


def _load_mat(path: Path) -> Recording:
    from scipy.io import loadmat

    mat = loadmat(path)
    missing = [k for k in ("spikes", "handVel", "timeBase") if k not in mat]
    if missing:
        raise RecordingError(f"{path}: missing variable(s) {missing}; expected a StevensonV2-style "
                             f"file with spikes (N, T), handVel (3, T) and timeBase")
    counts = np.asarray(mat["spikes"], dtype=np.float64).T
    vel = np.asarray(mat["handVel"], dtype=np.float64).T
    if vel.shape[0] != counts.shape[0]:
        raise RecordingError(f"{path}: spikes has {counts.shape[0]} bins but handVel {vel.shape[0]}")
    moving = np.any(vel != 0, axis=0)
    pos = None
    if "handPos" in mat:
        pos = np.asarray(mat["handPos"], dtype=np.float64).T[:, moving]
    return Recording(counts, vel[:, moving], float(np.squeeze(mat["timeBase"])), pos,
                     f"{path.name} (MATLAB)")


def _load_session(folder: Path) -> Recording:
    import yaml

    from bciarm.bus.messages import EffectorState, NeuralFrame
    from bciarm.record import LOG_NAME, read_messages
    from bciarm.space import axis_indices

    log_path = folder / LOG_NAME
    if not log_path.exists():
        raise RecordingError(f"{folder}: not a bciarm session folder (no {LOG_NAME})")
    lag_s, axes = 0.15, ["x", "y"]
    cfg_path = folder / "config.yaml"
    if cfg_path.exists():
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        lag_s = float(cfg.get("protocol", {}).get("calibration", {}).get("lag_s", lag_s))
        axes = cfg.get("axes", axes)
    frames: list[NeuralFrame] = []
    st: list[int] = []
    sv: list[np.ndarray] = []
    for _topic, msg in read_messages(log_path, ("neural", "state.*")):
        if isinstance(msg, NeuralFrame):
            frames.append(msg)
        elif isinstance(msg, EffectorState):
            st.append(msg.header.t_ns)
            sv.append(msg.velocity)
    if not frames or not st:
        raise RecordingError(f"{log_path}: no neural frames or effector states recorded")
    v = np.asarray(sv)[:, axis_indices(axes)]
    Z, X = pair_bins([f.header.neural_t_ns for f in frames], frames[0].bin_s,
                     np.asarray(st, dtype=np.int64), v, lag_s,
                     [f.counts for f in frames])
    return Recording(Z, X, float(frames[0].bin_s), None, f"{folder.name} (bciarm session)")


def pair_bins(bin_end_ns, bin_s: float, state_t_ns: np.ndarray, state_v: np.ndarray,
              lag_s: float, counts) -> tuple[np.ndarray, np.ndarray]:
    """Pair each neural bin with the mean velocity over the same bin shifted ``lag_s`` back.

    For a bin ending at ``t``: the mean of the velocity samples in
    ``(t - lag - bin, t - lag]``; bins with no sample there are dropped.
    Times in ns (any common clock).  Returns ``(Z (T, N), X (T, k))``.
    """
    t = np.asarray(state_t_ns, dtype=np.int64)
    v = np.asarray(state_v, dtype=np.float64)
    bin_ns = round(bin_s * 1e9)
    lag_ns = round(lag_s * 1e9)
    his = np.asarray(bin_end_ns, dtype=np.int64) - lag_ns
    lo_idx = np.searchsorted(t, his - bin_ns, side="right")
    hi_idx = np.searchsorted(t, his, side="right")
    csum = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
    ok = hi_idx > lo_idx
    n = (hi_idx - lo_idx)[ok][:, None]
    X = (csum[hi_idx[ok]] - csum[lo_idx[ok]]) / n
    Z = np.asarray([c for c, keep in zip(counts, ok) if keep], dtype=np.float64)
    return Z, X


def _load_nwb(path: Path) -> Recording:
    """An NWB file through the shared reader (:func:`bciarm.record.nwb.read_nwb`).

    Bins are paired with velocity as for a session folder: the calibration
    lag and task axes of a bciarm export's config, lag 0 and every velocity
    column for other files.
    """
    from bciarm.record.nwb import NwbError, read_nwb
    from bciarm.space import axis_indices

    try:
        data = read_nwb(path)
    except NwbError as exc:
        raise RecordingError(str(exc)) from None
    if data.velocity is None or data.velocity_t is None:
        raise RecordingError(f"{path}: need a spike-count TimeSeries (*spike*/*count*) and a "
                             f"velocity TimeSeries (*vel*); no velocity found")
    cfg = data.config
    lag_s = float(cfg.get("protocol", {}).get("calibration", {}).get("lag_s", 0.0)) if cfg else 0.0
    v = data.velocity if data.velocity.ndim == 2 else data.velocity[:, None]
    if cfg.get("axes") and v.shape[1] == 3:
        try:
            v = v[:, axis_indices(cfg["axes"])]
        except ValueError:
            pass
    Z, X = pair_bins(np.round(data.counts_t * 1e9).astype(np.int64), data.bin_s,
                     np.round(data.velocity_t * 1e9).astype(np.int64), v, lag_s, data.counts)
    if len(Z) == 0:
        raise RecordingError(f"{path}: no neural bin has velocity samples to pair with")
    return Recording(Z, X, data.bin_s, None, data.source)

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
    t = np.asarray(st, dtype=np.int64)
    v = np.asarray(sv)[:, axis_indices(axes)]
    bin_ns = round(frames[0].bin_s * 1e9)
    lag_ns = round(lag_s * 1e9)
    # For each frame, the mean velocity of states in (hi - bin, hi].
    his = np.array([f.header.neural_t_ns - lag_ns for f in frames], dtype=np.int64)
    lo_idx = np.searchsorted(t, his - bin_ns, side="right")
    hi_idx = np.searchsorted(t, his, side="right")
    csum = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
    ok = hi_idx > lo_idx
    n = (hi_idx - lo_idx)[ok][:, None]
    X = (csum[hi_idx[ok]] - csum[lo_idx[ok]]) / n
    Z = np.asarray([f.counts for f, keep in zip(frames, ok) if keep], dtype=np.float64)
    return Recording(Z, X, float(frames[0].bin_s), None, f"{folder.name} (bciarm session)")


def _load_nwb(path: Path) -> Recording:
    try:
        import pynwb
    except ModuleNotFoundError:
        raise RecordingError(f"{path}: reading NWB needs pynwb, which is not installed "
                             f"(pip install pynwb)") from None
    with pynwb.NWBHDF5IO(str(path), "r") as io:  # pragma: no cover - needs pynwb
        nwb = io.read()
        series = {}
        for container in (nwb.acquisition, *(m.data_interfaces for m in nwb.processing.values())):
            for name, obj in container.items():
                if hasattr(obj, "data"):
                    series[name.lower()] = obj
        spikes = next((s for n, s in series.items() if "spike" in n or "count" in n), None)
        vel = next((s for n, s in series.items() if "vel" in n), None)
        if spikes is None or vel is None:
            raise RecordingError(f"{path}: need a spike-count TimeSeries (*spike*/*count*) and a "
                                 f"velocity TimeSeries (*vel*); found {sorted(series)}")
        counts = np.asarray(spikes.data[:], dtype=np.float64)
        X = np.asarray(vel.data[:], dtype=np.float64)
        rate = spikes.rate or 1.0 / float(np.median(np.diff(spikes.timestamps[:])))
        n = min(len(counts), len(X))
        return Recording(counts[:n], X[:n], 1.0 / float(rate), None, f"{path.name} (NWB)")

"""bciarm decode: loaders, CV inside the training part, JSON keys, real-data acceptance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.io import savemat

from bciarm.cli import main
from bciarm.decoders.datasets import RecordingError, load_recording
from bciarm.decoders.evaluate import Candidate, evaluate
from bciarm.sources.population import CosineTunedPopulation

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "StevensonV2.mat"
KEYS = ["kalman_mean_r2", "best_mean_r2", "best_decoder", "reference_kf_mean_r2",
        "reference_wiener_mean_r2", "kalman_r2", "best_r2", "reference_kf_r2",
        "reference_wiener_r2"]


@pytest.fixture(scope="module")
def mat_file(tmp_path_factory) -> Path:
    """A small StevensonV2-style file: 24 cosine-tuned units, smooth 2-D reaching."""
    rng = np.random.default_rng(0)
    T = 2400
    V = np.zeros((T, 2))
    for t in range(1, T):
        V[t] = 0.95 * V[t - 1] + rng.normal(0, 0.01, 2)
    pop = CosineTunedPopulation(24, 2, rng=1, depth_hz=15.0)
    counts = pop.sample(V, 0.05, rng)
    counts[:, 5] = 0  # a silent unit, as in the real file
    path = tmp_path_factory.mktemp("data") / "synthetic.mat"
    vel = np.vstack([V.T, np.zeros((1, T))])
    savemat(path, {"spikes": counts.T.astype(np.uint8), "handVel": vel,
                   "handPos": np.cumsum(vel, axis=1) * 0.05, "timeBase": 0.05})
    return path


def test_mat_loader_drops_the_empty_velocity_row(mat_file):
    rec = load_recording(mat_file)
    assert rec.counts.shape == (2400, 24) and rec.velocity.shape == (2400, 2)
    assert rec.dt == pytest.approx(0.05) and rec.position.shape == (2400, 2)


def test_cli_json_keys_and_excluded_channel(mat_file):
    out = CliRunner().invoke(main, ["decode", str(mat_file), "--no-references", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert key in data, key
    assert data["reference_kf_mean_r2"] is None
    assert data["best_decoder"] in ("kalman", "wiener")
    assert data["kalman_mean_r2"] > 0.3 and len(data["kalman_r2"]) == 2
    assert data["decoders"]["kalman"]["channels"]["dead"] == [5]


def test_references_run_in_the_same_evaluation(mat_file):
    pytest.importorskip("Neural_Decoding", reason="neural-decoding (bench extra) not installed")
    res = evaluate(load_recording(mat_file), ["wiener"], references=True)
    assert res["reference_kf_mean_r2"] > 0.2 and res["reference_wiener_mean_r2"] > 0.2


def test_hyper_parameters_never_see_the_test_part(mat_file, monkeypatch):
    """Scrambling the test part changes test scores but not a single CV choice."""
    rec = load_recording(mat_file)
    grids = {"kalman": [Candidate("kalman", {"count_transform": t, "zscore": True, "lag": 0,
                                             "history": h}, {"q_ridge": 0.1})
                        for t in ("none", "sqrt") for h in (1, 3)],
             "wiener": [Candidate("wiener", {"zscore": True}, {"history": h, "alpha": a})
                        for h in (3, 6) for a in (1.0, 100.0)]}
    a = evaluate(rec, references=False, grids=grids)
    n_train = a["n_train"]
    rec.counts[n_train:] = np.random.default_rng(5).permutation(rec.counts[n_train:])
    b = evaluate(rec, references=False, grids=grids)
    for name in a["decoders"]:
        assert a["decoders"][name]["chosen"] == b["decoders"][name]["chosen"]
        assert a["decoders"][name]["cv_mean_r2"] == b["decoders"][name]["cv_mean_r2"]
        assert b["decoders"][name]["mean_r2"] < a["decoders"][name]["mean_r2"] - 0.2


def test_unreadable_inputs_give_clear_errors(tmp_path):
    (tmp_path / "x.nwb").write_bytes(b"not hdf5")
    try:
        import pynwb  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(RecordingError, match="pynwb"):
            load_recording(tmp_path / "x.nwb")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(RecordingError, match="unknown recording format"):
        load_recording(tmp_path / "x.csv")
    with pytest.raises(RecordingError, match="not a bciarm session folder"):
        load_recording(tmp_path)
    out = CliRunner().invoke(main, ["decode", str(tmp_path / "x.csv")])
    assert out.exit_code != 0 and "unknown recording format" in out.output


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason=f"Stevenson data set not found at {DATA}")
def test_stevenson_acceptance_with_a_reduced_grid():
    """Issue acceptance on the real data: Kalman >= 0.65, best >= 0.78 on the last 20 %.

    The grids are a subset of the CLI's (to keep the suite fast); choices are
    still made by CV inside the training part. ``bciarm decode`` on the full
    grid measured: kalman 0.726, best (wiener) 0.783.
    """
    kal = [Candidate("kalman", {"count_transform": "none", "zscore": True, "lag": 0, "history": 5},
                     {"include_position": True, "q_ridge": q}) for q in (0.1, 1.0)]
    wie = [Candidate("wiener", {"count_transform": "none", "zscore": True, "lag": 0, "history": 1},
                     {"history": 10, "alpha": a}) for a in (3e3, 3e4)]
    res = evaluate(load_recording(DATA), references=False, grids={"kalman": kal, "wiener": wie})
    print({k: res[k] for k in ("kalman_mean_r2", "best_mean_r2", "best_decoder")})
    assert res["kalman_mean_r2"] >= 0.65
    assert res["best_mean_r2"] >= 0.78

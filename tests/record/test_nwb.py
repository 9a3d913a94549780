"""NWB export of a real (short) session: read back with pynwb, checked by nwbinspector,
read by `bciarm decode`'s loader and by the replay source."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

pynwb = pytest.importorskip("pynwb", reason="pynwb is not installed (pip install 'bciarm[nwb]')")

from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import NeuralFrame
from bciarm.cli import main
from bciarm.config import load_config
from bciarm.decoders.datasets import load_recording
from bciarm.record import LOG_NAME, read_messages
from bciarm.record.nwb import NwbError, export_session, read_nwb
from bciarm.session import Session
from bciarm.sources.replay import ReplaySource


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    cfg, _ = load_config("arm_center_out")
    protocol = cfg.protocol.model_copy(update={
        "calibration": cfg.protocol.calibration.model_copy(update={"trials": 10}),
        "blocks": [cfg.protocol.blocks[0].model_copy(update={"trials": 4})],
    })
    cfg = cfg.model_copy(update={"protocol": protocol})
    return Session(cfg, seed=0, out_dir=tmp_path_factory.mktemp("s")).run().session_dir


@pytest.fixture(scope="module")
def nwb_path(session_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("nwb") / "session.nwb"
    summary = export_session(session_dir, out)
    assert summary["trials"] > 0 and summary["neural_frames"] > 0
    return out


def _log(session_dir):
    frames, intents = [], []
    for _t, m in read_messages(session_dir / LOG_NAME, ("neural", "intent")):
        (frames if isinstance(m, NeuralFrame) else intents).append(m)
    return frames, intents


@pytest.mark.slow
def test_export_reads_back_with_pynwb_exactly(session_dir, nwb_path):
    frames, intents = _log(session_dir)
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        nwb = io.read()
        counts = nwb.processing["ecephys"]["SpikeCounts"]
        assert np.array_equal(counts.data[:], np.vstack([f.counts for f in frames]))
        t = counts.starting_time + np.arange(len(frames)) / counts.rate
        assert np.allclose(t, [f.header.neural_t_ns / 1e9 for f in frames], atol=1e-9)
        dec = nwb.processing["behavior"]["DecodedIntent"]
        mine = [i for i in intents if i.header.src == "decoder"]
        assert np.array_equal(dec.data[:], np.vstack([i.velocity for i in mine]))
        arm_pos = nwb.processing["behavior"]["Position"]["arm_position"]
        assert arm_pos.data.shape[1] == 3 and arm_pos.unit == "meters"
        assert nwb.processing["behavior"]["arm_joint_position"].data.shape[1] == 7
        rows = list(csv.DictReader((session_dir / "trials.csv").open()))
        trials = nwb.trials.to_dataframe()
        assert len(trials) == len(rows)
        assert np.allclose(trials["start_time"], [float(r["start_t_s"]) for r in rows])
        assert np.allclose(trials["stop_time"], [float(r["end_t_s"]) for r in rows])
        assert list(trials["outcome"]) == [r["outcome"] for r in rows]
        assert list(trials["block"]) == [r["block"] for r in rows]
        assert {"target_x", "target_y", "target_z"} <= set(trials.columns)
        epochs = nwb.epochs.to_dataframe()
        assert [tags[0] for tags in epochs["tags"]] == ["calibration", "closed_loop_1"]
        # The session's pseudonym (config `privacy.subject_id`, recorded in session.json).
        meta = json.loads((session_dir / "session.json").read_text())
        assert nwb.subject.subject_id == meta["subject_id"] == "sim-0001"
        assert "bciarm" in nwb.source_script
        assert nwb.data_collection == (session_dir / "config.yaml").read_text()
        assert nwb.session_id == session_dir.name


@pytest.mark.slow
def test_nwbinspector_finds_no_critical_issue(nwb_path, tmp_path, session_dir):
    nwbinspector = pytest.importorskip("nwbinspector")
    found = [m for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(nwb_path)) if m]
    print("\nnwbinspector:", [(m.importance.name, m.check_function_name) for m in found])
    assert not [m for m in found if m.importance.name in ("CRITICAL", "ERROR")]
    # With the metadata a session folder cannot know, nothing is left to say.
    full = tmp_path / "full.nwb"
    export_session(session_dir, full, species="Homo sapiens", experimenter=["Doe, Jane"],
                   institution="Example Rehab Lab")
    assert [m for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(full)) if m] == []


@pytest.mark.slow
def test_decode_loader_reads_nwb_as_it_reads_the_session(session_dir, nwb_path):
    a = load_recording(session_dir)
    b = load_recording(nwb_path)
    assert a.dt == b.dt == 0.05
    assert np.array_equal(a.counts, b.counts)
    assert np.allclose(a.velocity, b.velocity, atol=1e-12)


@pytest.mark.slow
def test_replay_source_replays_the_nwb_counts_in_order(session_dir, nwb_path):
    frames, _ = _log(session_dir)
    node = ReplaySource("replay", path=str(nwb_path), bin_s=0.05)
    h = NodeHarness(node, tick_s=0.05)
    h.advance(0.05 * (len(frames) + 3))
    out = h.sent("neural")
    assert len(out) == len(frames)
    assert np.array_equal(np.vstack([f.counts for f in out]), np.vstack([f.counts for f in frames]))
    (ended,) = h.sent("event")
    assert ended.data["state"] == "ended"
    # The session folder replays the same.
    assert np.array_equal(ReplaySource("r2", path=str(session_dir)).counts, node.counts)


def test_replay_params_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        ReplaySource.Params(path=str(tmp_path / "nope.nwb"))


@pytest.mark.slow
def test_cli_export(session_dir, nwb_path, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.nwb"
    r = runner.invoke(main, ["export", str(session_dir), "--nwb", str(out), "--json", "--inspect"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and "no CRITICAL issue" in r.output
    r = runner.invoke(main, ["export", str(session_dir), "--nwb", str(out)])
    assert r.exit_code != 0 and "--overwrite" in r.output
    r = runner.invoke(main, ["export", str(tmp_path), "--nwb", str(tmp_path / "x.nwb")])
    assert r.exit_code != 0 and "not a bciarm session folder" in r.output


def test_export_errors_are_clear(tmp_path):
    with pytest.raises(NwbError, match="not a bciarm session folder"):
        export_session(tmp_path, tmp_path / "x.nwb")
    with pytest.raises(NwbError, match="no such file"):
        read_nwb(tmp_path / "missing.nwb")

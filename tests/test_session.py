"""End to end: a whole simulated closed-loop arm session."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bciarm.bus.messages import NeuralFrame
from bciarm.config import load_config
from bciarm.decoders import KalmanDecoder
from bciarm.record import LOG_NAME, LogReader, read_messages
from bciarm.session import Session

JSON_KEYS = {"trials", "success_rate", "mean_time_to_target_s", "path_efficiency",
             "bitrate_bps", "realtime_factor", "session_dir"}


def _short_config(trials_per_block=6):
    cfg, _ = load_config("arm_center_out")
    protocol = cfg.protocol.model_copy(update={
        "calibration": cfg.protocol.calibration.model_copy(update={"trials": 16}),
        "blocks": [cfg.protocol.blocks[0].model_copy(update={"trials": trials_per_block})],
    })
    return cfg.model_copy(update={"protocol": protocol})


def _run(tmp_path, seed):
    return Session(_short_config(), seed=seed, out_dir=tmp_path).run()


@pytest.mark.slow
def test_same_seed_gives_the_same_session(tmp_path):
    a = _run(tmp_path / "a", 3)
    b = _run(tmp_path / "b", 3)
    for key in ("trials", "success_rate", "mean_time_to_target_s", "path_efficiency",
                "bitrate_bps"):
        assert a.metrics[key] == b.metrics[key], key
    ta = (a.session_dir / "trials.csv").read_text()
    tb = (b.session_dir / "trials.csv").read_text()
    assert ta == tb
    c = _run(tmp_path / "c", 4)
    assert (c.session_dir / "trials.csv").read_text() != ta


@pytest.mark.slow
def test_session_folder_holds_everything(tmp_path):
    result = _run(tmp_path, 0)
    d = result.session_dir
    for name in ("config.yaml", "session.json", "decoder.npz", LOG_NAME, "metrics.json",
                 "trials.csv", "trajectories.png"):
        assert (d / name).is_file(), name
    assert (d / "trajectories.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((d / "metrics.json").read_text())
    assert JSON_KEYS <= set(metrics)
    # the log is complete: every neural frame the source produced is in it, in order
    reader = LogReader(d / LOG_NAME)
    records = list(reader)
    assert not reader.truncated
    frames = [m for _, m in read_messages(d / LOG_NAME, ["neural"])]
    assert all(isinstance(f, NeuralFrame) for f in frames)
    assert [f.header.seq for f in frames] == list(range(len(frames)))
    # the first bin closes at t = bin_s, so a run of T seconds holds floor(T / bin_s) frames
    assert len(frames) == math.floor(metrics["simulated_s"] / 0.05 + 1e-9)
    topics = {r.topic for r in records}
    assert {"neural", "intent", "state.arm", "task", "event"} <= topics
    # the saved decoder is the one that ran, and loads back
    dec = KalmanDecoder.load(d / "decoder.npz")
    assert dec.n_channels_ == 192
    # closed-loop intents come from the decoder and point back at their neural frame
    intents = [m for _, m in read_messages(d / LOG_NAME, ["intent"]) if m.header.src == "decoder"]
    assert intents and all(m.header.neural_seq >= 0 for m in intents)


@pytest.mark.slow
def test_cli_default_session_meets_the_bar(tmp_path):
    """`bciarm run arm_center_out --seed 0 --json`: the issue's acceptance figures."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "bciarm.cli", "run", "arm_center_out", "--seed", "0", "--json",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(metrics) == JSON_KEYS
    assert metrics["trials"] >= 40
    assert metrics["success_rate"] >= 0.90, metrics
    assert metrics["mean_time_to_target_s"] <= 3.0, metrics
    assert 0 < metrics["path_efficiency"] <= 1
    assert metrics["bitrate_bps"] > 0
    assert Path(metrics["session_dir"]).is_dir()
    assert "Session performance" in proc.stderr  # the table a person reads


def test_cli_reports_a_bad_config_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes: {}\n")
    proc = subprocess.run([sys.executable, "-m", "bciarm.cli", "run", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "bad.yaml" in proc.stderr and "needs a node of kind" in proc.stderr
    assert "Traceback" not in proc.stderr

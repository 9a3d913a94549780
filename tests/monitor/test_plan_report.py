"""`bciarm session PLAN --yes` (calibration + 2 closed-loop blocks + ReFIT + assessment), then
`bciarm report`; plan validation; privacy of what the session folder and report hold."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bciarm.config import ConfigError
from bciarm.plans import load_plan
from bciarm.privacy import command_line
from tests.realtime.conftest import graph

CLI = [sys.executable, "-m", "bciarm.cli"]


def _plan(tmp_path: Path, blocks: list[dict], **extra) -> Path:
    graph(tmp_path)  # tmp_path/graph.yaml: 48 channels, the fast-stopping test arm
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"name": "test_plan", "config": "graph.yaml",
                                    "subject_id": "P-042", "blocks": blocks, **extra}))
    return path


PLAN_BLOCKS = [{"name": "calibration", "kind": "calibration", "trials": 6},
               {"name": "closed_loop_1", "kind": "closed_loop", "trials": 4},
               {"name": "closed_loop_2", "kind": "refit", "trials": 4},
               {"name": "assessment", "kind": "assessment", "trials": 4}]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_plan_unattended_then_report(tmp_path):
    plan = _plan(tmp_path, PLAN_BLOCKS)
    out = subprocess.run([*CLI, "session", str(plan), "--yes", "--out", str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    session_dir = Path(out.stdout.strip().splitlines()[-1])
    record = json.loads((session_dir / "plan.json").read_text())
    assert (session_dir / "plan.yaml").read_text() == plan.read_text()
    rows = {b["name"]: b for b in record["blocks"]}
    assert [b["kind"] for b in record["blocks"]] == ["calibration", "closed_loop", "refit",
                                                     "assessment"]
    assert all(b["ran"] and b["trials"] == t["trials"] and b["confirmed_by"] == "--yes"
               for b, t in zip(record["blocks"], PLAN_BLOCKS, strict=True))
    # every block's decoder: fit after calibration, ReFIT after closed_loop_2, used by assessment
    assert rows["calibration"]["decoder_after"] == "decoder.npz"
    assert rows["closed_loop_1"]["decoder_at_start"] == "decoder.npz"
    refit = rows["closed_loop_2"]["decoder_after"]
    assert refit != "decoder.npz" and (session_dir / refit).is_file()
    assert rows["assessment"]["decoder_at_start"] == refit
    assert [a["by"] for a in record["operator_actions"]] == ["--yes"] * 4
    meta = json.loads((session_dir / "session.json").read_text())
    assert meta["subject_id"] == "P-042" and "host" not in meta and "user" not in meta

    rep = subprocess.run([*CLI, "report", str(session_dir)], capture_output=True, text=True,
                         timeout=120)
    assert rep.returncode == 0, rep.stderr[-3000:]
    html_path = Path(rep.stdout.strip())
    assert html_path == session_dir / "report.html"
    html = html_path.read_text()
    for section in ("metrics", "plan", "trajectories", "success", "ttt", "tuning", "latency",
                    "safety"):
        assert f'id="{section}"' in html, section
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) == 6  # trajectories, success, time to target, tuning, latency, safety
    assert "http://" not in html and "https://" not in html  # self-contained
    for block in ("closed_loop_1", "closed_loop_2", "assessment", refit):
        assert block in html
    assert "P-042" in html and "<dt>host</dt>" not in html and "<dt>user</dt>" not in html
    if len(platform.node()) >= 6:  # (a short host name such as "vm" matches anywhere)
        assert platform.node() not in html


def test_plan_errors_name_file_key_and_fix(tmp_path):
    bad = _plan(tmp_path, PLAN_BLOCKS[1:])
    with pytest.raises(ConfigError, match=r"plan.yaml.*blocks.*calibration"):
        load_plan(bad)
    typo = _plan(tmp_path, [PLAN_BLOCKS[0], {**PLAN_BLOCKS[1], "trails": 3}])
    with pytest.raises(ConfigError, match=r"plan.yaml: blocks.1.trails.*did you mean 'trials'"):
        load_plan(typo)
    named = _plan(tmp_path, PLAN_BLOCKS, subject_id="Jane Doe")
    with pytest.raises(ConfigError, match="subject_id"):
        load_plan(named)
    plan, cfg = load_plan(_plan(tmp_path, PLAN_BLOCKS))
    assert [b.kind for b in cfg.protocol.blocks] == ["closed_loop", "refit", "closed_loop"]
    assert cfg.protocol.calibration.trials == 6 and cfg.privacy.subject_id == "P-042"


def test_privacy_defaults_and_opt_in(tmp_path):
    from bciarm.config import PrivacySpec

    p = PrivacySpec()
    argv = ["/home/alice/venv/bin/bciarm", "run", "/home/alice/x.yaml", "--out", "/data/s"]
    assert command_line(argv, p) == ["~/venv/bin/bciarm", "run", "~/x.yaml", "--out", "/data/s"]
    assert command_line(argv, PrivacySpec(record_user=True)) == argv
    from bciarm.privacy import identity

    assert identity(p) == {"subject_id": "sim-0001"}
    assert identity(PrivacySpec(record_host=True))["host"] == platform.node()
    with pytest.raises(ValueError):
        PrivacySpec(subject_id="Jane Doe")

"""`bciarm bench bus --json` runs all variants and prints exactly the issue's keys."""

import json
import subprocess
import sys

import pytest

KEYS = {"p50_us", "p99_us", "max_us", "drops", "floor_p50_us", "ezmsg_p50_us", "ezmsg_p99_us"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_bus_json_keys():
    try:
        import ezmsg.core  # noqa: F401
        extra = []
    except ImportError:
        extra = ["--no-ezmsg"]
    r = subprocess.run([sys.executable, "-m", "bciarm.cli", "bench", "bus", "--seconds", "2",
                        "--rate", "500", "--channels", "256", "--json", *extra],
                       capture_output=True, text=True, timeout=200, start_new_session=True)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(figures) == KEYS
    assert figures["drops"] == 0
    assert 0 < figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
    assert figures["floor_p50_us"] > 0
    if not extra:
        assert figures["ezmsg_p50_us"] > 0

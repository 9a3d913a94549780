"""bciarm bench decoder: shape of the results, ratios, clear errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bciarm.cli import main
from bciarm.decoders.bench import ratios, run_bench

KEYS = {"impl", "n_channels", "state_dim", "median_us", "p99_us"}


def test_run_bench_small():
    res = run_bench([96, 192], [3, 7], ["bciarm-steady", "bciarm-full", "numpy-steady"],
                    budget_s=0.01)
    assert len(res) == 2 * 2 * 3
    for r in res:
        assert set(r) == KEYS
        assert 0 < r["median_us"] <= r["p99_us"]
    rat = ratios(res)
    assert rat["steady_vs_numpy_192"] is not None and rat["full_4096_vs_192"] is None


def test_unknown_impl_is_rejected():
    with pytest.raises(ValueError, match="unknown impl"):
        run_bench([96], [3], ["nope"])


def test_cli_json_has_exactly_the_issue_keys():
    out = CliRunner().invoke(main, ["bench", "decoder", "--channels", "96", "--state-dims", "3",
                                    "--impl", "bciarm-steady", "--impl", "numpy-steady",
                                    "--budget", "0.01", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(data) == ["results"]
    assert {r["impl"] for r in data["results"]} == {"bciarm-steady", "numpy-steady"}
    assert all(set(r) == KEYS for r in data["results"])


def test_every_impl_runs_with_the_same_reported_blas_threads():
    lines: list[str] = []
    res = run_bench([96], [3], ["bciarm-full", "numpy-steady"], budget_s=0.01,
                    progress=lines.append, blas_threads=1)
    assert len(res) == 2
    report = lines[0]
    assert report.startswith("BLAS/OpenMP threads for every implementation:")
    pools = report.split(":", 1)[1].split(";")
    assert pools and all(p.strip().endswith(": 1 thread(s)") for p in pools), report
    with pytest.raises(ValueError, match="blas_threads"):
        run_bench([96], [3], ["bciarm-full"], budget_s=0.01, blas_threads=0)


def test_uncached_full_update_is_a_row_of_its_own():
    res = run_bench([96], [3], ["bciarm-full", "bciarm-full-nocache"], budget_s=0.01,
                    blas_threads=1)
    assert [r["impl"] for r in res] == ["bciarm-full", "bciarm-full-nocache"]
    assert all(r["median_us"] > 0 for r in res)

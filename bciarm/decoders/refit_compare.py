"""ReFIT against the calibration decoder: time-to-target reduction per seed.

The acceptance measure of ReFIT-KF (issue 4): in closed loop in simulation
(192 channels with drift), ReFIT retraining cuts the mean time-to-target by
>= 30 % against the decoder fit from open-loop calibration. Two configs share
their graph, seed, targets and drift; they differ only in what happens to the
decoder after the first closed-loop block:

* ``arm_refit``: the block is a ``refit`` block, the evaluation block runs the
  ReFIT-KF decoder;
* ``arm_refit_fixed``: the evaluation block runs the calibration decoder.

Run::

    python -m bciarm.decoders.refit_compare --seeds 0 1 2 3 4 [--jobs 2] [--oracle] [--json]

Each seed's reduction is ``1 - ttt(refit) / ttt(fixed)`` of the evaluation
block (named ``refit`` in both configs). ``--oracle`` adds a third session per
seed: ``arm_refit_fixed`` run by :class:`~bciarm.decoders.oracle.OracleDecoderNode`
(the user's own intention as the decoded velocity), the fastest time to
target the simulated user, arm and task allow.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["block_metrics", "compare", "main"]

#: Name of the evaluation block in both configs.
EVAL_BLOCK = "refit"


def block_metrics(config: str, seed: int, out_dir: str | Path,
                  overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one session; per-block metrics (``{block: {trials, success_rate, ...}}``)."""
    from bciarm.config import load_config
    from bciarm.session import Session

    cfg, _ = load_config(config, overrides)
    result = Session(cfg, seed=seed, out_dir=out_dir, argv=["refit_compare"]).run()
    return {name: dict(m) for name, m in result.metrics["blocks"].items()}


#: Job key of the oracle run (the fixed config with the oracle decoder).
ORACLE = "oracle"


def _job(args: tuple[str, int, str, tuple[str, ...]]) -> tuple[str, int, dict[str, Any]]:
    config, seed, out_dir, overrides = args
    if config.startswith(ORACLE + ":"):
        from bciarm.decoders.oracle import oracle_block_metrics

        return ORACLE, seed, oracle_block_metrics(config[len(ORACLE) + 1:], seed, out_dir,
                                                  overrides)
    return config, seed, block_metrics(config, seed, out_dir, overrides)


def compare(seeds: list[int], refit: str = "arm_refit", fixed: str = "arm_refit_fixed",
            jobs: int = 1, out_dir: str | Path | None = None,
            overrides: tuple[str, ...] = (), oracle: bool = False) -> dict[str, Any]:
    """Run both configs on every seed and compare their evaluation blocks.

    Returns
    -------
    dict
        ``per_seed``: list of ``{seed, fixed_ttt_s, refit_ttt_s, reduction,
        fixed_success, refit_success, initial_ttt_s}`` (and ``oracle_ttt_s``
        with ``oracle``: the fixed config run by
        :class:`~bciarm.decoders.oracle.OracleDecoderNode`, the fastest the
        simulated user and arm allow); ``min_reduction``, ``mean_reduction``.
    """
    with tempfile.TemporaryDirectory(prefix="refit_compare_") as tmp:
        root = str(out_dir or tmp)
        configs = (refit, fixed, f"{ORACLE}:{fixed}") if oracle else (refit, fixed)
        work = [(c, s, root, tuple(overrides)) for s in seeds for c in configs]
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                done = list(pool.map(_job, work))
        else:
            done = [_job(w) for w in work]
    got = {(c, s): m for c, s, m in done}
    rows = []
    for s in seeds:
        r, f = got[(refit, s)][EVAL_BLOCK], got[(fixed, s)][EVAL_BLOCK]
        rt, ft = float(r["mean_time_to_target_s"]), float(f["mean_time_to_target_s"])
        rows.append({
            "seed": s, "fixed_ttt_s": ft, "refit_ttt_s": rt,
            "reduction": 1.0 - rt / ft if ft > 0 else math.nan,
            "fixed_success": float(f["success_rate"]), "refit_success": float(r["success_rate"]),
            "trials": int(r["trials"]),
            "initial_ttt_s": float(got[(refit, s)]["initial"]["mean_time_to_target_s"]),
        })
        if oracle:
            o = got[(ORACLE, s)][EVAL_BLOCK]
            rows[-1]["oracle_ttt_s"] = float(o["mean_time_to_target_s"])
            rows[-1]["oracle_success"] = float(o["success_rate"])
    red = [row["reduction"] for row in rows]
    return {"per_seed": rows, "min_reduction": min(red), "mean_reduction": sum(red) / len(red)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--refit", default="arm_refit")
    ap.add_argument("--fixed", default="arm_refit_fixed")
    ap.add_argument("--jobs", type=int, default=1, help="sessions run in parallel")
    ap.add_argument("--out", default=None, help="keep the session folders here (default: a "
                                                "temporary folder, removed)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="config override applied to both configs")
    ap.add_argument("--oracle", action="store_true",
                    help="also run the fixed config with a decoder that outputs the simulated "
                         "user's intention (the fastest time to target the user and arm allow)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = compare(args.seeds, args.refit, args.fixed, args.jobs, out_dir=args.out,
                  overrides=tuple(args.overrides), oracle=args.oracle)
    if args.json:
        print(json.dumps(res))
    else:
        for row in res["per_seed"]:
            print(f"seed {row['seed']}: fixed {row['fixed_ttt_s']:.3f} s "
                  f"({row['fixed_success']:.0%}), refit {row['refit_ttt_s']:.3f} s "
                  f"({row['refit_success']:.0%}), reduction {row['reduction']:+.1%} "
                  f"[initial block {row['initial_ttt_s']:.3f} s]"
                  + (f" oracle {row['oracle_ttt_s']:.3f} s" if "oracle_ttt_s" in row else ""))
        print(f"min reduction {res['min_reduction']:.1%}, mean {res['mean_reduction']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

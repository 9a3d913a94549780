"""The session protocol on the real-time runtime (``bciarm run CONFIG --mode realtime``).

Same protocol and the same session folder as :class:`bciarm.session.Session`
(calibration → fit from the recording → closed-loop blocks → metrics), but the
nodes run as separate processes under a :class:`~bciarm.bus.supervisor.Supervisor`
on the wall clock.  The supervisor process speaks for the protocol on the bus
(``block_start``, ``block_end``, ``decoder_update``, ``session_end``), counts
finished trials from the task's ``task`` messages, asks the recorder to flush
before the fit, and at the end asks the task process for its trial records.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from typing import Any

import numpy as np

from bciarm.bus.supervisor import SessionStopped, Supervisor
from bciarm.session import BlockResult, Session, SessionResult, make_session_dir

log = logging.getLogger("bciarm.realtime_session")


class RealtimeSession(Session):
    """Run a graph's protocol with every node in its own process.

    Extra parameters: ``log_level`` for the node processes, ``on_started``
    (called with the supervisor once every node runs; tests use it).
    """

    def __init__(self, config: Any, *, log_level: int = logging.WARNING,
                 on_started: Any = None, **kwargs: Any) -> None:
        kwargs.pop("gui", None)
        super().__init__(config, **kwargs)
        self.log_level = log_level
        self.on_started = on_started
        self.sup: Supervisor | None = None
        self._local: dict[str, Any] = {}

    def _one(self, kind: str) -> Any:
        names = self.config.nodes_of(kind)
        if len(names) != 1:
            raise ValueError(f"this protocol needs exactly one {kind} node, found {names}")
        name = names[0]
        if name not in self._local:
            from bciarm.bus.realtime import build_node

            self._local[name] = build_node(self.config, name)  # never started: params only
        return self._local[name]

    def _done_trials(self, block: str) -> int:
        assert self.sup is not None
        done = {(m.block, m.trial) for m in self.sup.task_msgs if m.outcome and m.block == block}
        return len(done)

    def _run_block(self, name: str, mode: str, trials: int | None, max_s: float,
                   done_before: int, total: int | None) -> BlockResult:
        sup = self.sup
        assert sup is not None
        if sup.paused:  # the operator paused: wait for `start` (or a stop) before the block
            sup.service_until(lambda: not sup.paused, 24 * 3600.0)
        start_s = time.monotonic_ns() / 1e9
        sup.announce("block_start", block=name, mode=mode)

        def finished() -> bool:
            n = self._done_trials(name)
            if self.progress is not None:
                self.progress(name, done_before + n, total, time.monotonic() - self._t0)
            return trials is not None and n >= trials

        stopped = False
        try:
            sup.service_until(finished, max_s)
        except SessionStopped:
            stopped = True
        sup.announce("block_end", block=name, mode=mode)
        end_s = time.monotonic_ns() / 1e9
        rec = sup.procs.get("recorder")
        if rec is not None:
            sup.request(rec, t="sync", timeout_s=5.0)
        n = self._done_trials(name)
        if stopped:
            self._partial = BlockResult(name, mode, start_s, end_s, n)
            raise SessionStopped()
        if trials is not None and n < trials:
            log.warning("block %s ended on its time cap after %d of %d trials", name, n, trials)
        return BlockResult(name, mode, start_s, end_s, n)

    def fit_decoder(self, block: BlockResult) -> Any:
        assert self.session_dir is not None and self.sup is not None
        from concurrent.futures import ThreadPoolExecutor

        decoder_node = self._one("decoder")

        def fit() -> tuple[Any, Any, Any, dict[str, Any]]:
            Z, X, bin_s = self.calibration_data(block, self.config.protocol.calibration.lag_s)
            decoder = decoder_node.make_estimator().fit(Z, X, bin_s)
            decoder.save(self.session_dir / "decoder.npz")
            # The grasp/release (click) decoder, as inline (arm_grasp, arm_drink).
            click = (self._fit_click(decoder_node, block)
                     if getattr(decoder_node.params, "click", None) is not None else {})
            return decoder, Z, X, click

        # Fit in a worker thread: the supervisor keeps watching the nodes meanwhile.
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(fit)
            self.sup.service_until(fut.done, 600, allow_stop=True)
            decoder, Z, X, click = fut.result()
        self.sup.announce("decoder_update", node=decoder_node.name, path="decoder.npz",
                          n_channels=int(Z.shape[1]), bins=int(Z.shape[0]),
                          fit_r2=float(decoder.score(Z, X)), **click)
        return decoder

    def _trials(self) -> list[Any]:
        from bciarm.tasks.metrics import TrialRecord

        sup = self.sup
        assert sup is not None
        task_name = self.config.nodes_of("task")[0]
        record = getattr(type(self._one("task")), "record_class", TrialRecord)
        proc = next(p for p in sup.procs.values() if task_name in p.nodes)
        reply = sup.request(proc, t="query", attr="trials", timeout_s=5.0)
        rows = (reply or {}).get("data", {}).get(task_name, [])
        out = []
        for r in rows:
            r = {k: (np.asarray(v, float) if isinstance(v, list) else v) for k, v in r.items()}
            out.append(record(**r))
        return out

    def run(self) -> SessionResult:
        cfg = self.config
        self.session_dir = make_session_dir(self.out_dir, cfg.name, cfg.seed).resolve()
        self._write_metadata(self.session_dir)
        self.sup = sup = Supervisor(cfg, self.session_dir, log_level=self.log_level)
        closed = list(cfg.protocol.blocks)
        per_block_s = self.duration_s / len(closed) if self.duration_s else None
        cal = cfg.protocol.calibration
        total = None if per_block_s else cal.trials + sum(b.trials for b in closed)
        blocks: list[BlockResult] = []
        trials: list[Any] = []
        interrupted = False
        old_int = signal.getsignal(signal.SIGINT)
        old_term = signal.getsignal(signal.SIGTERM)

        def on_signal(*_: Any) -> None:
            sup.stop_requested = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        self._t0 = time.monotonic()
        wall0 = time.perf_counter()
        try:
            sup.start()
            if self.on_started is not None:
                self.on_started(sup)
            blocks.append(self._run_block("calibration", "open_loop", cal.trials,
                                          cal.max_duration_s, 0, total or cal.trials))
            if cfg.nodes_of("decoder"):
                self.fit_decoder(blocks[0])
            for spec in closed:
                done = sum(b.trials for b in blocks)
                blocks.append(self._run_block(
                    spec.name, spec.mode, None if per_block_s else spec.trials,
                    per_block_s or spec.max_duration_s, done, total))
            sup.announce("session_end")
            trials = self._trials()
        except SessionStopped:
            interrupted = True
            if getattr(self, "_partial", None) is not None:
                blocks.append(self._partial)
            log.warning("session stopped by the operator")
            try:
                trials = self._trials()
            except Exception:  # best effort: the metrics of a stopped session
                trials = []
        except BaseException:
            sup.kill_all()
            raise
        finally:
            try:
                sup.stop()
            finally:
                sup.kill_all()
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
        wall_s = time.perf_counter() - wall0
        rejected: dict[str, int] = {}
        for p in sup.procs.values():
            for k, v in p.rejected.items():
                rejected[k] = rejected.get(k, 0) + v
        # Wall clock: simulated time is real time here.
        result = self.summarise(trials, blocks, sim_s=wall_s, wall_s=wall_s, extra={
            "realtime_factor": 1.0, "mode": "realtime", "interrupted": interrupted,
            "rejected_frames": rejected, "faults": sup.events,
            "restarts": {p.group: p.restarts for p in [sup.broker, *sup.procs.values()]},
        })
        metrics = result.metrics
        if blocks:
            self._write_results(metrics, trials, blocks)
        else:  # stopped before the first block: no trials to plot
            (self.session_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (self.session_dir / "faults.json").write_text(json.dumps(sup.events, indent=2))
        return result

"""A whole session: calibration, decoder fit, closed-loop blocks, metrics, files.

The protocol is the clinical one:

1. **Calibration** (open loop): the task drives the effector to targets by
   itself while the (simulated) user watches and intends.
2. **Fit**: the decoder is fit from the *recording* of that block (neural
   frames paired with the effector's velocity ``lag_s`` earlier, because the
   user's intention trails what they see by about the feedback delay), saved
   into the session folder and announced with a ``decoder_update`` event.
3. **Closed-loop blocks**: the decoder drives; each block ends after its
   number of trials (or its time cap).

Everything is written to a session folder: the resolved config, session
metadata, the decoder, the full message log, ``metrics.json``,
``trials.csv`` and ``trajectories.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import bciarm
from bciarm.bus.inline import NS_PER_S, InlineRuntime
from bciarm.bus.messages import EffectorState, Event, NeuralFrame
from bciarm.bus.node import Node, NodeParams
from bciarm.config import GraphConfig, dump_config, node_class, node_params
from bciarm.decoders.adapt import moving_speed
from bciarm.decoders.node import DecoderNode
from bciarm.record import LOG_NAME, Recorder, read_messages
from bciarm.space import axis_indices

log = logging.getLogger("bciarm.session")


class ProtocolNode(Node):
    """The session's voice on the bus: block and decoder events."""

    Params = NodeParams
    outputs = ("event",)

    def announce(self, kind: str, **data: Any) -> None:
        self.emit("event", Event, kind=kind, data=data)


@dataclass
class BlockResult:
    name: str
    mode: str
    start_s: float
    end_s: float
    trials: int


@dataclass
class SessionResult:
    """What :meth:`Session.run` returns; ``metrics`` is what ``--json`` prints."""

    metrics: dict[str, Any]
    session_dir: Path
    blocks: list[BlockResult] = field(default_factory=list)
    #: The keys ``--json`` prints (the task's ``json_keys`` + ``session_dir``).
    json_keys: tuple[str, ...] = ()
    #: Metrics table columns (the task's ``table_columns``).
    table_columns: tuple[tuple[str, str, str], ...] = ()


#: progress(block, trials done, planned trials or None, simulated seconds)
ProgressFn = Callable[[str, int, "int | None", float], None]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(bciarm.__file__).parent, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def make_session_dir(root: Path, name: str, seed: int) -> Path:
    """A new, unique folder under ``root`` named after time, config and seed."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{stamp}_{name}_seed{seed}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    path.mkdir(parents=True)
    return path


class Session:
    """Build a graph from a config and run its protocol on the inline runtime.

    Parameters
    ----------
    config : GraphConfig
    seed : int, optional
        Overrides ``config.seed``.
    out_dir : Path
        Parent of the session folder.
    duration_s : float, optional
        Simulated length of the closed-loop part, split evenly over the
        closed-loop blocks; blocks then end on time rather than trial count.
    gui : bool
        Show the pybullet GUI and pace the run at real time.
    progress : callable, optional
        ``progress(block, done, total, sim_s)`` after every tick.
    """

    def __init__(self, config: GraphConfig, *, seed: int | None = None,
                 out_dir: str | Path = "sessions", duration_s: float | None = None,
                 gui: bool = False, progress: ProgressFn | None = None,
                 argv: list[str] | None = None) -> None:
        self.config = config.model_copy(update={"seed": config.seed if seed is None else seed})
        self.out_dir = Path(out_dir)
        self.duration_s = duration_s
        self.gui = gui
        self.progress = progress
        self.argv = argv if argv is not None else sys.argv
        self.session_dir: Path | None = None
        self.runtime: InlineRuntime | None = None
        self.feature_stage: Any = None  # fitted at calibration when the decoder node has one

    # ------------------------------------------------------------------ graph

    def build_nodes(self) -> list[Node]:
        nodes: list[Node] = [ProtocolNode("protocol")]
        for name, spec in self.config.nodes.items():
            params = node_params(self.config, name)
            if self.gui and spec.kind == "effector":
                params.setdefault("driver_params", {})["gui"] = True
            nodes.append(node_class(spec)(name, **params))
        if any(b.kind != "closed_loop" for b in self.config.protocol.blocks):
            nodes.append(self._adaptation_node())
        if self.config.record.enabled:
            # First in graph order so it is stopped last: the recording is
            # flushed after every effector has come to rest.
            nodes.insert(0, Recorder("recorder", flush_every=self.config.record.flush_every))
        return nodes

    def _adaptation_node(self) -> Node:
        """ReFIT / SmoothBatch for the (single) decoder node; after it in graph order."""
        from bciarm.decoders.adapt import AdaptationNode

        names = self.config.nodes_of("decoder")
        if len(names) != 1:
            raise ValueError(f"refit/clda blocks need exactly one decoder node, found {names}")
        params = node_params(self.config, names[0])
        return AdaptationNode("adapt", decoder_node=names[0], decoder=params["decoder"],
                              transform=params.get("transform", "none"),
                              axes=list(self.config.axes))

    def _one(self, kind: str) -> Node:
        names = self.config.nodes_of(kind)
        if len(names) != 1:
            raise ValueError(f"this protocol needs exactly one {kind} node, found {names}")
        assert self.runtime is not None
        return self.runtime.node(names[0])

    # ------------------------------------------------------------------ files

    def _write_metadata(self, session_dir: Path) -> None:
        (session_dir / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
        import pybullet  # noqa: F401  (version recorded below)
        versions = {"bciarm": bciarm.__version__, "python": platform.python_version(),
                    "numpy": np.__version__}
        for mod in ("scipy", "pybullet", "zmq", "msgpack"):
            try:
                versions[mod] = getattr(__import__(mod), "__version__", "unknown")
            except ImportError:
                pass
        from bciarm.privacy import command_line, identity

        # No host or user name unless the config's `privacy` asks (bciarm.privacy).
        meta = {
            "config": self.config.name,
            "seed": self.config.seed,
            "command": command_line(self.argv, self.config.privacy),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_commit": _git_commit(),
            "versions": versions,
            **identity(self.config.privacy),
        }
        (session_dir / "session.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    # ------------------------------------------------------------------ protocol

    def _run_block(self, name: str, mode: str, trials: int | None, max_s: float,
                   done_before: int, total: int | None,
                   adapt: dict[str, Any] | None = None) -> BlockResult:
        rt = self.runtime
        assert rt is not None
        task = self._one("task")
        protocol = rt.node("protocol")
        assert isinstance(protocol, ProtocolNode)
        start_s = rt.now_ns / NS_PER_S
        protocol.announce("block_start", block=name, mode=mode, **(adapt or {}))
        rt.deliver()

        def finished() -> bool:
            return trials is not None and task.completed_trials(name) >= trials

        def on_step(_dt: float) -> None:
            if self.progress is not None:
                self.progress(name, done_before + task.completed_trials(name), total,
                              rt.now_ns / NS_PER_S)

        rt.run_for(max_s, until=finished, on_step=on_step, pace=self._pace())
        protocol.announce("block_end", block=name, mode=mode)
        rt.deliver()
        recorder = self._recorder()
        if recorder is not None:
            recorder.sync()
        n = task.completed_trials(name)
        if trials is not None and n < trials:
            log.warning("block %s ended on its time cap after %d of %d trials", name, n, trials)
        return BlockResult(name, mode, start_s, rt.now_ns / NS_PER_S, n)

    def _pace(self) -> float | None:
        """Real-time pacing for the inline runtime, or None (as fast as it goes).

        Simulated devices run on simulated time.  A real device runs on its own
        clock: a *paced* driver (Franka, UR) waits for it in ``advance()``, so
        the runtime follows it by itself; any other real device (e.g. CANopen
        drives) needs the runtime paced at wall-clock speed, and so does a node
        that reads the wall clock itself (``wall_clock = True``: an LSL inlet).
        A GUI is paced too.
        """
        assert self.runtime is not None
        if self.gui:
            return 1.0
        for node in self.runtime.nodes:
            if getattr(node, "wall_clock", False):
                return 1.0
            driver = getattr(getattr(node, "controller", None), "driver", None)
            if driver is not None and not driver.simulated and not driver.paced:
                return 1.0
        return None

    def _recorder(self) -> Recorder | None:
        assert self.runtime is not None
        for node in self.runtime.nodes:
            if isinstance(node, Recorder):
                return node
        return None

    def calibration_data(self, block: BlockResult, lag_s: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Neural features and kinematics of a block, read back from the log.

        Each neural bin is paired with the effector's mean velocity over the
        same bin shifted ``lag_s`` into the past.
        """
        assert self.session_dir is not None
        decoder_node = self._one("decoder")
        assert isinstance(decoder_node, DecoderNode)
        effector_topic = "state." + self.config.nodes_of("effector")[0]
        # The effector says how its state maps to intent units (a wheelchair:
        # measured forward speed and turn rate over its profile limits);
        # otherwise the velocity along the task axes.
        effector = self._one("effector")
        to_intent = getattr(effector, "intent_velocity", None)
        if to_intent is None:
            axes = axis_indices(self.config.axes)

            def to_intent(msg: EffectorState) -> np.ndarray:
                return np.asarray(msg.velocity)[axes]
        t0, t1 = round(block.start_s * NS_PER_S), round(block.end_s * NS_PER_S)
        frames: list[NeuralFrame] = []
        state_t, state_v = [], []
        for topic, msg in read_messages(self.session_dir / LOG_NAME, ("neural", effector_topic),
                                        start_ns=t0, end_ns=t1):
            if isinstance(msg, NeuralFrame):
                frames.append(msg)
            elif isinstance(msg, EffectorState):
                state_t.append(msg.header.t_ns)
                state_v.append(to_intent(msg))
        if not frames or not state_t:
            raise RuntimeError(
                f"block {block.name!r} recorded {len(frames)} neural frames and {len(state_t)} "
                f"effector states; a decoder cannot be fit (a stream source — lsl, cerebus — "
                f"publishes nothing until its stream delivers: see its `stream` events)")
        st = np.asarray(state_t, dtype=np.int64)
        sv = np.asarray(state_v)
        bin_s = frames[0].bin_s
        lag_ns, bin_ns = round(lag_s * NS_PER_S), round(bin_s * NS_PER_S)
        Z, X = [], []
        stage = decoder_node.make_feature_stage()
        if stage is not None:
            return self._staged_calibration_data(stage, frames, st, sv, lag_ns, bin_ns, bin_s)
        for f in frames:
            hi = f.header.neural_t_ns - lag_ns
            sel = (st > hi - bin_ns) & (st <= hi)
            if not sel.any():
                continue  # before the first state of the block
            Z.append(decoder_node.features(f.counts))
            X.append(sv[sel].mean(axis=0))
        return np.asarray(Z), np.asarray(X), bin_s

    def _staged_calibration_data(self, stage: Any, frames: list[NeuralFrame], st: np.ndarray,
                                 sv: np.ndarray, lag_ns: int, bin_ns: int,
                                 bin_s: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Calibration pairs through a fitted :class:`FeatureTransformer`.

        The stage is fitted on every frame of the block (its dead/noisy report
        is logged) and run over them in order, exactly as online; a feature bin
        is paired with the mean lagged velocity of its input bins, and dropped
        if any of them precedes the first effector state.
        """
        counts = np.asarray([f.counts for f in frames], dtype=np.float64)
        stage.fit(counts, bin_s)
        self.feature_stage = stage
        if stage.report_["excluded"]:
            log.warning("calibration: excluded channels %s (dead %s, noisy %s)",
                        stage.report_["excluded"], stage.report_["dead"], stage.report_["noisy"])
        Z_all = stage.transform(counts)
        X_frames = np.full((len(frames), sv.shape[1]), np.nan)
        for i, f in enumerate(frames):
            hi = f.header.neural_t_ns - lag_ns
            sel = (st > hi - bin_ns) & (st <= hi)
            if sel.any():
                X_frames[i] = sv[sel].mean(axis=0)
        factor = int(stage.bin_factor)
        X_bins = X_frames[: Z_all.shape[0] * factor].reshape(Z_all.shape[0], factor, -1).mean(axis=1)
        ok = np.all(np.isfinite(X_bins), axis=1)
        return Z_all[ok], X_bins[ok], stage.dt_

    def click_data(self, block: BlockResult, lag_s: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Features and grasp labels of a calibration block, for the click decoder.

        A bin's label is 1 when the effector's hand was closed on grasp
        (``hand_mode``, :data:`~bciarm.effectors.arm.ARM_EXTRA`) over most of
        the bin ``lag_s`` earlier -- the same lag as the velocity pairs.
        """
        from bciarm.effectors.arm import EXTRA_INDEX
        from bciarm.effectors.grasp import CLOSED

        assert self.session_dir is not None
        decoder_node = self._one("decoder")
        effector_topic = "state." + self.config.nodes_of("effector")[0]
        t0, t1 = round(block.start_s * NS_PER_S), round(block.end_s * NS_PER_S)
        frames: list[NeuralFrame] = []
        st, closed = [], []
        for _, msg in read_messages(self.session_dir / LOG_NAME, ("neural", effector_topic),
                                    start_ns=t0, end_ns=t1):
            if isinstance(msg, NeuralFrame):
                frames.append(msg)
            elif isinstance(msg, EffectorState) and msg.extra.size > EXTRA_INDEX["hand_mode"]:
                st.append(msg.header.t_ns)
                closed.append(float(msg.extra[EXTRA_INDEX["hand_mode"]] == CLOSED))
        if not frames or not st:
            raise RuntimeError(f"block {block.name!r} recorded no neural frames or hand states; "
                               "a click decoder needs an arm with a gripper")
        st_a, cl_a = np.asarray(st, dtype=np.int64), np.asarray(closed)
        bin_s = frames[0].bin_s
        lag_ns, bin_ns = round(lag_s * NS_PER_S), round(bin_s * NS_PER_S)
        Z, y = [], []
        for f in frames:
            hi = f.header.neural_t_ns - lag_ns
            sel = (st_a > hi - bin_ns) & (st_a <= hi)
            if sel.any():
                Z.append(decoder_node.features(f.counts))
                y.append(float(cl_a[sel].mean() > 0.5))
        return np.asarray(Z), np.asarray(y), bin_s

    def _fit_click(self, decoder_node: DecoderNode, block: BlockResult) -> dict[str, Any]:
        """Fit and save the click decoder; the ``decoder_update`` fields that announce it."""
        from bciarm.decoders.click import ClickDecoder

        assert self.session_dir is not None
        Z, y, bin_s = self.click_data(block, self.config.protocol.calibration.lag_s)
        click = ClickDecoder(**decoder_node.params.click).fit(Z, y, bin_s)
        click.save(self.session_dir / "click.npz")
        acc = click.lda_.score(Z, (y > 0.5).astype(int))
        log.info("click decoder: %d bins (%.0f%% grasp), training accuracy %.3f",
                 len(y), 100 * float(np.mean(y)), acc)
        return {"click": "click.npz", "click_accuracy": float(acc)}

    def fit_decoder(self, block: BlockResult) -> Any:
        """Fit, save and install the decoder from a calibration block."""
        assert self.session_dir is not None and self.runtime is not None
        decoder_node = self._one("decoder")
        assert isinstance(decoder_node, DecoderNode)
        Z, X, bin_s = self.calibration_data(block, self.config.protocol.calibration.lag_s)
        decoder = decoder_node.make_estimator().fit(Z, X, bin_s)
        decoder.save(self.session_dir / "decoder.npz")
        protocol = self.runtime.node("protocol")
        assert isinstance(protocol, ProtocolNode)
        extra: dict[str, Any] = {}
        if decoder_node.params.click is not None:
            extra.update(self._fit_click(decoder_node, block))
        if self.feature_stage is not None:
            self.feature_stage.save(self.session_dir / "features.npz")
            extra = {"features": "features.npz",
                     "excluded_channels": ",".join(map(str, self.feature_stage.report_["excluded"]))}
        # The decoder node loads the file named in the event: the same path a
        # decoder in another process, or a replay of this log, would take.
        protocol.announce("decoder_update", node=decoder_node.name, path="decoder.npz",
                          n_channels=int(Z.shape[1]), bins=int(Z.shape[0]),
                          fit_r2=float(decoder.score(Z, X)), speed_ref=moving_speed(X), **extra)
        self.runtime.deliver()
        if decoder_node.decoder is None:
            raise RuntimeError("the decoder node did not install the fitted decoder")
        return decoder_node.decoder

    def run(self) -> SessionResult:
        """Run the whole protocol and write the session folder."""
        cfg = self.config
        self.session_dir = make_session_dir(self.out_dir, cfg.name, cfg.seed).resolve()
        self._write_metadata(self.session_dir)
        self.runtime = InlineRuntime(self.build_nodes(), tick_s=cfg.tick_s, seed=cfg.seed,
                                     session_dir=self.session_dir)
        rt = self.runtime
        closed = [b for b in cfg.protocol.blocks]
        per_block_s = self.duration_s / len(closed) if self.duration_s else None
        cal = cfg.protocol.calibration
        # Progress counts trials; with --duration the closed-loop blocks end on
        # time, so the total is unknown (None) once calibration is over.
        total = None if per_block_s else cal.trials + sum(b.trials for b in closed)
        blocks: list[BlockResult] = []
        wall0 = time.perf_counter()
        try:
            rt.start()
            blocks.append(self._run_block("calibration", "open_loop", cal.trials,
                                          cal.max_duration_s, 0, total or cal.trials))
            if cfg.nodes_of("decoder"):
                self.fit_decoder(blocks[0])
            for spec in closed:
                done = sum(b.trials for b in blocks)
                adapt = None
                if spec.kind != "closed_loop":
                    adapt = {"adapt": spec.kind, "batch_s": spec.batch_s,
                             "half_life_s": spec.half_life_s,
                             "normalise_speed": spec.normalise_speed,
                             "keep_dynamics": spec.keep_dynamics,
                             "position_feedback": spec.position_feedback,
                             "label_speed": spec.label_speed,
                             "feedback_delay_s": spec.feedback_delay_s,
                             "process_noise_scale": spec.process_noise_scale}
                    if spec.gain is not None:
                        adapt["gain"] = spec.gain
                blocks.append(self._run_block(
                    spec.name, spec.mode,
                    None if per_block_s else spec.trials,
                    per_block_s or spec.max_duration_s, done, total, adapt))
            self.runtime.node("protocol").announce("session_end")  # type: ignore[attr-defined]
            rt.deliver()
        finally:
            rt.stop()
        wall_s = time.perf_counter() - wall0
        sim_s = rt.now_ns / NS_PER_S
        task = self._one("task")
        result = self.summarise(task.trials, blocks, sim_s=sim_s, wall_s=wall_s,
                                extra={"rejected_frames": dict(rt.rejected)})
        self._write_results(result.metrics, task.trials, blocks)
        return result

    def summarise(self, trials: list[Any], blocks: list[BlockResult], *, sim_s: float,
                  wall_s: float, extra: dict[str, Any] | None = None) -> SessionResult:
        """Metrics of a finished session, by the task's own definitions.

        The task class names its metric keys, ``--json`` keys, table columns
        and summary function (``metric_keys``, ``json_keys``,
        ``table_columns``, ``compute_metrics``); both runtimes call this so a
        session reports the same way however it ran.
        """
        from bciarm.tasks.metrics import METRIC_KEYS

        cfg = self.config
        task_cls = node_class(cfg.nodes[cfg.nodes_of("task")[0]])
        summarise = getattr(task_cls, "compute_metrics", None)
        if summarise is None:
            from bciarm.tasks.metrics import compute_metrics as summarise
        keys = tuple(getattr(task_cls, "metric_keys", METRIC_KEYS))
        scored = summarise([t for t in trials if t.mode == "closed_loop"])
        metrics = {k: scored[k] for k in keys}
        metrics.update({
            "realtime_factor": sim_s / wall_s if wall_s > 0 else float("inf"),
            "session_dir": str(self.session_dir),
            "simulated_s": sim_s,
            "wall_s": wall_s,
            "seed": cfg.seed,
            "config": cfg.name,
            "closed_loop": scored,
            "calibration": summarise([t for t in trials if t.block == "calibration"]),
            "blocks": {b.name: summarise([t for t in trials if t.block == b.name])
                       for b in blocks[1:]},
        })
        metrics.update(extra or {})
        json_keys = (*getattr(task_cls, "json_keys", keys), "session_dir")
        columns = tuple(getattr(task_cls, "table_columns", ()))
        assert self.session_dir is not None
        return SessionResult(metrics, self.session_dir, blocks, json_keys, columns)

    def _write_results(self, metrics: dict[str, Any], trials: list[Any],
                       blocks: list[BlockResult]) -> None:
        assert self.session_dir is not None
        (self.session_dir / "metrics.json").write_text(json.dumps(metrics, indent=2),
                                                      encoding="utf-8")
        if trials:
            rows = [dataclasses.asdict(t) for t in trials]
            with (self.session_dir / "trials.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: (np.round(v, 5).tolist() if isinstance(v, np.ndarray) else v)
                                     for k, v in row.items()})
        from bciarm.plots import plot_session_trajectories

        plot_session_trajectories(self.session_dir, self.config, blocks)
        task_cls = node_class(self.config.nodes[self.config.nodes_of("task")[0]])
        extra_plot = getattr(task_cls, "plot_session", None)
        if extra_plot is not None:
            extra_plot(self.session_dir, self.config, blocks)

"""The ``lsl`` source against a real pylsl outlet in another process (no mock).

The outlet is :mod:`bciarm.testing.lsl_outlet` started with ``subprocess``;
the source runs under a :class:`NodeHarness` ticked on the wall clock.  Every
wait is on a condition with a deadline.  The 20 s × 1 kHz × 256-channel
acceptance figure is ``bciarm bench lsl`` (README); the slow test here runs
the same bench for 3 s and checks every sample.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

pylsl = pytest.importorskip("pylsl", reason="pylsl is not installed (pip install 'bciarm[lsl]')")

from bciarm import registry
from bciarm.bus.harness import NodeHarness
from bciarm.bus.messages import Event
from bciarm.config import ConfigError, load_config
from bciarm.sources.lsl import LslSource, Rebinner, frame_counts
from bciarm.testing.lsl_outlet import expected_bins, pattern

TICK = 0.01


def _outlet(name: str, seconds: float, channels: int = 8, rate: float = 1000.0,
            linger: float = 0.5, *extra: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "bciarm.testing.lsl_outlet", "--name", name,
                          "--channels", str(channels), "--rate", str(rate),
                          "--seconds", str(seconds), "--linger", str(linger), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "READY"
    return p


def _until(h: NodeHarness, cond, timeout: float) -> bool:
    """Tick the harness on the wall clock until ``cond()`` or the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h.tick()
        if cond():
            return True
        time.sleep(TICK)
    return False


def _ended(h: NodeHarness, outlet: subprocess.Popen, src: str | None = None):
    """Condition: the outlet process has exited and the source has declared the stream lost.

    (On a loaded machine a starved reader may also report a short stall as a
    lost/connected pair mid-stream; the tests accept those and wait for the end.)
    """
    def cond() -> bool:
        states = [e.data["state"] for e in h.sent("event") if e.kind == "stream"
                  and e.data["state"] != "waiting" and (src is None or e.header.src == src)]
        return outlet.poll() is not None and states[-1:] == ["lost"]
    return cond


def _connections(h: NodeHarness) -> list[bool]:
    """``new_inlet`` of every ``connected`` event (True: a new connection; False: a resumed stall)."""
    return [e.data["new_inlet"] for e in h.sent("event") if e.data.get("state") == "connected"]


def _states(h: NodeHarness) -> list[str]:
    # ("waiting" is a start-up notice when no stream delivered within 5 s: a slow machine.)
    return [e.data["state"] for e in h.sent("event")
            if e.kind == "stream" and e.data["state"] != "waiting"]


def _name() -> str:
    return f"bciarm-test-{uuid.uuid4().hex[:10]}"  # parallel runs never see each other's stream


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("factor", [1, 3, 10])
def test_rebinner_sums_every_factor_samples_whatever_the_chunking(factor):
    rng = np.random.default_rng(factor)
    x = rng.poisson(0.3, size=(203, 5)).astype(np.int32)
    t = np.arange(203) / 1000.0
    b = Rebinner(factor)
    got, times = [], []
    i = 0
    while i < len(x):  # random chunk sizes, some empty
        n = int(rng.integers(0, 17))
        bins, tt = b.add(x[i:i + n], t[i:i + n])
        got.extend(bins)
        times.extend(tt)
        i += n
    nb = len(x) // factor
    # Reference: a plain loop over whole bins.
    want = [[int(sum(x[k * factor + j, c] for j in range(factor))) for c in range(5)]
            for k in range(nb)]
    assert np.asarray(got).tolist() == want
    assert np.allclose(times, [t[(k + 1) * factor - 1] for k in range(nb)])
    assert b.pending == len(x) - nb * factor
    b.reset()
    assert b.pending == 0


def test_frame_counts_dtypes():
    assert frame_counts(np.array([[1, 2]], dtype=np.int64)).dtype == np.dtype("<u4")
    assert frame_counts(np.array([[-1, 2]], dtype=np.int64)).dtype == np.dtype("<i4")
    assert frame_counts(np.array([[0.5, 2]], dtype=np.float32)).dtype == np.dtype("<f8")


def test_params_are_validated():
    with pytest.raises(ValueError, match="stream_name, stream_type or source_id"):
        LslSource.Params(stream_type=None)
    with pytest.raises(ValueError, match="quotes"):
        LslSource.Params(stream_name="a'b")
    with pytest.raises(ValueError, match="tick_s"):
        LslSource.Params(bin_s=0.01, tick_s=0.02)


def test_builtin_config_takes_spikecounts_over_lsl():
    cfg, _ = load_config("arm_center_out_lsl")
    spec = cfg.nodes["source"]
    assert spec.type == "lsl" and spec.params["stream_type"] == "SpikeCounts"
    assert registry.resolve("source", "lsl") is LslSource


def test_bad_lsl_param_in_a_config_names_the_key(tmp_path):
    text = load_config("arm_center_out_lsl")[1].read_text().replace("lost_after_s: 0.2",
                                                                    "lost_after: 0.2")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"nodes\.source\.params\.lost_after"):
        load_config(str(path))


# ---------------------------------------------------------------- against a real outlet


def test_counts_are_rebinned_exactly_with_corrected_clock_and_loss_is_announced():
    name = _name()
    outlet = _outlet(name, seconds=1.5, channels=8)
    node = LslSource("lsl", stream_name=name, stream_type=None, bin_s=0.05, n_channels=8)
    h = NodeHarness(node)
    try:
        assert _until(h, _ended(h, outlet), 30), _states(h)
        assert outlet.wait(10) == 0
    finally:
        h.close()
    frames = h.sent("neural")
    assert _connections(h)[0] is True and not any(_connections(h)[1:])  # one connection
    # 1.5 s at 1 kHz in 50-sample bins; every sample where it belongs.
    assert len(frames) + node.dropped_stale == 30
    X = np.asarray([f.counts for f in frames], dtype=np.int64)
    k0 = 30 - len(frames)
    assert (X == expected_bins(k0, len(frames), 50, 8)).all()
    assert all(f.bin_s == 0.05 and f.counts.shape == (8,) for f in frames)
    # Bin times on the (corrected, dejittered) LSL clock: exactly 50 ms apart,
    # and in the past of this machine's clock.
    t_lsl = np.asarray(node.recent_bin_times)
    assert len(t_lsl) == len(frames)
    assert np.allclose(np.diff(t_lsl), 0.05, atol=1e-4)
    assert t_lsl[-1] <= pylsl.local_clock()
    # On the runtime's clock: never decreasing, never after the publish time
    # (the harness's simulated clock lags the wall clock, so several bins of
    # one tick may be clamped to the same publish time).
    acq = np.asarray([f.header.neural_t_ns for f in frames])
    assert (np.diff(acq) >= 0).all()
    assert all(f.header.neural_t_ns <= f.header.t_ns for f in frames)
    assert [f.header.neural_seq for f in frames] == [f.header.seq for f in frames]
    lost = [e for e in h.sent("event") if e.data.get("state") == "lost"][-1]
    assert lost.data["name"] == name and lost.data["channels"] == 8
    assert lost.data["samples"] == 1500


def test_reconnects_when_the_stream_returns_and_drops_the_partial_bin():
    name = _name()
    node = LslSource("lsl", stream_name=name, stream_type=None, bin_s=0.05)
    h = NodeHarness(node)
    try:
        first = _outlet(name, seconds=0.52)  # 10 whole bins + 20 samples
        assert _until(h, _ended(h, first), 30), _states(h)
        n_before = len(h.sent("neural"))
        n_conn = len(_connections(h))
        second = _outlet(name, seconds=1.0)
        assert _until(h, lambda: _ended(h, second)() and len(_connections(h)) > n_conn, 30), \
            _states(h)
    finally:
        h.close()
    assert node.dropped_partial == 1  # the 20 samples of the first stream's last bin
    assert _connections(h)[n_conn] is True  # the second outlet: a new connection
    after = h.sent("neural")[n_before:]
    # The new stream starts at its own sample 0: its bins are whole and exact.
    X = np.asarray([f.counts for f in after], dtype=np.int64)
    k0 = 20 - len(after)
    assert len(after) >= 15 and (X == expected_bins(k0, len(after), 50, 8)).all()


def test_a_stall_is_announced_and_resumes_on_the_same_inlet_without_loss():
    name = _name()
    outlet = _outlet(name, 1.2, 8, 1000.0, 0.5, "--pause-at", "0.5", "--pause-for", "0.6")
    node = LslSource("lsl", stream_name=name, stream_type=None, bin_s=0.05,
                     lost_after_s=0.2, reconnect_after_s=3.0, max_latency_s=5.0)
    h = NodeHarness(node)
    try:
        assert _until(h, _ended(h, outlet), 30), _states(h)
    finally:
        h.close()
    # The stall was announced and the stream resumed on the same inlet.
    assert _states(h).count("lost") >= 2
    assert _connections(h)[0] is True and len(_connections(h)) >= 2
    assert not any(_connections(h)[1:])
    frames = h.sent("neural")
    X = np.asarray([f.counts for f in frames], dtype=np.int64)
    assert len(frames) == 24 and (X == expected_bins(0, 24, 50, 8)).all()  # nothing lost
    assert node.dropped_partial == 0


def test_features_stream_and_refused_width():
    name = _name()
    outlet = _outlet(name, seconds=0.6, channels=4, rate=20.0)  # one "feature" sample per 50 ms
    ok = LslSource("ok", stream_name=name, stream_type=None, input="features", bin_s=0.05)
    wrong = LslSource("wrong", stream_name=name, stream_type=None, n_channels=5)
    h = NodeHarness(ok, wrong)
    try:
        assert _until(h, _ended(h, outlet, src="ok"), 30)
    finally:
        h.close()
    frames = [f for f in h.sent("neural") if f.header.src == "ok"]
    assert frames and all(f.header.src == "ok" for f in h.sent("neural"))
    X = np.asarray([f.counts for f in frames])
    assert (X == pattern(12 - len(frames), len(frames), 4)).all()  # one sample per frame
    refused = [e for e in h.sent("event")
               if e.header.src == "wrong" and e.data["state"] != "waiting"]
    assert refused and refused[0].data["state"] == "refused"
    assert "expects 5" in refused[0].data["reason"]


class _Constant:
    """Decoder on the step contract: a constant 5 cm/s along x for every frame."""

    n_channels_ = 8

    def reset(self):
        pass

    def step(self, z):
        return np.array([0.05, 0.0])


@pytest.mark.slow
def test_stream_loss_stops_intents_and_the_arm_watchdog_brakes():
    """LSL → decoder → arm: when the stream dies, intents stop and the arm's watchdog acts."""
    from bciarm.decoders.node import DecoderNode
    from bciarm.effectors.arm import ArmEffector

    registry.register("decoder", "const_test", f"{__name__}:_Constant")
    try:
        dec = DecoderNode("decoder", decoder="const_test")
    finally:
        registry.unregister("decoder", "const_test")
    dec.set_decoder(_Constant())
    name = _name()
    src = LslSource("source", stream_name=name, stream_type=None, bin_s=0.05, n_channels=8)
    arm = ArmEffector("arm")  # default stop contract: at rest within 100 ms
    h = NodeHarness(src, dec, arm)
    try:
        h.send("event", h.make("event", Event, kind="block_start",
                               data={"block": "b", "mode": "closed_loop"}))
        outlet = _outlet(name, seconds=1.5, channels=8)
        assert _until(h, _ended(h, outlet), 30), _states(h)
        # Keep the arm ticking a little after the loss was announced.
        t_end = h.now_ns + int(0.3e9)
        _until(h, lambda: h.now_ns >= t_end, 5)
    finally:
        h.close()
    intents = h.sent("intent")
    assert len(intents) >= 10
    last_intent_ns = intents[-1].header.t_ns
    # The source publishes no frame once the stream is lost (its own outputs
    # are in order), and every intent comes from one of the frames before.
    order = [(t, m) for t, m in h.capture.messages if m.header.src == "source"]
    i_lost = max(i for i, (t, m) in enumerate(order)
                 if t == "event" and m.data.get("state") == "lost")  # the end of the stream
    assert all(t != "neural" for t, _ in order[i_lost:])
    frames = [m for t, m in order if t == "neural"]
    assert {i.header.neural_seq for i in intents} <= {f.header.seq for f in frames}
    lost_ns = order[i_lost][1].header.t_ns
    assert last_intent_ns <= lost_ns
    states = h.sent("state.arm")
    tripped = [s.header.t_ns for s in states
               if s.header.t_ns > last_intent_ns and "watchdog" in s.guards]
    assert tripped, "the arm's watchdog never acted after the last intent"
    # The watchdog acts within stop_within_s (+ one 10 ms tick) of the last intent.
    assert tripped[0] - last_intent_ns <= int(0.1e9) + int(0.011e9)


@pytest.mark.slow
def test_bench_counts_every_sample_of_a_wide_fast_stream():
    from bciarm.bench.lsl import run_lsl_bench

    fig = run_lsl_bench(seconds=3.0, rate=1000.0, channels=256, bin_s=0.01)
    print("\nLSL 3 s × 1 kHz × 256 ch:", fig)
    assert fig["samples_received"] == fig["samples_pushed"] == 3000
    assert fig["lost_samples"] == 0 and fig["bad_frames"] == 0 and fig["out_of_order"] == 0
    assert fig["frames"] + fig["stale_dropped"] == fig["frames_expected"] == 300


def test_waits_for_a_stream_and_says_so(monkeypatch):
    import bciarm.sources.lsl as lsl_mod

    monkeypatch.setattr(lsl_mod, "WAIT_WARN_S", 0.3)
    node = LslSource("lsl", stream_name=_name(), stream_type=None)
    h = NodeHarness(node)
    try:
        assert _until(h, lambda: any(e.data["state"] == "waiting" for e in h.sent("event")), 10)
    finally:
        h.close()
    (ev,) = h.sent("event")
    assert "name=" in ev.data["query"] and h.sent("neural") == []


def test_an_inline_session_with_a_wall_clock_source_is_paced(monkeypatch, tmp_path):
    """The inline runtime runs faster than real time unless a node reads the wall clock."""
    from bciarm.bus.inline import InlineRuntime
    from bciarm.session import Session
    from bciarm.sources.simulated import SimulatedSource

    paces = []

    class Stop(Exception):
        pass

    def run_for(self, duration_s, until=None, on_step=None, pace=None):
        paces.append(pace)
        raise Stop

    monkeypatch.setattr(InlineRuntime, "run_for", run_for)
    cfg, _ = load_config("arm_center_out")
    with pytest.raises(Stop):
        Session(cfg, out_dir=tmp_path / "a").run()
    monkeypatch.setattr(SimulatedSource, "wall_clock", True, raising=False)
    with pytest.raises(Stop):
        Session(cfg, out_dir=tmp_path / "b").run()
    assert paces == [None, 1.0]
    assert LslSource.wall_clock is True

"""ReFIT / SmoothBatch: intention estimates, updates, and sessions that replay exactly."""

from __future__ import annotations

import numpy as np
import pytest

from bciarm.bus.messages import Event, Intent, NeuralFrame
from bciarm.config import BlockSpec, load_config
from bciarm.decoders import KalmanDecoder
from bciarm.decoders.datasets import load_recording
from bciarm.decoders.features import FeatureTransformer
from bciarm.decoders.adapt import (SpeedProfile, intended_velocity, refit_decoder,
                                   smoothbatch_update)
from bciarm.record import LOG_NAME, read_messages
from bciarm.session import Session


def test_intention_rotates_toward_target_keeps_speed_and_zeroes_holds():
    v = intended_velocity(np.array([0.3, 0.4]), np.zeros(2), np.array([0.0, 2.0]), "reach")
    np.testing.assert_allclose(v, [0.0, 0.5])
    assert np.all(intended_velocity(np.array([0.3, 0.4]), np.zeros(2), np.ones(2), "hold") == 0)
    assert intended_velocity(np.array([0.3, 0.4]), np.zeros(2), np.ones(2), "idle") is None


def test_speed_profile_learns_speed_against_distance():
    rng = np.random.default_rng(0)
    prof = SpeedProfile(n_bins=16)
    for _ in range(40):
        assert not prof.fitted
        prof.add(0.1, 0.1)
    assert not prof.fit()  # fewer than 4 samples per bin
    prof = SpeedProfile(n_bins=16)
    d = rng.uniform(0.0, 0.12, 4000)
    true = np.minimum(d / 0.04, 1.0) * 0.15  # ramp, then saturated
    for di, vi in zip(d, true + rng.normal(0, 0.005, d.size)):
        prof.add(di, vi)
    assert prof.fit()
    assert prof(0.0) == 0.0
    for x in (0.01, 0.03, 0.06, 0.11):
        assert abs(prof(x) - min(x / 0.04, 1.0) * 0.15) < 0.01
    assert prof(1.0) == prof(float(prof.distance_m[-1]))  # flat beyond the data


def _tuned(rng, T=3000, N=30, tuning=None):
    V = np.zeros((T, 2))
    for t in range(1, T):
        V[t] = 0.9 * V[t - 1] + rng.normal(0, 0.02, 2)
    tuning = rng.normal(0, 30, (2, N)) if tuning is None else tuning
    Z = 10 + V @ tuning + rng.normal(0, 1, (T, N))
    return Z, V, tuning


def test_smoothbatch_moves_c_toward_the_batch_by_the_half_life_weight():
    rng = np.random.default_rng(0)
    Z, V, tuning = _tuned(rng)
    dec = KalmanDecoder().fit(Z, V, 0.05)
    new_tuning = np.roll(tuning, 7, axis=1)  # the population changed
    Z2, V2, _ = _tuned(rng, tuning=new_tuning)
    P = np.cumsum(V2, axis=0) * 0.05
    half = smoothbatch_update(dec, Z2, V2, P, 0.5)
    full = smoothbatch_update(dec, Z2, V2, P, 0.0)
    np.testing.assert_array_equal(half.A_, dec.A_)
    np.testing.assert_array_equal(half.W_, dec.W_)
    np.testing.assert_allclose(half.C_, 0.5 * (dec.C_ + full.C_), atol=1e-9)
    np.testing.assert_allclose(full.C_[:, :2].T, new_tuning, atol=2.0)  # tuning s.d. 30
    assert full.score(Z2, V2) > dec.score(Z2, V2) + 0.3


def test_refit_learns_the_new_tuning():
    rng = np.random.default_rng(1)
    Z, V, tuning = _tuned(rng)
    dec = KalmanDecoder().fit(Z, V, 0.05)
    Z2, V2, _ = _tuned(rng, tuning=-tuning)
    new = refit_decoder(dec, Z2, V2)
    assert new.get_params() == dec.get_params()
    assert new.score(Z2, V2) > 0.8 > dec.score(Z2, V2)
    kept = refit_decoder(dec, Z2, V2, keep_dynamics=True)
    np.testing.assert_array_equal(kept.A_, dec.A_)
    np.testing.assert_array_equal(kept.W_, dec.W_)
    assert kept.score(Z2, V2) > 0.8


def test_refit_with_position_feedback_is_refit_kf():
    """ReFIT-KF (Gilja et al. 2012): position and velocity states, the position
    states are the effector's actual positions, and the decoder runs with the
    position intervention. C and Q are least squares on [P, V, 1] (checked with
    an independent lstsq); A's position rows are the exact kinematics."""
    rng = np.random.default_rng(2)
    Z, V, tuning = _tuned(rng)
    dec = KalmanDecoder(q_ridge=0.0).fit(Z, V, 0.05)
    P = 0.1 * np.sin(np.arange(len(V))[:, None] / np.array([50.0, 70.0]))  # not the integral of V
    Z2, V2, _ = _tuned(rng, tuning=-tuning)
    new = refit_decoder(dec, Z2, V2, P, position_feedback=True)
    assert new.include_position and new.position_feedback and new.n_velocity_ == 2
    X = np.hstack([P, V2, np.ones((len(V2), 1))])
    coef = np.linalg.lstsq(X, Z2, rcond=None)[0]
    np.testing.assert_allclose(new.C_, coef.T, atol=1e-8)
    res = Z2 - X @ coef
    np.testing.assert_allclose(new.Q_, res.T @ res / len(Z2), atol=1e-8)
    np.testing.assert_array_equal(new.A_[:2, :2], np.eye(2))
    np.testing.assert_array_equal(new.A_[:2, 2:4], 0.05 * np.eye(2))
    assert np.all(new.W_[:2] == 0)
    # Decoding with the actual positions fed back recovers the new velocities.
    new.reset()
    out = []
    for z, p in zip(Z2, P):
        new.set_position(p)
        out.append(new.step(z)[2:])
    r2 = 1 - ((np.array(out) - V2) ** 2).sum(0) / ((V2 - V2.mean(0)) ** 2).sum(0)
    assert r2.min() > 0.8
    with pytest.raises(ValueError, match="positions"):
        refit_decoder(dec, Z2, V2, None, position_feedback=True)


def test_refit_process_noise_scale_and_gain():
    """The two documented deviations of arm_refit: W scaled (less smoothing) and an
    output gain; everything else as the plain refit."""
    rng = np.random.default_rng(3)
    Z, V, tuning = _tuned(rng)
    dec = KalmanDecoder().fit(Z, V, 0.05)
    Z2, V2, _ = _tuned(rng, tuning=-tuning)
    plain = refit_decoder(dec, Z2, V2)
    new = refit_decoder(dec, Z2, V2, process_noise_scale=4.0, gain=1.7)
    np.testing.assert_array_equal(new.W_, 4.0 * plain.W_)
    for name in ("A_", "C_", "Q_"):
        np.testing.assert_array_equal(getattr(new, name), getattr(plain, name))
    assert new.gain == 1.7 and plain.gain == dec.gain == 1.0
    # more process noise: the filter trusts the data more (its transition F shrinks)
    assert max(abs(np.linalg.eigvals(new.F_[:2, :2]))) < max(abs(np.linalg.eigvals(plain.F_[:2, :2])))
    # the gain scales the output only: same filter, 1.7 x the velocity
    ungained = refit_decoder(dec, Z2, V2, process_noise_scale=4.0)
    np.testing.assert_allclose(new.predict(Z2[:200]), 1.7 * ungained.predict(Z2[:200]), rtol=1e-12)
    with pytest.raises(ValueError, match="process_noise_scale"):
        refit_decoder(dec, Z2, V2, process_noise_scale=0.0)


def _config(kind: str, features: dict | None = None, **block: object):
    cfg, _ = load_config("arm_clda")
    if features is not None:
        nodes = dict(cfg.nodes)
        dec = nodes["decoder"]
        nodes["decoder"] = dec.model_copy(update={"params": {**dec.params, "features": features}})
        cfg = cfg.model_copy(update={"nodes": nodes})
    blocks = [BlockSpec(name="adapt", kind=kind, trials=1000, max_duration_s=35.0,
                        batch_s=10.0, half_life_s=20.0, **block),
              BlockSpec(name="after", trials=4)]
    protocol = cfg.protocol.model_copy(update={
        "calibration": cfg.protocol.calibration.model_copy(update={"trials": 16}),
        "blocks": blocks})
    return cfg.model_copy(update={"protocol": protocol})


def _replay(session_dir):
    """Re-decode the logged neural frames with the decoders the logged events name."""
    decoder, stage, outputs, intents, updates = None, None, {}, {}, []
    for topic, msg in read_messages(session_dir / LOG_NAME, ("neural", "intent", "event")):
        if isinstance(msg, Event) and msg.kind == "decoder_update":
            decoder = KalmanDecoder.load(session_dir / msg.data["path"])
            if "features" in msg.data and stage is None:
                stage = FeatureTransformer.load(session_dir / msg.data["features"])
            updates.append(msg.data["path"])
        elif isinstance(msg, Event) and msg.kind == "block_start" and decoder is not None:
            decoder.reset()
            if stage is not None:
                stage.reset()
        elif isinstance(msg, NeuralFrame) and decoder is not None:
            z = msg.counts.astype(np.float64) if stage is None else stage.step(msg.counts)
            outputs[msg.header.seq] = decoder.step(z)
        elif isinstance(msg, Intent) and msg.header.src == "decoder":
            intents[msg.header.neural_seq] = msg.velocity
    return outputs, intents, updates


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "features", "block"), [
    ("clda", None, {}),
    # ReFIT with every label and refit option in one session: the calibration speed
    # profile (off in arm_refit now), less smoothing and an output gain (as arm_refit)
    ("refit", None, {"label_speed": "profile", "feedback_delay_s": 0.15,
                     "process_noise_scale": 4.0, "gain": 1.7}),
    ("clda", {"zscore": True, "history": 3, "count_transform": "sqrt", "min_rate_hz": 0.5}, {})])
def test_adaptive_session_records_updates_and_replays_exactly(tmp_path, kind, features, block):
    result = Session(_config(kind, features, **block), seed=1, out_dir=tmp_path).run()
    if features is not None:
        assert (result.session_dir / "features.npz").is_file()
        stage = FeatureTransformer.load(result.session_dir / "features.npz")
        assert stage.get_params()["history"] == 3
    outputs, intents, updates = _replay(result.session_dir)
    assert updates[0] == "decoder.npz"
    adapted = updates[1:]
    if kind == "clda":
        assert len(adapted) >= 3 and all(p.startswith("decoder_clda_adapt_") for p in adapted)
    else:
        assert adapted == ["decoder_refit_adapt.npz"]
    for path in adapted:
        assert (result.session_dir / path).is_file()
    # the session folder is also a recording for `bciarm decode`
    rec = load_recording(result.session_dir)
    assert rec.counts.shape[1] == 192 and rec.velocity.shape[1] == 2 and len(rec.counts) > 1000
    assert len(intents) > 500
    worst = max(float(np.max(np.abs(outputs[s] - v))) for s, v in intents.items())
    assert worst == 0.0

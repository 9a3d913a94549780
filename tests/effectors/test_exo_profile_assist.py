"""Patient profiles (validation, clear errors) and assist-as-needed (pure functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bciarm.config import ConfigError, parse_config
from bciarm.effectors.exoskeleton.assist import AssistConfig, assist_as_needed, needed_speed
from bciarm.effectors.exoskeleton.profile import ProfileError, load_profile, parse_profile

GOOD = {"patient": "p", "active": ["a", "b"],
        "joints": {"a": {"rom_deg": [0, 90], "max_speed_deg_s": 45, "max_torque_nm": 20},
                   "b": {"rom_deg": [-30, 30], "max_speed_deg_s": 60, "max_torque_nm": 5}}}


def test_example_profile_loads_in_si_units():
    p = load_profile("example")
    assert p.active == ("shoulder_flexion", "shoulder_abduction", "elbow_flexion")
    lo, hi = p.rom(["elbow_flexion"])
    assert lo[0] == pytest.approx(math.radians(15)) and hi[0] == pytest.approx(math.radians(125))
    assert p.max_speed(["elbow_flexion"])[0] == pytest.approx(math.radians(60))


@pytest.mark.parametrize("change,message", [
    (lambda d: d["joints"]["a"].update(rom_deg=[90, 0]),
     r"joints\.a\.rom_deg: .*min \(90.0\) must be below max"),
    (lambda d: d["joints"]["a"].update(max_speed_deg_s=-1),
     r"joints\.a\.max_speed_deg_s: .*greater than 0"),
    (lambda d: d["joints"]["a"].update(rom=[0, 1]),
     r"joints\.a\.rom: Extra inputs.*did you mean 'rom_deg'"),
    (lambda d: d.update(active=["a", "c"]), r"active: .*active joint\(s\) \['c'\] have no entry"),
    (lambda d: d["joints"]["b"].pop("max_torque_nm"), r"joints\.b\.max_torque_nm: Field required"),
])
def test_bad_profiles_name_file_and_key(change, message):
    import copy

    data = copy.deepcopy(GOOD)
    change(data)
    with pytest.raises(ProfileError, match=r"^pat\.yaml: " + message):
        parse_profile(data, "pat.yaml")


def test_profile_must_cover_the_robot_and_fit_its_stops():
    p = parse_profile(GOOD, "pat.yaml")
    with pytest.raises(ProfileError, match=r"pat\.yaml: joints: no entry for joint\(s\) \['c'\]"):
        p.rom(["a", "c"])
    with pytest.raises(ProfileError, match=r"joints\.a\.rom_deg: .* past the exoskeleton's stops"):
        p.check_fits(["a", "b"], np.radians([0, -90]), np.radians([45, 90]))


def test_unknown_profile_name_lists_the_builtins():
    with pytest.raises(ProfileError, match="built-in profiles: example"):
        load_profile("nobody")


def test_graph_config_with_a_bad_profile_is_rejected_up_front(tmp_path):
    import yaml

    from bciarm.config import resolve_config_path

    data = yaml.safe_load(resolve_config_path("exo_reach").read_text())
    data["nodes"]["exo"]["params"]["profile"] = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"exo_reach.yaml: nodes\.exo\.params.*missing\.yaml"):
        parse_config(data, "exo_reach.yaml")
    data = yaml.safe_load(resolve_config_path("exo_reach").read_text())
    data["axes"] = ["elbow_flexion", "shoulder_flexion", "shoulder_abduction"]
    with pytest.raises(ConfigError, match=r"nodes\.exo\.params.*active joints in order"):
        parse_config(data, "exo_reach.yaml")


# --------------------------------------------------------------------------- assist-as-needed

CFG = AssistConfig(level=1.0, max_speed=0.25, preferred_speed=0.5, gain=2.5, min_intent=0.03,
                   max_angle_deg=60)
X = np.zeros(3)
GOAL = np.array([0.8, 0.0, 0.0])


def test_no_intent_or_no_goal_means_no_help():
    assert not assist_as_needed(np.zeros(3), X, GOAL, CFG).any()
    assert not assist_as_needed(np.array([0.01, 0, 0]), X, GOAL, CFG).any()  # below min_intent
    assert not assist_as_needed(np.array([0.1, 0, 0]), X, None, CFG).any()


def test_never_against_or_across_the_users_direction():
    assert not assist_as_needed(np.array([-0.1, 0, 0]), X, GOAL, CFG).any()
    assert not assist_as_needed(np.array([0.05, 0.1, 0]), X, GOAL, CFG).any()  # 63 deg off


def test_weak_aimed_intent_is_topped_up_toward_the_goal_within_bounds():
    u = np.array([0.1, 0.02, 0.0])
    a = assist_as_needed(u, X, GOAL, CFG)
    g_hat = GOAL / np.linalg.norm(GOAL)
    # Along the goal direction, by the shortfall, capped at max_speed.
    short = needed_speed(0.8, CFG) - u @ g_hat
    np.testing.assert_allclose(a, min(short, 0.25) * g_hat)
    assert np.linalg.norm(a) <= CFG.max_speed + 1e-12
    half = assist_as_needed(u, X, GOAL, CFG, level=0.5)
    np.testing.assert_allclose(half, 0.5 * a)
    assert not assist_as_needed(u, X, GOAL, CFG, level=0.0).any()


def test_strong_intent_needs_no_help_and_help_tapers_at_the_goal():
    assert not assist_as_needed(np.array([0.6, 0, 0]), X, GOAL, CFG).any()
    near = assist_as_needed(np.array([0.04, 0, 0]), X, np.array([0.02, 0, 0]), CFG)
    assert np.linalg.norm(near) <= needed_speed(0.02, CFG) + 1e-12  # 0.05 rad/s


@pytest.mark.parametrize("bad", [np.array([np.nan, 0, 0]), np.array([np.inf, 0, 0])])
def test_non_finite_input_gives_no_help(bad):
    assert not assist_as_needed(bad, X, GOAL, CFG).any()

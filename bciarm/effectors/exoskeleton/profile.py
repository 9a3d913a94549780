"""Patient profiles: per-joint range of motion, speed and torque limits, active joints.

A profile is a YAML file written by the patient's therapist (see
``configs/patients/example.yaml``), validated with pydantic.  Units in the
file are clinical (degrees, degrees per second, newton-metres); the
:class:`PatientProfile` exposes SI arrays in any joint order the caller
asks for (joints are always addressed by their URDF names).

>>> profile = load_profile("example")            # built-in, or a path to a .yaml file
>>> lower, upper = profile.rom(("shoulder_flexion", "elbow_flexion"))   # rad

Errors name the file, the key and the fix::

    example.yaml: joints.elbow_flexion.rom_deg: Value error, min (130.0) must be below max
    (120.0) (got [130, 120]). Fix: see the README's exoskeleton section.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ProfileError(ValueError):
    """A patient profile is missing, unreadable, invalid, or does not fit the robot."""


class JointLimitsSpec(BaseModel):
    """One joint of a patient profile (clinical units)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rom_deg: tuple[float, float] = Field(description="[min, max] range of motion, degrees")
    max_speed_deg_s: float = Field(gt=0, le=720, description="top joint speed, deg/s")
    max_torque_nm: float = Field(gt=0, le=500, description="largest interaction torque, N·m")

    @field_validator("rom_deg")
    @classmethod
    def _ordered(cls, rom: tuple[float, float]) -> tuple[float, float]:
        lo, hi = rom
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"must be two finite numbers, got {list(rom)}")
        if not lo < hi:
            raise ValueError(f"min ({lo}) must be below max ({hi})")
        if hi - lo < 2.0:
            raise ValueError(f"range {lo}..{hi} deg is under 2 degrees: hold the joint "
                             "instead (leave it out of 'active')")
        return rom


class PatientProfile(BaseModel):
    """A validated patient profile.

    Attributes
    ----------
    patient : str
        Identifier (pseudonymous).
    active : tuple of str
        Joints the patient drives, in intent order.
    joints : dict of str to JointLimitsSpec
        Limits of every joint of the exoskeleton, by URDF name.
    source : str
        The file it came from (for messages).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient: str = Field(min_length=1)
    description: str = ""
    # joints before active: active is checked against joints.
    joints: dict[str, JointLimitsSpec] = Field(min_length=1)
    active: tuple[str, ...] = Field(min_length=1)
    source: str = Field("<profile>", exclude=True)

    @field_validator("active")
    @classmethod
    def _active_known(cls, active: tuple[str, ...], info: Any) -> tuple[str, ...]:
        if len(set(active)) != len(active):
            raise ValueError(f"active joints repeat: {list(active)}")
        joints = info.data.get("joints")
        if joints is not None:
            unknown = [j for j in active if j not in joints]
            if unknown:
                raise ValueError(f"active joint(s) {unknown} have no entry under 'joints' "
                                 f"(joints: {sorted(joints)})")
        return active

    # ------------------------------------------------------------------ SI views

    def _specs(self, names: Sequence[str]) -> list[JointLimitsSpec]:
        missing = [n for n in names if n not in self.joints]
        if missing:
            raise ProfileError(f"{self.source}: joints: no entry for joint(s) {missing} of the "
                               f"robot; profile joints are {sorted(self.joints)}. Fix: add "
                               f"{missing[0]}: {{rom_deg: [min, max], max_speed_deg_s: ..., "
                               f"max_torque_nm: ...}}")
        return [self.joints[n] for n in names]

    def rom(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Range of motion (lower, upper), rad, in ``names`` order."""
        specs = self._specs(names)
        return (np.radians([s.rom_deg[0] for s in specs]),
                np.radians([s.rom_deg[1] for s in specs]))

    def max_speed(self, names: Sequence[str]) -> np.ndarray:
        """Top joint speeds, rad/s, in ``names`` order."""
        return np.radians([s.max_speed_deg_s for s in self._specs(names)])

    def max_torque(self, names: Sequence[str]) -> np.ndarray:
        """Interaction torque limits, N·m, in ``names`` order."""
        return np.array([s.max_torque_nm for s in self._specs(names)], dtype=float)

    def check_fits(self, names: Sequence[str], lower: np.ndarray, upper: np.ndarray) -> None:
        """Raise :class:`ProfileError` unless every joint's RoM lies inside the machine's stops."""
        lo, hi = self.rom(names)
        for n, a, b, la, ub in zip(names, lo, hi, lower, upper):
            if a < la - 1e-9 or b > ub + 1e-9:
                raise ProfileError(
                    f"{self.source}: joints.{n}.rom_deg: [{math.degrees(a):.1f}, "
                    f"{math.degrees(b):.1f}] deg reaches past the exoskeleton's stops "
                    f"[{math.degrees(la):.1f}, {math.degrees(ub):.1f}] deg. Fix: narrow it.")


def profile_path(name_or_path: str | Path) -> Path:
    """Path of a profile: a ``.yaml`` path, or the name of a built-in (``configs/patients``)."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError(f"{path}: no such patient profile file")
        return path
    from importlib import resources

    folder = resources.files("bciarm.configs").joinpath("patients")
    path = folder.joinpath(f"{text}.yaml")
    if not path.is_file():
        known = sorted(e.name[:-5] for e in folder.iterdir() if e.name.endswith(".yaml"))
        raise ProfileError(f"no built-in patient profile named {text!r}; built-in profiles: "
                           f"{', '.join(known) or '(none)'} (or give a path to a .yaml file)")
    return Path(str(path))


def parse_profile(data: Any, source: str = "<profile>") -> PatientProfile:
    """Validate an already-parsed profile document."""
    from bciarm.config import format_validation_error

    if not isinstance(data, dict):
        raise ProfileError(f"{source}: the top level must be a mapping with 'patient', "
                           "'active' and 'joints'")
    try:
        return PatientProfile(**data, source=source)
    except ValidationError as exc:
        raise ProfileError(format_validation_error(source, exc, model=PatientProfile)) from None


def load_profile(name_or_path: str | Path) -> PatientProfile:
    """Load and validate a patient profile by built-in name or path.

    Raises
    ------
    ProfileError
        Naming the file, the key and the fix.
    """
    path = profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    return parse_profile(data, str(path))

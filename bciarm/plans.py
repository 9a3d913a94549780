"""Session plans: a clinical session of several blocks, as YAML (``bciarm session PLAN.yaml``).

A plan names a graph config (its nodes) and lists the blocks of the day::

    name: arm_rehab_day
    config: arm_refit            # a built-in name or a path (relative to the plan file)
    subject_id: P017             # pseudonymous; overrides the config's privacy.subject_id
    blocks:
      - {name: calibration, kind: calibration, trials: 24}
      - {name: closed_loop_1, kind: closed_loop, trials: 16}
      - {name: closed_loop_2, kind: refit, trials: 16}   # closed loop, then ReFIT retraining
      - {name: assessment, kind: assessment, trials: 16}

It is turned into the config's own ``protocol`` (calibration + blocks of kind
``closed_loop | refit | clda``) and run by the ordinary session machinery
(:class:`bciarm.monitor.inline.ConsoleSession`, a :class:`bciarm.session.Session`).
``assessment`` is a closed-loop block with the decoder frozen and the operator
settings reset (assist 0, gain 1) so it measures the decoder alone.  Before
each block the session waits for the operator (monitor "Start block" or the
terminal), unless run with ``--yes``.  The session folder gets ``plan.yaml``
(the plan as written) and ``plan.json`` (each block with who confirmed it, the
decoder it started with and the one it left, every operator action).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bciarm.bus.inline import NS_PER_S
from bciarm.config import (
    BlockSpec,
    CalibrationSpec,
    ConfigError,
    GraphConfig,
    ProtocolSpec,
    format_validation_error,
    load_config,
)
from bciarm.monitor.inline import ConsoleSession

PLAN_KINDS = ("calibration", "closed_loop", "refit", "clda", "assessment")


class PlanBlock(BaseModel):
    """One block of a plan; options as in the config's ``protocol`` blocks."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    kind: Literal["calibration", "closed_loop", "refit", "clda", "assessment"]
    trials: int = Field(24, gt=0)
    max_duration_s: float = Field(300.0, gt=0)
    lag_s: float | None = Field(None, ge=0, le=1.0, description="calibration only")
    batch_s: float | None = Field(None, gt=0)
    half_life_s: float | None = Field(None, gt=0)
    normalise_speed: bool | None = None
    keep_dynamics: bool | None = None


class Plan(BaseModel):
    """A multi-block clinical session."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,60}$")
    description: str = ""
    config: str = Field(description="graph config: built-in name or path (relative to the plan)")
    subject_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
    seed: int | None = None
    confirm: bool = Field(True, description="wait for the operator before every block "
                                            "(`--yes` overrides)")
    blocks: list[PlanBlock] = Field(min_length=2)

    @model_validator(mode="after")
    def _shape(self) -> Plan:
        kinds = [b.kind for b in self.blocks]
        if kinds[0] != "calibration" or kinds.count("calibration") != 1:
            raise ValueError("blocks: the first block, and only it, must be kind 'calibration' "
                             "(the decoder is fit from it)")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"blocks: names must be unique, got {names}")
        if self.blocks[0].name != "calibration":
            raise ValueError("blocks: name the calibration block 'calibration'")
        return self


def load_plan(path: str | Path) -> tuple[Plan, GraphConfig]:
    """Read and validate a plan and build the graph config it runs.

    Raises
    ------
    ConfigError
        Naming the plan file, the key and the fix.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with name, config, blocks")
    if "nodes" in data and "blocks" not in data:
        raise ConfigError(f"{path}: this is a graph config, not a session plan. Fix: run it "
                          "with `bciarm run`, or write a plan naming it under `config:` "
                          "(see configs/plans/arm_rehab.yaml)")
    try:
        plan = Plan(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc, model=Plan)) from None
    ref = (path.parent / plan.config)
    base, _ = load_config(ref if ref.suffix in (".yaml", ".yml") and ref.exists() else plan.config)
    return plan, plan_config(plan, base, str(path))


def plan_config(plan: Plan, base: GraphConfig, source: str = "<plan>") -> GraphConfig:
    """``base`` with its protocol replaced by the plan's blocks (and the plan's subject/seed)."""
    cal = plan.blocks[0]
    cal_kw: dict[str, Any] = {"trials": cal.trials, "max_duration_s": cal.max_duration_s}
    if cal.lag_s is not None:
        cal_kw["lag_s"] = cal.lag_s
    blocks = []
    try:
        for b in plan.blocks[1:]:
            kw = {k: v for k, v in b.model_dump().items()
                  if v is not None and k in BlockSpec.model_fields and k != "kind"}
            blocks.append(BlockSpec(**kw, kind="closed_loop" if b.kind == "assessment" else b.kind))
        protocol = ProtocolSpec(calibration=CalibrationSpec(**cal_kw), blocks=blocks)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, ("blocks",))) from None
    update: dict[str, Any] = {"protocol": protocol, "name": plan.name}
    if plan.seed is not None:
        update["seed"] = plan.seed
    if plan.subject_id is not None:
        update["privacy"] = base.privacy.model_copy(update={"subject_id": plan.subject_id})
    return base.model_copy(update=update)


class PlanSession(ConsoleSession):
    """Run a :class:`Plan`: a :class:`ConsoleSession` that confirms each block and records
    the plan, each block's decoder and every operator action."""

    def __init__(self, plan: Plan, config: GraphConfig, *, plan_path: Path | None = None,
                 unattended: bool = False, **kwargs: Any) -> None:
        # Every block is confirmed: by the operator, or by `--yes` / `confirm: false`
        # (recorded as such).
        super().__init__(config, confirm_blocks=True,
                         unattended=unattended or not plan.confirm, **kwargs)
        self.plan = plan
        self.plan_path = plan_path
        self.kinds = {b.name: b.kind for b in plan.blocks}

    def _write_metadata(self, session_dir: Path) -> None:
        super()._write_metadata(session_dir)
        text = (self.plan_path.read_text(encoding="utf-8") if self.plan_path is not None
                else yaml.safe_dump(self.plan.model_dump(), sort_keys=False))
        (session_dir / "plan.yaml").write_text(text, encoding="utf-8")

    def _run_block(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.kinds.get(name) == "assessment":
            # The decoder alone: no assistance, unit gain (recorded like any operator setting).
            proto = self.runtime.node("protocol")  # type: ignore[union-attr]
            proto.announce("assist", level=0.0, by="plan")  # type: ignore[attr-defined]
            proto.announce("gain", gain=1.0, by="plan")  # type: ignore[attr-defined]
            self.runtime.deliver()  # type: ignore[union-attr]
        return super()._run_block(name, *args, **kwargs)

    def run(self) -> Any:
        result = super().run()
        self.write_plan_record(result)
        return result

    def write_plan_record(self, result: Any) -> Path:
        """``plan.json``: the blocks as run, who confirmed each, its decoders, every action."""
        from bciarm.record import LOG_NAME, read_messages

        assert self.session_dir is not None
        updates: list[tuple[float, str]] = []
        for _, msg in read_messages(self.session_dir / LOG_NAME, ("event",)):
            if msg.kind == "decoder_update":  # type: ignore[attr-defined]
                updates.append((msg.header.t_ns / NS_PER_S,
                                str(msg.data.get("path", ""))))  # type: ignore[attr-defined]
        ran = {b.name: b for b in result.blocks}
        rows = []
        for b in self.plan.blocks:
            r = ran.get(b.name)
            confirm = next((a for a in self.actions if a["action"] == "start"
                            and a["block"] == b.name), None)
            before = [p for t, p in updates if r is not None and t <= r.start_s]
            after = [p for t, p in updates if r is not None and t <= r.end_s + 1e-9]
            rows.append({"name": b.name, "kind": b.kind, "ran": r is not None,
                         "trials": r.trials if r else 0,
                         "start_s": r.start_s if r else None, "end_s": r.end_s if r else None,
                         "confirmed_by": confirm["by"] if confirm else None,
                         "decoder_at_start": before[-1] if before else None,
                         "decoder_after": after[-1] if after else None})
        record = {"name": self.plan.name, "plan_file": "plan.yaml", "unattended": self.unattended,
                  "subject_id": self.config.privacy.subject_id, "blocks": rows,
                  "operator_actions": self.actions,
                  "decoders": [{"t_s": t, "path": p} for t, p in updates]}
        out = self.session_dir / "plan.json"
        out.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        return out

"""Graph configs: YAML -> validated :class:`GraphConfig`.

A config names the nodes of a graph (in graph order), their kinds, types
(registry names) and parameters, and the session protocol.  Everything is
validated before anything starts; an error names the file, the key path and a
fix, e.g.::

    configs/my.yaml: nodes.source.params.n_channels: Input should be greater than 0
      (got -4). Fix: give a positive integer.

Node parameters are checked against the node class's own ``Params`` model
(resolved through :mod:`bciarm.registry`), so a typo in a deep key is caught
up front with a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bciarm import registry
from bciarm.space import TaskAxis, intent_space

NODE_KINDS = ("source", "decoder", "effector", "task")


class ConfigError(ValueError):
    """A config file is unreadable or invalid; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSpec(_Strict):
    """One node of the graph."""

    kind: Literal["source", "decoder", "effector", "task"]
    type: str = Field(description="registry name of the implementation")
    params: dict[str, Any] = Field(default_factory=dict)
    group: str | None = Field(default=None, description="process group (realtime runtime)")


class CalibrationSpec(_Strict):
    """Open-loop calibration block: the task drives the effector, the user watches."""

    trials: int = Field(16, gt=0)
    max_duration_s: float = Field(180.0, gt=0)
    lag_s: float = Field(
        0.15, ge=0, le=1.0,
        description="the user's intention trails the arm it watches by about the feedback "
                    "delay: neural bins are paired with the arm's velocity this long before",
    )


class BlockSpec(_Strict):
    """A block of trials after calibration.

    ``kind`` says what happens to the decoder: ``closed_loop`` leaves it alone;
    ``refit`` retrains it at the end of the block from the block's intention
    estimates (ReFIT-KF); ``clda`` updates C and Q every ``batch_s`` during the
    block (SmoothBatch, half-life ``half_life_s``). See bciarm.decoders.adapt.
    """

    name: str
    mode: Literal["closed_loop", "open_loop"] = "closed_loop"
    kind: Literal["closed_loop", "refit", "clda"] = "closed_loop"
    trials: int = Field(24, gt=0)
    max_duration_s: float = Field(300.0, gt=0)
    batch_s: float = Field(60.0, gt=0, description="clda: seconds of closed loop per update")
    half_life_s: float = Field(120.0, gt=0, description="clda: half-life of the old C and Q, s")
    normalise_speed: bool = Field(False, description="refit/clda: scale intention estimates to "
                                  "the calibration block's speed (default: decoded speed kept)")
    label_speed: Literal["decoded", "profile"] = Field(
        "decoded", description="refit/clda: speed of the intention estimates: 'decoded' (Gilja et "
        "al. 2012) or 'profile' (the calibration's speed at the same distance to the target)")
    feedback_delay_s: float = Field(
        0.0, ge=0.0, le=1.0, description="refit/clda with label_speed 'profile': aim the "
        "intention estimate from where the effector was this long before the bin (the user's "
        "visual feedback delay; 0: its current position, as Gilja et al. 2012)")
    keep_dynamics: bool = Field(False, description="refit: keep A and W from calibration, refit "
                                "only C and Q")
    position_feedback: bool = Field(
        False, description="refit: the refit decoder models position and velocity and runs with "
        "position feedback (ReFIT-KF, Gilja et al. 2012); the decoder node needs "
        "position_feedback: true")
    process_noise_scale: float = Field(
        1.0, gt=0, le=100, description="refit: multiply the refit filter's fitted velocity process "
        "noise W (1: as fit; above 1: less smoothing, more noise); a documented deviation")
    gain: float | None = Field(
        None, gt=0, le=3, description="refit: output gain of the refit decoder (None: the old "
        "decoder's); a documented deviation (clinical ReFIT sets one)")

    @model_validator(mode="after")
    def _adaptation_needs_closed_loop(self) -> "BlockSpec":
        if self.kind != "closed_loop" and self.mode != "closed_loop":
            raise ValueError(f"block {self.name!r}: kind {self.kind!r} adapts the decoder from "
                             f"closed-loop data; set mode: closed_loop (or kind: closed_loop)")
        return self


class ProtocolSpec(_Strict):
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    blocks: list[BlockSpec] = Field(
        default_factory=lambda: [BlockSpec(name="closed_loop_1"), BlockSpec(name="closed_loop_2")]
    )

    @field_validator("blocks")
    @classmethod
    def _unique_names(cls, blocks: list[BlockSpec]) -> list[BlockSpec]:
        names = [b.name for b in blocks]
        if len(set(names)) != len(names) or "calibration" in names:
            raise ValueError("block names must be unique and must not be 'calibration'")
        return blocks


class RecordSpec(_Strict):
    enabled: bool = True
    flush_every: int = Field(256, gt=0, description="flush the log after this many records")


class RealtimeSpec(_Strict):
    """Settings of the real-time runtime (``bciarm run CONFIG --mode realtime``)."""

    bind: str = Field("127.0.0.1", description="address the broker and control channel bind "
                                               "(0.0.0.0 to let nodes on other hosts join)")
    xsub_port: int = Field(0, ge=0, le=65535, description="broker port publishers connect to "
                                                         "(0: a random free port)")
    xpub_port: int = Field(0, ge=0, le=65535, description="broker port subscribers connect to "
                                                         "(0: a random free port)")
    heartbeat_s: float = Field(0.1, gt=0, le=5, description="heartbeat period; a node silent "
                                                            "for 2.5 periods is restarted")
    keys_dir: str | None = Field(None, description="CURVE keys (bciarm keys generate DIR)")
    remote: list[str] = Field(default_factory=list, description="groups started by hand on "
                                                                 "other hosts (not spawned)")
    priority: int = Field(0, ge=0, le=99, description="SCHED_FIFO priority of the node and "
                                                      "broker processes where the OS allows it "
                                                      "(root or RLIMIT_RTPRIO); 0: normal")
    local_fast_path: bool = Field(True, description="data between node processes of this host "
                                                    "over Unix sockets (bciarm.bus.fastpath) "
                                                    "instead of ZeroMQ; false: ZeroMQ only. "
                                                    "Off with security: curve")
    effector_priority: int = Field(20, ge=0, le=99, description="SCHED_FIFO priority of "
                                   "processes that hold an effector (the last hop wins the "
                                   "CPU) where the OS allows it, else nice -10 where allowed, "
                                   "else normal (logged); 0: as the other processes")
    nice: int = Field(0, ge=0, le=19, description="nice value of the other node processes "
                                                  "and the broker (raising it needs no "
                                                  "privilege)")
    supervisor_nice: int = Field(-5, ge=-20, le=19, description="nice value of the "
                                 "supervising thread (it reads heartbeats and holds "
                                 "effectors) where allowed; otherwise it stays (logged)")
    spawn_nice: int = Field(10, ge=0, le=19, description="nice value at which replacement "
                                                         "processes do their imports; they "
                                                         "take `nice` when they start (where "
                                                         "the OS lets them lower it)")

    @model_validator(mode="after")
    def _effectors_first(self) -> "RealtimeSpec":
        if 0 < self.effector_priority < self.priority:
            raise ValueError(f"realtime.effector_priority ({self.effector_priority}) is below "
                             f"realtime.priority ({self.priority}): effector processes must "
                             f"not yield to the others; set effector_priority >= "
                             f"{self.priority} (or 0 to use priority)")
        return self


class PrivacySpec(_Strict):
    """What a session records about people and machines (see bciarm.privacy)."""

    subject_id: str = Field("sim-0001", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$",
                            description="pseudonymous subject ID (never a name): letters, "
                                        "digits, - _ . ; at most 32 characters")
    record_host: bool = Field(False, description="write the host name into session.json")
    record_user: bool = Field(False, description="write the user name into session.json and "
                                                 "keep home folders in the recorded command")


class GraphConfig(_Strict):
    """A runnable graph and its session protocol."""

    name: str
    description: str = ""
    seed: int = 0
    tick_s: float = Field(0.01, gt=0, le=1.0, description="base clock period of the inline runtime")
    axes: list[TaskAxis] = Field(default_factory=lambda: ["x", "y"], min_length=1)
    nodes: dict[str, NodeSpec]
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    record: RecordSpec = Field(default_factory=RecordSpec)
    security: Literal["none", "curve"] = "none"
    realtime: RealtimeSpec = Field(default_factory=RealtimeSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)

    @field_validator("axes")
    @classmethod
    def _unique_axes(cls, axes: list[str]) -> list[str]:
        if len(set(axes)) != len(axes):
            raise ValueError("axes must not repeat")
        intent_space(axes)  # world, drive or joint axes, not a mix
        return axes

    @model_validator(mode="after")
    def _one_of_each(self) -> "GraphConfig":
        kinds = [n.kind for n in self.nodes.values()]
        for kind in ("source", "effector", "task"):
            if kind not in kinds:
                raise ValueError(f"the graph needs a node of kind {kind!r}")
        return self

    def nodes_of(self, kind: str) -> list[str]:
        return [name for name, spec in self.nodes.items() if spec.kind == kind]


# --------------------------------------------------------------------------- errors


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _fix_hint(err: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    loc = err["loc"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1]) if model else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            return f"Fix: did you mean {close[0]!r}?"
        return f"Fix: remove it; allowed keys here: {', '.join(allowed) or '(none)'}"
    if kind == "missing":
        return f"Fix: add the key {loc[-1]!r}."
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), "?")
        words = {"greater_than": "greater than", "greater_than_equal": "at least",
                 "less_than": "less than", "less_than_equal": "at most"}[kind]
        return f"Fix: give a value {words} {bound}."
    if kind == "literal_error":
        return f"Fix: use one of {ctx.get('expected', '')}."
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"Fix: give a {kind.split('_')[0]}."
    return "Fix: see the README's configuration section."


def _allowed_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model addressed by ``loc`` (best effort)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            continue  # a dict key such as a node name
        current = field.annotation
        # unwrap dict[str, Model] / list[Model]
        args = getattr(current, "__args__", ())
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def format_validation_error(source: str, exc: ValidationError, prefix: tuple[Any, ...] = (),
                            model: type[BaseModel] | None = None) -> str:
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        hint = _fix_hint({**err, "loc": tuple(err["loc"])}, model)
        lines.append(f"{source}: {_key_path(loc)}: {err['msg']}{shown}. {hint}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a built-in config."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return path
    try:
        return registry.config_file(str(name_or_path))
    except registry.RegistryError as exc:
        raise ConfigError(str(exc)) from None


def node_class(spec: NodeSpec) -> type:
    """The Node class a spec instantiates (decoders are wrapped by DecoderNode)."""
    if spec.kind == "decoder":
        from bciarm.decoders.node import DecoderNode

        return DecoderNode
    return registry.resolve(spec.kind, spec.type)


def node_params(config: GraphConfig, name: str) -> dict[str, Any]:
    """A node's params with graph-level defaults (``axes``) filled in."""
    spec = config.nodes[name]
    params = dict(spec.params)
    cls = node_class(spec)
    fields = getattr(getattr(cls, "Params", None), "model_fields", {})
    if "axes" in fields and "axes" not in params:
        params["axes"] = list(config.axes)
    if spec.kind == "decoder":
        params.setdefault("decoder", spec.type)
    return params


def _validate_nodes(config: GraphConfig, source: str) -> None:
    problems = []
    for name, spec in config.nodes.items():
        where = ("nodes", name)
        try:
            cls = node_class(spec)
        except registry.RegistryError as exc:
            problems.append(f"{source}: {_key_path(where + ('type',))}: {exc}")
            continue
        try:
            cls.Params(**node_params(config, name))
        except ValidationError as exc:
            problems.append(format_validation_error(source, exc, where + ("params",), cls.Params))
        except (TypeError, ValueError) as exc:
            problems.append(f"{source}: {_key_path(where + ('params',))}: {exc}")
    # A ReFIT-KF block (position_feedback) hands over a decoder whose position
    # states must be fed the effector's position by its decoder node.
    for i, block in enumerate(config.protocol.blocks):
        if block.kind == "refit" and block.position_feedback:
            off = [n for n in config.nodes_of("decoder")
                   if not config.nodes[n].params.get("position_feedback", False)]
            if off:
                problems.append(
                    f"{source}: protocol.blocks.{i}.position_feedback: the refit decoder needs "
                    f"position feedback from its decoder node. Fix: set "
                    f"nodes.{off[0]}.params.position_feedback: true (or drop it from the block)")
    if problems:
        raise ConfigError("\n".join(problems))


def parse_config(data: Any, source: str = "<config>") -> GraphConfig:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with 'name' and 'nodes'")
    try:
        config = GraphConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, model=GraphConfig)) from None
    _validate_nodes(config, source)
    return config


def apply_overrides(data: Any, overrides: Sequence[str], source: str) -> Any:
    """Set ``KEY=VALUE`` overrides (dotted key path, YAML value) in a parsed config document.

    ``nodes.source.params.n_channels=48`` sets that parameter; missing
    intermediate mappings are created, and the result is validated as usual.

    Raises
    ------
    ConfigError
        A malformed override, or a key path through something that is not a mapping.
    """
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: --set {item!r}: expected KEY=VALUE, e.g. "
                              "nodes.source.params.n_channels=48")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: --set {key}: {'.'.join(parts[:-1])} is not a mapping")
        node[parts[-1]] = value
    return data


def load_config(name_or_path: str | Path,
                overrides: Sequence[str] = ()) -> tuple[GraphConfig, Path]:
    """Load and validate a config by path or built-in name.

    ``overrides`` are ``KEY=VALUE`` strings applied before validation
    (:func:`apply_overrides`; ``bciarm run --set``).

    Returns
    -------
    config : GraphConfig
    path : Path
        The file it came from.

    Raises
    ------
    ConfigError
        Naming the file, the key and the fix.
    """
    path = resolve_config_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)}). "
                          "Fix: check indentation and quoting there.") from None
    if overrides:
        data = apply_overrides(data, overrides, str(path))
    return parse_config(data, str(path)), path


def dump_config(config: GraphConfig) -> str:
    """The resolved config as YAML (defaults filled in), for the session folder."""
    data = config.model_dump(mode="json")
    for name, spec in config.nodes.items():
        params = node_class(spec).Params(**node_params(config, name))
        data["nodes"][name]["params"] = params.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)

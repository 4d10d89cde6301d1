"""``RunConfig``: one frozen schema per concern, composed, with its dict form.

Every section is a ``@dataclass(frozen=True, kw_only=True)`` whose fields carry attribute docstrings
(read by ``config.overrides`` for ``--help``); cross-field checks live in ``__post_init__`` and
raise ``ConfigError`` naming the field. Defaults reproduce the contest's naive baseline
(seed-techniques §5).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from pgolf.config.data import DataConfig
from pgolf.config.eval import EvalConfig
from pgolf.config.model import ModelConfig
from pgolf.config.optim import OptimConfig
from pgolf.config.pack import PackConfig
from pgolf.config.quant import QuantConfig
from pgolf.config.train import TrainConfig
from pgolf.errors import ConfigError
from pgolf.tracks import get_track

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "quant": QuantConfig,
    "pack": PackConfig,
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    preset: str = "baseline"
    """Name of the preset this config came from (informational)."""
    track: str = "10min-16mb"
    """Track whose caps the run is judged by."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    pack: PackConfig = field(default_factory=PackConfig)

    def __post_init__(self) -> None:
        get_track(self.track)
        if self.eval.method != "plain" and self.eval.stride > self.eval_seq_len:
            raise ConfigError(
                f"eval.stride={self.eval.stride} is longer than the evaluation window "
                f"({self.eval_seq_len} tokens)"
            )
        fracs = self.train.pass_fracs
        if fracs and len(fracs) != self.model.loop_repeats:
            raise ConfigError(
                f"train.loop_pass_fracs has {len(fracs)} fractions for model.loop_repeats="
                f"{self.model.loop_repeats}: give one per extra pass"
            )
        if self.train.averaging == "swa" and self.optim.min_lr >= self.train.swa_start_lr_mul:
            raise ConfigError(
                f"optim.min_lr={self.optim.min_lr} is not below train.swa_start_lr_mul="
                f"{self.train.swa_start_lr_mul}: SWA would never collect"
            )
        shared = self.model.recurrent_blocks or self.model.loop_repeats
        if (self.quant.qat or self.quant.nekp) and self.quant.qat_scope == "shared" and not shared:
            raise ConfigError(
                "quant.qat_scope=shared: this model has no block that runs twice (model.recurrent_blocks, "
                "model.loop_repeats)"
            )
        cap, reserve = self.train.max_wallclock_seconds, self.quant.gptq_reserve_seconds
        if self.quant.calibrates and cap and reserve >= cap:
            raise ConfigError(
                f"quant.gptq_reserve_seconds={reserve:g} must be below train.max_wallclock_seconds={cap:g} "
                "(the steps end that long before the cap)"
            )

    @property
    def eval_seq_len(self) -> int:
        return self.eval.seq_len or self.train.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of ``RunConfig.to_dict``; unknown keys are errors."""
    top = {f.name for f in dataclasses.fields(RunConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key not in top:
            raise ConfigError(f"unknown config key {key!r}")
        kwargs[key] = section_from_dict(key, value) if key in SECTIONS else value
    return RunConfig(**kwargs)


def section_from_dict(name: str, value: dict[str, Any]) -> Any:
    """One section from its dict form; unknown keys are errors naming the section."""
    cls = SECTIONS[name]
    if not isinstance(value, dict):
        raise ConfigError(f"config section {name} must be a mapping, got {type(value).__name__}")
    extra = set(value) - {f.name for f in dataclasses.fields(cls)}
    if extra:
        raise ConfigError(f"unknown config keys in {name}: {sorted(extra)}")
    return cls(**value)


def all_fields() -> list[str]:
    """Every dotted config key, in declaration order."""
    out = []
    for f in dataclasses.fields(RunConfig):
        if f.name in SECTIONS:
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(SECTIONS[f.name])]
        else:
            out.append(f.name)
    return out


def format_config(cfg: RunConfig) -> str:
    """``key: value`` lines, one per dotted field (the log's Hyperparameters block)."""
    lines = []
    for key in all_fields():
        section, _, name = key.rpartition(".")
        obj = getattr(cfg, section) if section else cfg
        lines.append(f"{key}: {getattr(obj, name)}")
    return "\n".join(lines)


def field_kind(key: str) -> str:
    """The declared type of dotted field ``key``: ``int``, ``float``, ``bool`` or ``str``."""
    section, _, name = key.rpartition(".")
    cls = SECTIONS[section] if section else RunConfig
    kind = next(f.type for f in dataclasses.fields(cls) if f.name == name)
    return kind if isinstance(kind, str) else kind.__name__  # annotations are strings in pgolf


def parse_value(key: str, text: str, source: str = "") -> Any:
    """Parse ``text`` as the declared type of field ``key``; errors name ``source`` (the flag or
    environment variable the text came from), default ``--key``."""
    kind = field_kind(key)
    try:
        if kind == "bool":
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == "int":
            return int(text.replace("_", ""))
        if kind == "float":
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"{source or '--' + key}: expected {kind}, got {text!r}") from None


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``cfg`` with dotted keys replaced; string values are parsed as the field's type."""
    keys = all_fields()
    per_section: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        if isinstance(value, str) and field_kind(key) != "str":
            value = parse_value(key, value)
        section, _, name = key.rpartition(".")
        if section:
            per_section.setdefault(section, {})[name] = value
        else:
            top[name] = value
    for section, values in per_section.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **top)

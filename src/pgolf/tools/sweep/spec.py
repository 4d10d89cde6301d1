"""The sweep file of ``pgolf sweep`` (tooling): what a sweep searches, checked before any run, and
the overrides of each of its runs. ``sweep.study`` runs it.

A sweep is declared in a TOML file:

    # shape.toml
    preset = "baseline-cpu"            # the base: a preset or a config file
    trials = 24                        # trials in the study (a resumed sweep runs the missing ones)
    seeds = [1337]                     # each trial's value is the mean over these seeds
    pruner = "median"                  # median | halving | none (from the runs' validations)
    val_every = 50                     # validation cadence of a trial's run, for the pruner
    steps = 0                          # > 0: screen at this many steps, no wall clock (time not judged)
    finalists = 3                      # then re-run the best trials with final_seeds
    final_seeds = [1337, 42, 2025]
    sampler_seed = 0
    nproc_per_node = 0                 # > 1: each trial is a torchrun job of this many ranks (0: every GPU)
    hardware = ""                      # pin: "8x*H100*" | "any" | "" (the kind of the machine that starts it)
    heartbeat_s = 60                   # a trial whose worker is silent 3 heartbeats is failed, never counted
    split = "dev"                      # what every run scores: dev (default) | val (explicit opt-out)

    [fixed]                            # overrides for every trial
    "data.root" = "/tmp/prose"

    [space]                            # dotted key -> a range or a list of choices
    "model.num_layers" = {low = 2, high = 6}
    "optim.matrix_lr" = {low = 0.01, high = 0.1, log = true}
    "train.seq_len" = [256, 512, 1024]

Every run scores the dataset's dev split (``data.score_split=dev``; ``pgolf data build --dev-docs``), so
the settings a sweep chooses never saw the validation set its final scores read; a dataset without a
dev split is refused before any run unless the file says ``split = "val"`` (``tools.data.splits``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgolf.config.run import all_fields, apply_overrides, field_kind
from pgolf.errors import ConfigError
from pgolf.tools.config_files import as_flag, is_config_file, resolve
from pgolf.tools.data.splits import SEARCH_SPLITS

PRUNERS = ("median", "halving", "none")


@dataclass(frozen=True)
class Param:
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if field_kind(self.key) == "int":  # the field's type decides, not how the bounds are written
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class SweepSpec:
    base: str
    space: tuple[Param, ...]
    fixed: dict[str, str] = field(default_factory=dict)
    trials: int = 20
    seeds: tuple[int, ...] = (1337,)
    pruner: str = "median"
    val_every: int = 50
    steps: int = 0
    finalists: int = 0
    final_seeds: tuple[int, ...] = (1337, 42, 2025)
    sampler_seed: int = 0
    startup_trials: int = 5
    """Trials sampled at random before TPE models the space (and before the median pruner judges)."""
    nproc_per_node: int = 0
    """Processes per trial: > 1 runs each trial as ``torchrun --nproc_per_node=N`` (one GPU each, so
    one box's GPUs per trial); 1 one process; 0 every GPU of the machine (one process without any)."""
    hardware: str = ""
    """The machine kind every trial runs on, a pattern matched against ``machine_kind`` (``"8x*H100*"``,
    ``"1x*H200*"``, ``"cpu*"``): a worker on another kind refuses to join, so results of different
    machines are never ranked together. "": the kind of the machine that starts the study; "any": kinds
    mix (screening at fixed steps, where a trial's speed is not judged)."""
    heartbeat_s: int = 60
    """Seconds between a running trial's heartbeats in the study: a trial silent for three (its worker
    was killed, its machine lost) is failed and never counted, and its work is taken again."""
    split: str = "dev"
    """The split every run scores (``data.score_split``): ``dev``, or ``val`` to tune on validation."""


def _param(key: str, value: Any, path: Path) -> Param:
    if key not in all_fields():
        raise ConfigError(f"{path}: [space] names {key!r}, which is not a config key")
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{path}: [space] {key} has no choices")
        return Param(key, choices=tuple(value))
    if isinstance(value, dict) and {"low", "high"} <= set(value) <= {"low", "high", "log"}:
        low, high = value["low"], value["high"]
        if (
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
            or low >= high
        ):
            raise ConfigError(f"{path}: [space] {key} needs numbers low < high, got {low!r}, {high!r}")
        if value.get("log") and low <= 0:
            raise ConfigError(f"{path}: [space] {key} has log = true, so low must be > 0, got {low!r}")
        if field_kind(key) not in ("int", "float"):
            raise ConfigError(f"{path}: [space] {key} is a {field_kind(key)}: give a list of choices")
        return Param(key, low=low, high=high, log=bool(value.get("log", False)))
    raise ConfigError(
        f"{path}: [space] {key} must be a list of choices or {{low, high[, log]}}, got {value!r}"
    )


def load_spec(path: Path) -> SweepSpec:
    """Parse and check a sweep file (every choice must make a valid config)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    known = set(SweepSpec.__dataclass_fields__) - {"base"} | {"preset"}
    if unknown := set(data) - known:
        raise ConfigError(f"{path}: unknown sweep keys {sorted(unknown)}; expected {sorted(known)}")
    if (
        not isinstance(data.get("preset"), str)
        or not isinstance(data.get("space"), dict)
        or not data["space"]
    ):
        raise ConfigError(f'{path}: needs `preset = "NAME"` and a non-empty [space] table')
    if data.get("split", "dev") not in SEARCH_SPLITS:
        raise ConfigError(f"{path}: split must be one of {SEARCH_SPLITS}, got {data['split']!r}")
    if "data.score_split" in {*data.get("fixed", {}), *data["space"]}:
        raise ConfigError(f'{path}: data.score_split is set by the sweep: write split = "dev" or "val"')
    if data.get("pruner", "median") not in PRUNERS:
        raise ConfigError(f"{path}: pruner must be one of {PRUNERS}, got {data['pruner']!r}")
    for key in ("seeds", "final_seeds"):
        value = data.get(key, [1337])
        if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
            raise ConfigError(f"{path}: {key} must be a non-empty list of integers, got {value!r}")
    counts = ("trials", "val_every", "steps", "finalists", "sampler_seed", "startup_trials", "nproc_per_node")
    for key in counts:
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0):
            raise ConfigError(f"{path}: {key} must be a non-negative integer, got {data[key]!r}")
    if not isinstance(data.get("hardware", ""), str):
        raise ConfigError(
            f'{path}: hardware must be a string (a pattern, "any" or ""), got {data["hardware"]!r}'
        )
    beat = data.get("heartbeat_s", 60)
    if not isinstance(beat, int) or isinstance(beat, bool) or beat < 1:
        raise ConfigError(f"{path}: heartbeat_s must be a positive integer (seconds), got {beat!r}")
    if is_config_file(data["preset"]) and not Path(data["preset"]).is_absolute():
        data["preset"] = str(Path(path).parent / data["preset"])  # relative to the sweep file
    fixed = {k: as_flag(v) for k, v in data.get("fixed", {}).items()}
    spec = SweepSpec(
        base=data["preset"],
        space=tuple(_param(k, v, path) for k, v in data["space"].items()),
        fixed=fixed,
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in data.items()
            if k not in ("preset", "space", "fixed")
        },
    )
    for p in spec.space:  # every choice and both ends of every range make a config
        for value in p.choices or (p.low, p.high):
            try:
                apply_overrides(resolve(spec.base), {**spec.fixed, p.key: str(value)})
            except ConfigError as e:
                raise ConfigError(f"{path}: [space] {p.key}={value!r}: {e}") from None
    return spec


def trial_overrides(spec: SweepSpec, params: dict[str, Any], seed: int) -> dict[str, str]:
    """Every override of one run: fixed, the trial's parameters, the seed and the screening mode."""
    out = {**spec.fixed, **{k: as_flag(v) for k, v in params.items()}}
    out["train.seed"] = str(seed)
    if spec.split == "dev":  # validation is the default; a val sweep's runs keep their old overrides
        out["data.score_split"] = "dev"
    if spec.pruner != "none":
        out["train.val_every"] = str(spec.val_every)
    if spec.steps:
        out.update({"train.iterations": str(spec.steps), "train.max_wallclock_seconds": "0"})
    return out

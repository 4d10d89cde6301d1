"""The artifact's meta: everything besides the weights that scoring an artifact needs or reports,
written from the run's configs and read back into them. One schema, one place.

Besides the model config (to rebuild the network) it records what the artifact was scored on
(tokenizer and validation-token digests, so ``pgolf eval`` can tell an official re-score from a
score on other data) and the counted code it was trained with (digest and bytes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pgolf.config.data import DataConfig
from pgolf.config.eval import EvalConfig
from pgolf.config.model import ModelConfig
from pgolf.config.pack import PackConfig
from pgolf.config.quant import QuantConfig
from pgolf.errors import ArtifactError, PgolfError
from pgolf.quant.policy import scheme_label
from pgolf.tracks import get_track


@dataclass(frozen=True, kw_only=True)
class ArtifactMeta:
    pgolf_version: str
    preset: str
    track: str
    steps: int
    looping: bool | int
    """Extra passes of the middle-range loop on at export (the network's depth depends on it); artifacts
    written before progressive recurrence hold a flag meaning all of them."""
    model: ModelConfig
    data: DataConfig
    eval: EvalConfig
    """Evaluation settings of the official score, with ``seq_len`` resolved."""
    quant: QuantConfig
    pack: PackConfig
    tokenizer_sha256: str
    tokenizer_vocab_size: int
    val_tokens: int
    """Length of the validation token stream the official score reads."""
    val_sha256: str
    """Digest of that stream (``data.valset.ValidationSet.sha256``)."""
    code_form: str
    """Form of the bundled train_gpt.py that counts (readable, minified, compressed)."""
    code_bytes: int
    code_sha256: str
    """Digest of that file."""
    sources_sha256: str
    """Digest of the counted sources it was built from (``pack.size.sources_sha256``)."""
    train_seconds: float
    """Measured training time (the clock's, calibration included)."""
    train_cap_seconds: float
    """The run's configured training cap (train.max_wallclock_seconds; 0: none)."""

    @property
    def label(self) -> str:
        """The scheme's name in log lines, e.g. ``int8_zlib``."""
        return scheme_label(self.quant, self.pack.compressor)

    @property
    def size_label(self) -> str:
        """The scheme's name in the size lines, e.g. ``int8+zlib``."""
        return scheme_label(self.quant, self.pack.compressor, "+")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "artifact") -> ArtifactMeta:
        """Validate and rebuild; any missing or unknown key, wrongly typed or out-of-range value is an
        ArtifactError (an artifact is input: its meta is checked like any other file)."""
        sections = {
            "model": ModelConfig,
            "data": DataConfig,
            "eval": EvalConfig,
            "quant": QuantConfig,
            "pack": PackConfig,
        }
        if not isinstance(d, dict):
            raise ArtifactError(f"{source}: meta must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        missing, extra = names - set(d), set(d) - names
        if missing or extra:
            raise ArtifactError(
                f"{source}: meta does not match this pgolf's schema "
                f"(missing {sorted(missing)}, unknown {sorted(extra)})"
            )
        _check_types(cls, {k: v for k, v in d.items() if k not in sections}, source, "")
        for key, section in sections.items():
            if not isinstance(d[key], dict):
                raise ArtifactError(f"{source}: meta field {key} must be an object")
            _check_types(section, d[key], source, f"{key}.")
        try:
            kwargs = {k: (sections[k](**v) if k in sections else v) for k, v in d.items()}
            get_track(kwargs["track"])
        except (TypeError, PgolfError) as e:
            raise ArtifactError(f"{source}: bad meta ({e})") from None
        for name in (
            "steps",
            "tokenizer_vocab_size",
            "val_tokens",
            "code_bytes",
            "train_seconds",
            "train_cap_seconds",
        ):
            if kwargs[name] < 0:
                raise ArtifactError(f"{source}: meta field {name} must be >= 0, got {kwargs[name]}")
        looping, repeats = kwargs["looping"], kwargs["model"].loop_repeats
        if not (type(looping) is bool or (type(looping) is int and 0 <= looping <= repeats)):
            raise ArtifactError(
                f"{source}: meta field looping must be a flag or a pass count in [0, model.loop_repeats="
                f"{kwargs['model'].loop_repeats}], got {looping!r}"
            )
        if kwargs["eval"].seq_len < 1:
            raise ArtifactError(f"{source}: meta field eval.seq_len must be >= 1")
        return cls(**kwargs)


def _check_types(cls: type, values: dict[str, Any], source: str, prefix: str) -> None:
    """JSON values against the dataclass annotations: int (not bool), float (finite; ints allowed),
    bool, str. Fields of other types are left to the class's own checks."""
    hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for name, value in values.items():
        want = hints.get(name)
        ok = {
            "int": type(value) is int,
            "float": type(value) in (int, float) and math.isfinite(value),
            "bool": type(value) is bool,
            "str": type(value) is str,
        }.get(want, True)
        if not ok:
            raise ArtifactError(f"{source}: meta field {prefix}{name} must be {want}, got {value!r:.40}")

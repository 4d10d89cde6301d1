"""The artifact's meta: everything besides the weights that scoring an artifact needs or reports,
written from the run's configs and read back into them. One schema, one place.

Besides the model config (to rebuild the network) it records what the artifact was scored on
(tokenizer and validation-token digests, so ``pgolf eval`` can tell an official re-score from a
score on other data) and the counted code it was trained with (digest and bytes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pgolf.config.data import DataConfig
from pgolf.config.eval import EvalConfig
from pgolf.config.model import ModelConfig
from pgolf.config.pack import ExportConfig
from pgolf.errors import ArtifactError, PgolfError
from pgolf.quant.policy import scheme_label


@dataclass(frozen=True, kw_only=True)
class ArtifactMeta:
    pgolf_version: str
    preset: str
    track: str
    steps: int
    looping: bool
    """Whether the middle-range loop was on at export (the network's depth depends on it)."""
    model: ModelConfig
    data: DataConfig
    eval: EvalConfig
    """Evaluation settings of the official score, with ``seq_len`` resolved."""
    export: ExportConfig
    scheme: str
    """Quantiser family of the weights (``int8``)."""
    tokenizer_sha256: str
    tokenizer_vocab_size: int
    val_tokens: int
    """Length of the validation token stream the official score reads."""
    val_sha256: str
    """Digest of that stream (``data.valset.ValidationSet.sha256``)."""
    code_sha256: str
    code_bytes: int

    @property
    def label(self) -> str:
        """The scheme's name in log lines, e.g. ``int8_zlib``."""
        return scheme_label(self.scheme, self.export.compressor)

    @property
    def size_label(self) -> str:
        """The scheme's name in the size lines, e.g. ``int8+zlib``."""
        return f"{self.scheme}+{self.export.compressor}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "artifact") -> ArtifactMeta:
        """Validate and rebuild; any missing key, unknown key or bad value is an ArtifactError."""
        sections = {"model": ModelConfig, "data": DataConfig, "eval": EvalConfig, "export": ExportConfig}
        names = {f.name for f in dataclasses.fields(cls)}
        missing, extra = names - set(d), set(d) - names
        if missing or extra:
            raise ArtifactError(
                f"{source}: meta does not match this pgolf's schema "
                f"(missing {sorted(missing)}, unknown {sorted(extra)})"
            )
        try:
            kwargs = {k: (sections[k](**v) if k in sections else v) for k, v in d.items()}
        except (TypeError, PgolfError) as e:
            raise ArtifactError(f"{source}: bad meta ({e})") from None
        for f in dataclasses.fields(cls):
            want = {"str": str, "int": int, "bool": bool}.get(str(f.type))
            if want is not None and type(kwargs[f.name]) is not want:
                raise ArtifactError(f"{source}: meta field {f.name} must be {want.__name__}")
        return cls(**kwargs)

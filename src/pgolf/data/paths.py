"""Where a config's data lives, and its tokenizer checked against the model vocabulary."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pgolf.config.data import DataConfig
from pgolf.errors import DataError


@dataclass(frozen=True)
class DataPaths:
    dataset_dir: Path
    tokenizer: Path


def data_root(cfg: DataConfig) -> Path:
    """data.root, else $PGOLF_DATA_ROOT, else ./data. $PGOLF_DATA (the name until 2026-12-04) is
    refused where it would be read: ignored, it would send a run to ./data unannounced."""
    if cfg.root:
        return Path(cfg.root)
    if "PGOLF_DATA" in os.environ and "PGOLF_DATA_ROOT" not in os.environ:
        raise DataError(
            "$PGOLF_DATA is not read: the data root's variable is PGOLF_DATA_ROOT (renamed "
            "2026-12-04); set that instead, or pass --data.root"
        )
    return Path(os.environ.get("PGOLF_DATA_ROOT", "data"))


def resolve_data(cfg: DataConfig) -> DataPaths:
    """Relative paths resolve against the data root (``data_root``)."""
    root = data_root(cfg)
    return DataPaths(root / cfg.dataset, root / cfg.tokenizer)


def load_tokenizer(path: Path, vocab_size: int):
    """A SentencePiece processor whose vocabulary fits ``vocab_size``."""
    import sentencepiece as spm

    if not path.is_file():
        raise DataError(f"{path}: tokenizer model not found (set data.tokenizer / data.root)")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    if sp.vocab_size() > vocab_size:
        raise DataError(
            f"vocab mismatch: tokenizer {path} has {sp.vocab_size()} pieces but model.vocab_size={vocab_size}"
        )
    return sp

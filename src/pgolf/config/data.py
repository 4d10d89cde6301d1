"""Where the training and validation data and the tokenizer live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    SECTION: ClassVar[str] = "data"

    root: str = ""
    """Data root; empty means $PGOLF_DATA_ROOT, else ./data. Relative dataset/tokenizer paths resolve here.
    A command line run records $PGOLF_DATA_ROOT here, made absolute; the bundled file never bakes it."""
    dataset: str = "datasets/fineweb10B_sp1024"
    """Folder with the train and val shards (contest layout)."""
    tokenizer: str = "tokenizers/fineweb_1024_bpe.model"
    """SentencePiece model used to build the byte tables for val_bpb."""
    train_pattern: str = "fineweb_train_*.bin"
    """Glob of training shards inside the dataset folder, read in sorted order."""
    val_pattern: str = "fineweb_val_*.bin"
    """Glob of validation shards inside the dataset folder."""

"""Where the training and validation data and the tokenizer live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.errors import ConfigError


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
    score_split: str = "val"
    """The split every score of a run reads: ``val`` (data.val_pattern), or ``dev`` (the dataset's dev
    split, ``fineweb_dev_*.bin``, carved from the training documents by ``pgolf data build
    --dev-docs``) to tune settings without reading validation. A dev score is labelled dev and is
    never official."""

    def __post_init__(self) -> None:
        if self.score_split not in ("val", "dev"):
            raise ConfigError(f"data.score_split={self.score_split!r}; expected val or dev")

"""Every error pgolf raises on purpose: ``PgolfError`` and one subclass per concern.

The CLI catches the base class and prints the message (which names the file, field or value at
fault) with exit status 2. Each subclass is also a ``ValueError``: bad input, not a bug.
"""

from __future__ import annotations


class PgolfError(ValueError):
    """Base of every deliberate pgolf error; the message says what is wrong and where."""


class ConfigError(PgolfError):
    """A config value, key or combination is not acceptable; the message names the field."""


class DataError(PgolfError):
    """Data is missing, mismatched or not allowed (vocabulary, train/validation overlap)."""


class ShardError(DataError):
    """A shard file is missing, corrupt, truncated or of the wrong format; the message names it."""


class DataBuildError(DataError):
    """Input documents cannot be turned into a dataset; the message names the input."""


class FetchError(DataError):
    """The published dataset cannot be fetched (offline, missing file, size mismatch)."""


class ArtifactError(PgolfError):
    """An artifact file is corrupt, truncated, of an unknown format, or does not fit its model."""


class CheckpointError(PgolfError):
    """A checkpoint cannot be resumed (written with another config, or unreadable)."""


class Interrupted(PgolfError):
    """The user stopped a run (Ctrl-C): the message says where, and what was saved."""

    exit_status = 130

    def __init__(self, message: str, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable

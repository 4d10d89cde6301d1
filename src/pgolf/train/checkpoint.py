"""Resumable checkpoints: everything a run needs to continue bit-exactly (weights, optimizer,
loader position, loss history, weight average, loop state, clock), written atomically by rank 0 and
loaded with ``weights_only=True`` (no arbitrary unpickling)."""

from __future__ import annotations

from pathlib import Path

import torch

from pgolf.errors import CheckpointError
from pgolf.fileio import atomic_file

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_file(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path, config: dict, device: torch.device) -> dict | None:
    """The saved state, or None when there is no checkpoint; refuses one written with another config."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for a damaged or foreign file
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if state.get("config") != config:
        raise CheckpointError(f"{path}: checkpoint was written with a different config; cannot resume")
    return state

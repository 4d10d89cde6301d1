"""pgolf: parameter golf toolkit — train, pack, evaluate, record and audit tiny language models."""

__version__ = "0.1.0"

BUNDLE: dict | None = None
"""Set by a bundled train_gpt.py (its path, form and sources digest): the code counts that file."""

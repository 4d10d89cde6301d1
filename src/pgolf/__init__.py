"""pgolf: parameter golf toolkit — train, pack, evaluate, record and audit tiny language models."""

__version__ = "0.1.0"

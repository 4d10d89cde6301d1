"""Data builders and inspectors (tooling): the runtime readers stay in ``pgolf.data``."""

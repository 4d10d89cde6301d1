"""Tooling: every command, plan, check, record, sweep, preset and data builder. Never counted in a
submission (``pack.size.counted_modules`` never enters this package; tests/test_pack.py checks it)."""

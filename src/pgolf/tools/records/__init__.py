"""Submissions (tooling): record folders, per-seed statistics and the compliance check."""

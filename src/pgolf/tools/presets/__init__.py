"""Named presets: functions returning a complete ``RunConfig``, each citing its source, by family.

``contest``: the contest's baseline, its CPU-track sizing and ``debug``; ``records``: the seed
records at full size and their CPU twins; ``frontier``: PR #2135's stack and its CPU counterpart;
``best``: the best configurations found. CPU presets train on the embedded demo dataset (``pgolf data
demo``), so they run anywhere. Each family imports the one before it, so presets register (and
``pgolf config list`` lists them) in that order.
"""

from pgolf.tools.presets import best, contest, frontier, records
from pgolf.tools.presets.registry import DEMO_DATA, PRESETS, demo_data, get_preset, preset

FAMILIES = (contest, records, frontier, best)
"""The preset modules, in the order they register."""

__all__ = ["DEMO_DATA", "FAMILIES", "PRESETS", "demo_data", "get_preset", "preset"]

"""Quantisation: rounding grids (``grid``), the export policy (``policy``), state dicts (``export``)."""

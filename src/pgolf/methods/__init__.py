"""Evaluation methods, declared: one module per method (its config section, label, counted modules,
hooks into ``eval.run.run_method``, cost for ``pgolf plan`` and probe scaling, ``methods.base``),
registered here. Adding a method is its declaration module, its implementation module(s) and one
line below; ``EvalConfig``, the label, the counted code, ``pgolf plan`` and the probes loop over
``REGISTRY``."""

from pgolf.methods.base import Method
from pgolf.methods.correction import Correction
from pgolf.methods.experts import Experts
from pgolf.methods.lora import Lora
from pgolf.methods.sgd import Sgd
from pgolf.methods.tilt import Tilt
from pgolf.methods.windows import Windows

REGISTRY: tuple[Method, ...] = (Windows(), Sgd(), Lora(), Experts(), Tilt(), Correction())
"""In label order; ``run_method`` asks them in this order (the first head and whole-run hook win)."""
PLUGINS = tuple(dict.fromkeys(m for method in REGISTRY for m in method.modules))
"""Optional evaluation modules, loaded by name and counted only in a config that uses them."""


def used(cfg) -> list[Method]:
    """The registered methods ``cfg`` runs."""
    return [m for m in REGISTRY if m.used(cfg)]

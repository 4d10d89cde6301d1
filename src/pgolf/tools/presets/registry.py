"""The preset registry: ``@preset(name)`` records a function returning a complete ``RunConfig``;
``get_preset`` calls it. Also the demo corpus's data config, which the CPU presets train on."""

from __future__ import annotations

from collections.abc import Callable

from pgolf.config import DataConfig, RunConfig
from pgolf.errors import ConfigError
from pgolf.tools.data.build import layout
from pgolf.tools.data.stdlib_corpus import DEMO_NAME

PRESETS: dict[str, Callable[[], RunConfig]] = {}


def demo_data(vocab_size: int) -> DataConfig:
    """The demo corpus at ``vocab_size`` pieces, as ``pgolf data demo --vocab`` and ``pgolf demo`` build
    it."""
    dataset, tokenizer = layout(DEMO_NAME, vocab_size)
    return DataConfig(dataset=dataset, tokenizer=tokenizer)


DEMO_DATA = demo_data(1024)


def preset(name: str) -> Callable[[Callable[[], RunConfig]], Callable[[], RunConfig]]:
    def register(fn: Callable[[], RunConfig]) -> Callable[[], RunConfig]:
        PRESETS[name] = fn
        return fn

    return register


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()

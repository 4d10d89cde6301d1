"""``pgolf demo``: build the embedded corpus, train the best CPU-track preset briefly, pack, reload,
evaluate and summarise (``summary``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pgolf.config.run import RunConfig, apply_overrides
from pgolf.pipeline import run
from pgolf.tools.data.stdlib_corpus import build_demo_dataset
from pgolf.tools.plot import plot_run
from pgolf.tools.presets import demo_data, get_preset
from pgolf.tools.summary import run_summary
from pgolf.train.result import RunResult

DEMO_SECONDS = 120.0
"""Default training budget of the demo: with data building and evaluation, about 4 minutes."""

DEMO_PRESET = "cpu-best"

DEMO_EAGER = {"train.compile_cpu": "false"}
"""The demo trains eager unless told otherwise: compiling cpu-best's two graphs takes about 2 minutes
on 2 cores (untimed, but the demo's wall time) and needs a C++ compiler a fresh laptop may lack."""


def demo_config(
    data_root: Path, seconds: float, overrides: dict[str, Any], preset: str = DEMO_PRESET
) -> RunConfig:
    """The preset on the demo corpus at its own vocabulary (unless the overrides name other data)."""
    cfg = get_preset(preset)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_wallclock_seconds=seconds))
    cfg = apply_overrides(cfg, {**DEMO_EAGER, **overrides})
    data = cfg.data
    if not {"data.dataset", "data.tokenizer"} & set(overrides):
        data = demo_data(cfg.model.vocab_size)
    return dataclasses.replace(cfg, data=dataclasses.replace(data, root=str(data_root)))


def run_demo(
    *, data_root: Path, out_dir: Path, seconds: float, overrides: dict[str, Any], preset: str = DEMO_PRESET
) -> RunResult:
    cfg = demo_config(data_root, seconds, overrides, preset)
    vocab = cfg.model.vocab_size
    print(
        f"building the demo corpus under {data_root} at {vocab} pieces (stdlib docstrings and comments; "
        "cached)...",
        flush=True,
    )
    built = build_demo_dataset(data_root, vocab_size=vocab)
    splits = built.manifest["splits"]
    print(
        f"  {splits['train']['docs']} train docs / {splits['train']['tokens']:,} tokens, "
        f"{splits['val']['docs']} val docs / {splits['val']['tokens']:,} tokens",
        flush=True,
    )
    result = run(cfg, out_dir=out_dir, force=True)  # the demo's folder holds the last demo
    png = plot_run(out_dir, out_dir / "loss_curve.png", title=f"pgolf demo: {result.config.preset}")
    print(
        "\n"
        + run_summary(result)
        + f"\nloss curve            {png}\nlog                   {out_dir / 'train.log'}"
    )
    return result

"""The bundled ``train_gpt.py``'s main: the baked config, adjusted by the environment, run through
``pipeline.run`` (train -> pack -> round-trip score -> judge), as the contest's file does.

Environment variables: the contest's customary names (``CONTEST_ENV``), and ``PGOLF_<SECTION>_<FIELD>``
for every config field (``PGOLF_TRAIN_SEQ_LEN=2048``). ``DATA_PATH`` and ``TOKENIZER_PATH`` are
paths relative to the working directory (made absolute, so ``data.root`` does not apply). The
run's files go to ``$OUT_DIR``, else ``runs/$RUN_ID``, else ``runs/<preset>_seed<seed>`` (``_2``, ... when
taken: a rerun never replaces a run).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgolf import dist
from pgolf.config.run import (
    SECTIONS,
    RunConfig,
    all_fields,
    apply_overrides,
    config_from_dict,
    parse_value,
)
from pgolf.errors import ConfigError, PgolfError
from pgolf.pipeline import run, run_files

CONTEST_ENV = {
    "DATA_PATH": "data.dataset",
    "TOKENIZER_PATH": "data.tokenizer",
    "VOCAB_SIZE": "model.vocab_size",
    "SEED": "train.seed",
    "ITERATIONS": "train.iterations",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "WARMUP_STEPS": "train.warmup_steps",
    "TRAIN_BATCH_TOKENS": "train.batch_tokens",
    "TRAIN_SEQ_LEN": "train.seq_len",
    "VAL_LOSS_EVERY": "train.val_every",
    "TRAIN_LOG_EVERY": "train.log_every",
    "VAL_BATCH_SIZE": "eval.batch_tokens",
    "NUM_LAYERS": "model.num_layers",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MLP_MULT": "model.mlp_mult",
    "TIE_EMBEDDINGS": "model.tie_embeddings",
    "ROPE_BASE": "model.rope_base",
    "LOGIT_SOFTCAP": "model.logit_softcap",
    "QK_GAIN_INIT": "model.qk_gain_init",
    "EMBED_LR": "optim.embed_lr",
    "HEAD_LR": "optim.head_lr",
    "TIED_EMBED_LR": "optim.tied_embed_lr",
    "MATRIX_LR": "optim.matrix_lr",
    "SCALAR_LR": "optim.scalar_lr",
    "MUON_MOMENTUM": "optim.muon_momentum",
    "MUON_BACKEND_STEPS": "optim.muon_backend_steps",
    "BETA1": "optim.beta1",
    "BETA2": "optim.beta2",
    "ADAM_EPS": "optim.adam_eps",
    "GRAD_CLIP_NORM": "optim.grad_clip_norm",
    "WARMDOWN_ITERS": "optim.warmdown_iters",
    "WARMDOWN_FRAC": "optim.warmdown_frac",
    "GPTQ_RESERVE_SECONDS": "quant.gptq_reserve_seconds",
    "GPTQ_CALIBRATION_BATCHES": "quant.gptq_batches",
}
"""The contest's environment variable -> config field."""


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The dotted overrides the environment asks for, typed; an unknown ``PGOLF_*`` field or a value
    of the wrong type is an error naming the variable."""
    found: dict[str, tuple[str, str]] = {}
    for name, key in CONTEST_ENV.items():
        if name in environ:
            found[key] = (name, environ[name])
    for name, value in environ.items():
        section, _, field = name.removeprefix("PGOLF_").lower().partition("_")
        if name.startswith("PGOLF_") and section in SECTIONS and field:
            key = f"{section}.{field}"
            if key not in all_fields():
                raise ConfigError(f"environment variable {name}: {key} is not a config field")
            found[key] = (name, value)
    out = {key: parse_value(key, value, source=name) for key, (name, value) in found.items()}
    for key in ("data.dataset", "data.tokenizer"):  # the contest's paths are the working directory's
        if key in out and found[key][0] in CONTEST_ENV:
            out[key] = str(Path(out[key]).resolve())
    return out


def config_from_env(baked: dict[str, Any], environ: Mapping[str, str]) -> RunConfig:
    return apply_overrides(config_from_dict(baked), env_overrides(environ))


def out_dir(cfg: RunConfig, environ: Mapping[str, str]) -> Path:
    """``$OUT_DIR``, else ``runs/$RUN_ID`` (either refused when it holds another run), else the first
    of ``runs/<preset>_seed<seed>``, ``..._2``, ... that holds none: a rerun never replaces a run."""
    named = Path(environ["OUT_DIR"]) if environ.get("OUT_DIR") else None
    if environ.get("RUN_ID") and named is None:
        named = Path("runs") / environ["RUN_ID"]
    if named is not None:
        if run_files(named):
            raise ConfigError(f"{named} holds another run: set RUN_ID or OUT_DIR to a new folder")
        return named
    base = Path("runs") / f"{cfg.preset}_seed{cfg.train.seed}"
    n = 1
    while run_files(base if n == 1 else base.with_name(f"{base.name}_{n}")):
        n += 1
    return base if n == 1 else base.with_name(f"{base.name}_{n}")


def main(baked: dict[str, Any], environ: Mapping[str, str] | None = None) -> int:
    """Run the baked config; exit status 0 on track, 1 off track, 2 on bad input."""
    environ = os.environ if environ is None else environ
    try:
        cfg = config_from_env(baked, environ)
        with dist.closing():
            result = run(cfg, out_dir=out_dir(cfg, environ))
    except PgolfError as e:
        print(f"train_gpt.py: error: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 2)
    for reason in result.off_track:
        print(f"train_gpt.py: off track: {reason}", file=sys.stderr)
    return 1 if result.off_track else 0

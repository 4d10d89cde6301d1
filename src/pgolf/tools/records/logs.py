"""Per-seed scores from what people have: pgolf run folders, pgolf record folders, and logs written
by the contest's own scripts (both dialects of users-ecosystem §2.2).

Log rules (the ones reviewers applied by hand): the score is the last ``<label> val_loss:X
val_bpb:Y`` line (the ``*_exact`` twin where there is one); the size is the last labelled ``Total
submission size <label>:`` line, never the unlabelled raw one; only lines that start with a letter
and carry plain numbers count (an indented ``seed:`` only inside a ``Hyperparameters:`` block), so
that the source code at the top of a contest log, metric-like strings included, never matches.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pgolf.config.run import config_from_dict
from pgolf.errors import PgolfError
from pgolf.fileio import file_sha256

SCORE = re.compile(
    r"^(?P<label>[A-Za-z][\w +-]*?) val_loss:\s*(?P<loss>\d+\.\d+) val_bpb:\s*(?P<bpb>\d+\.\d+)"
    r"(?: eval_time:\s*(?P<ms>\d+)ms)?"
)
TOTAL = re.compile(r"^Total submission size (?P<label>[^:\s][^:]*): (?P<n>\d+) bytes")
CODE = re.compile(r"^Code size(?P<kind> \(compressed\))?: (?P<n>\d+) bytes")
STOP = re.compile(r"^stopping_early: wallclock_cap train_time:\s*(?P<ms>\d+)ms step:\s*(?P<step>\d+)/\d+")
STEP = re.compile(r"^(?:step:)?(?P<step>\d+)/\d+ .*train_time:\s*(?P<ms>\d+)ms")
VAL_TOKENS = re.compile(r"^(?:(?:[A-Za-z]\S*\s+)*val_tokens:\s*|val_loader:.* tokens:)(?P<n>\d+)")
SHARDS = re.compile(r"^(?:[A-Za-z]\S*\s+)*train_shards:\s*(?P<n>\d+)")
SEED = re.compile(r"^(?P<indent>\s*)(?:train\.)?seed:\s*(?P<n>\d+)\s*$")
TOTAL_EVAL = re.compile(r"^total_eval_time:\s*(?P<s>\d+(?:\.\d+)?)s")


@dataclass(frozen=True)
class RunScore:
    """One seed's result, whatever it was read from (None: the source does not say)."""

    source: str
    val_loss: float
    val_bpb: float
    seed: int | None = None
    score_label: str = ""
    bytes_total: int | None = None
    bytes_code: int | None = None
    size_label: str = ""
    steps: int | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    stopped_early: bool | None = None
    val_tokens: int | None = None
    train_shards: int | None = None
    config_digest: str | None = None
    """``config_digest`` of the run's config (None: a log that does not carry one)."""
    artifact_sha256: str | None = None
    off_track: tuple[str, ...] = ()
    """Why the run is off its track (over a cap, a validation leak), as its result says."""

    def to_dict(self) -> dict:
        return asdict(self)


IGNORED_FIELDS = (("train", "seed"), ("data", "root"))
"""What a configuration's digest leaves out: the seed and where the data lives (and the preset's
name, a label: a config file with the preset's values is the same configuration)."""


def config_digest(config: dict) -> str:
    """sha256 of a run's config (``RunConfig.to_dict``) less ``IGNORED_FIELDS`` and the preset's name:
    runs with the same digest are seeds of one configuration. The config is read through this pgolf's
    ``RunConfig`` first, so a field added since a run was made counts at its default: the same
    configuration (a config this pgolf cannot read is digested as written)."""
    try:
        cfg = config_from_dict(config).to_dict()
    except (PgolfError, TypeError, ValueError, AttributeError):
        cfg = json.loads(json.dumps(config))
    cfg.pop("preset", None)
    for section, field in IGNORED_FIELDS:
        cfg.get(section, {}).pop(field, None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def evidence(result: dict, artifact: Path) -> dict:
    """What a run's result and artifact say about whether its score may be pooled: its configuration's
    digest, its artifact's sha256 (where the file is here) and why it is off track."""
    off = list(result.get("off_track") or ())
    if result.get("on_track") is False and not off:
        off.append("off track (result.json)")
    leak = result.get("val_leak") or (result.get("config") or {}).get("eval", {}).get("val_leak")
    if leak and not any("val_leak" in o for o in off):
        off.append("used eval.val_leak (read validation targets)")
    return {
        "config_digest": config_digest(result["config"]),
        "artifact_sha256": file_sha256(artifact) if artifact.is_file() else None,
        "off_track": tuple(off),
    }


def parse_log(text: str, source: str = "log") -> RunScore:
    """A contest (or pgolf) training log -> its final score and the fields reviewers checked."""
    score = None
    fields: dict = {"stopped_early": False}
    code_compressed = in_hparams = False
    eval_ms: dict[str, str | None] = {}
    for line in text.splitlines():
        in_hparams = line == "Hyperparameters:" or (in_hparams and line.startswith(" "))
        if m := SCORE.match(line):
            if not m["label"].startswith(("step", "diagnostic", "unofficial")):
                score = m
                eval_ms[m["label"]] = m["ms"]
        elif m := TOTAL.match(line):
            fields |= {"bytes_total": int(m["n"]), "size_label": m["label"]}
        elif (m := CODE.match(line)) and (m["kind"] or not code_compressed):
            fields["bytes_code"], code_compressed = int(m["n"]), bool(m["kind"])
        elif m := STOP.match(line):
            fields |= {"stopped_early": True, "train_seconds": int(m["ms"]) / 1000, "steps": int(m["step"])}
        elif (m := STEP.match(line)) and not fields["stopped_early"]:
            fields |= {"train_seconds": int(m["ms"]) / 1000, "steps": int(m["step"])}
        elif m := TOTAL_EVAL.match(line):
            fields["eval_seconds"] = float(m["s"])
        for rx, key in ((VAL_TOKENS, "val_tokens"), (SHARDS, "train_shards"), (SEED, "seed")):
            m = rx.match(line)
            if m and key not in fields and (rx is not SEED or in_hparams or not m["indent"]):
                fields[key] = int(m["n"])
    if score is None:
        raise PgolfError(f"{source}: no final 'val_loss:... val_bpb:...' line (did the run finish?)")
    if "seed" not in fields and (m := re.search(r"seed[_-]?(\d+)", Path(source).name)):
        fields["seed"] = int(m[1])
    ms = score["ms"] or eval_ms.get(score["label"].removesuffix("_exact"))  # the exact line's twin
    if ms and "eval_seconds" not in fields:
        fields["eval_seconds"] = int(ms) / 1000
    return RunScore(
        source=source, val_loss=float(score["loss"]), val_bpb=float(score["bpb"]), score_label=score["label"],
        **fields,
    )


def from_result(path: Path) -> RunScore:
    """A pgolf run folder's ``result.json``."""
    try:
        r = json.loads(path.read_text())
        if r.get("split") == "dev":
            raise PgolfError(f"{path}: a dev-split score (data.score_split=dev), not a validation score")
        if r.get("official_score") is False:
            raise PgolfError(f"{path}: an unofficial score (other validation data or window length)")
        return RunScore(
            source=str(path.parent), val_loss=r["val_loss"], val_bpb=r["val_bpb"],
            seed=r["config"]["train"]["seed"], score_label=r.get("label", ""),
            bytes_total=r["bytes_total"], bytes_code=r["bytes_code"],
            steps=r["steps"], train_seconds=r["train_seconds"], eval_seconds=r["eval_seconds"],
            stopped_early=r["stopped_by"] == "wallclock", val_tokens=r["val_tokens"],
            **evidence(r, path.parent / "artifact.pgolf"),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PgolfError(f"{path}: not a pgolf result ({type(e).__name__}: {e})") from None


def load_scores(path: str | Path) -> list[RunScore]:
    """Per-seed scores of a record folder (its seed logs), a run folder, a folder of run folders or
    logs, or one log file."""
    p = Path(path)
    if p.is_file():
        return [parse_log(p.read_text(encoding="utf-8", errors="replace"), str(p))]
    if not p.is_dir():
        raise PgolfError(f"{p}: no such file or folder")
    if (p / "result.json").is_file():
        return [from_result(p / "result.json")]
    scores = [from_result(r) for r in sorted(p.glob("*/result.json"))]
    logs = sorted(p.glob("train_seed*.log")) or sorted([*p.glob("*.log"), *p.glob("logs/*.txt")])
    scores += [
        _with_record(p, parse_log(f.read_text(encoding="utf-8", errors="replace"), str(f))) for f in logs
    ]
    if not scores:
        raise PgolfError(f"{p}: no result.json, run folders or logs with a final score")
    return scores


def _with_record(folder: Path, score: RunScore) -> RunScore:
    """A record folder's seed log, with what its ``result_seed<S>.json`` and artifact say (``evidence``)."""
    result = folder / f"result_seed{score.seed}.json"
    if score.seed is None or not result.is_file():
        return score
    try:
        found = evidence(json.loads(result.read_text()), folder / f"artifact_seed{score.seed}.pgolf")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PgolfError(f"{result}: not a pgolf result ({type(e).__name__}: {e})") from None
    return RunScore(**{**score.to_dict(), **found})

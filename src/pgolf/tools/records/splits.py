"""The verdicts of ``pgolf check``'s rules on splits (issue 34; ``check`` makes them rules): a record's
score is a validation score, never a dev one; and, given the sweep that chose a run's settings
(``pgolf check RUN --sweep OUT``), which split that sweep's runs scored, so a score tuned on the set it
reports is named as such. Each verdict is (status, detail)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from pgolf.errors import PgolfError


def _split(result: dict) -> str:
    """What a result scored (``val`` for a result from before splits existed)."""
    data = (result.get("config") or {}).get("data", {})
    return "dev" if "dev" in (result.get("split"), data.get("score_split")) else "val"


def split_verdict(seeds: list) -> tuple[str, str]:
    """Every seed (``check.Seed``) scored validation."""
    dev = [s.name for s in seeds if _split(s.result) == "dev"]
    if dev:
        return "fail", (f"{', '.join(dev)} scored the dev split (data.score_split=dev): a tuning score, not a "
                        "validation score; run the record with data.score_split=val")
    return "pass", f"{len(seeds)} seed(s) scored the validation split"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PgolfError(f"{path}: unreadable JSON ({e})") from None


def sweep_runs(sweep: Path) -> list[dict]:
    """The result.json of every finished run of a sweep folder (trials and finalists)."""
    files = sorted([*sweep.glob("trials/*/result.json"), *sweep.glob("final/*/result.json")])
    if not files:
        raise PgolfError(f"{sweep}: not a sweep folder with finished runs (no trials/*/result.json)")
    return [_read(f) for f in files]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _not_chosen(config: dict, params: dict) -> list[str]:
    """The sweep's chosen settings (``best.json``'s params, dotted keys) the run's config differs on."""
    out = []
    for key, value in params.items():
        section, _, field = key.rpartition(".")
        got = (config.get(section) or {}).get(field) if section else config.get(field)
        if not _same(got, value):
            out.append(f"{key}: the run {got!r}, the sweep {value!r}")
    return out


def sweep_verdict(seeds: list, sweep: str | Path) -> tuple[str, str]:
    """Which split the sweep's runs scored (their own result.json, not its claim) and whether the seeds
    have the settings the sweep chose (``best.json``): fails when the sweep read validation, or when
    they are not its winner's."""
    sweep = Path(sweep)
    runs = sweep_runs(sweep)
    splits = Counter(_split(r) for r in runs)
    datasets = sorted({str((r.get("config") or {}).get("data", {}).get("dataset")) for r in runs})
    scored = ", ".join(f"{n} scored {'the dev split' if k == 'dev' else 'VALIDATION'}" for k, n in splits.items())
    where = f"sweep {sweep}: {len(runs)} run(s), {scored}, on {', '.join(datasets)}"
    best = sweep / "best.json"
    if not best.is_file():
        return "unverified", (f"{where}; no best.json (an unfinished sweep, or one from before pgolf recorded "
                              "it): whether it chose this run's settings is not shown")
    params = _read(best).get("params") or {}
    differ = [f"{s.name}: {d}" for s in seeds for d in _not_chosen(s.result.get("config") or {}, params)]
    if differ:
        return "fail", f"{where}; the run lacks the settings it chose ({'; '.join(differ[:4])}): not its winner"
    chosen = f"the run has the {len(params)} setting(s) it chose ({', '.join(params)})"
    if splits.get("val"):
        return "fail", (f"{where}; {chosen} on the validation split, the set its score reads: tuned on the "
                        "test set (rebuild the data with a dev split, pgolf data build --dev-docs, and sweep "
                        "again)")
    shared, unknown = _dev_in_validation(runs, seeds)
    if shared:
        return "fail", (f"{where}; {chosen} on a dev split holding {shared} of the documents this run's score "
                        "reads as validation (another build of the corpus): tuned on the test set")
    if unknown:
        return "unverified", (f"{where}; {chosen} on the dev split; that its documents are not this run's "
                              f"validation documents is not shown ({unknown})")
    return "pass", f"{where}; {chosen} on the dev split, none of its documents in this run's validation set"


def _doc_hashes(data: dict, split: str) -> set[str] | None:
    """The document sha256s a dataset's manifest lists for ``split`` (None: no manifest here, or none)."""
    from pgolf.config.data import DataConfig
    from pgolf.tools.data.splits import manifest_split

    try:
        entry = manifest_split(DataConfig(**data), split)
    except (TypeError, PgolfError):  # a config this pgolf cannot read
        return None
    return set(entry["doc_sha256"]) if entry and "doc_sha256" in entry else None


def _dev_in_validation(runs: list[dict], seeds: list) -> tuple[int, str]:
    """(how many documents of the sweep's dev splits are in the seeds' validation sets, what could not
    be read): a dev split of another build of the corpus may hold the record's validation documents."""
    dev, val, missing = set(), set(), []
    for config, split, into in [*((r.get("config") or {}, "dev", dev) for r in runs),
                                *((s.result.get("config") or {}, "val", val) for s in seeds)]:
        data = config.get("data") or {}
        hashes = _doc_hashes(data, split)
        if hashes is None:
            missing.append(f"no document list for the {split} split of {data.get('dataset')} here")
        into |= hashes or set()
    return len(dev & val), "; ".join(sorted(set(missing)))

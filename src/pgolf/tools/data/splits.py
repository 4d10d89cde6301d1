"""Which split a search scores (issue 34): settings are chosen on the dataset's dev split (``pgolf data
build --dev-docs``), and validation is read only for final scores. ``pgolf sweep`` and
``benchmarks/ablate.py`` ask ``search_split`` before their first run; it refuses a dataset without a
dev split unless the search opts out to validation explicitly."""

from __future__ import annotations

from pgolf.config.data import DataConfig
from pgolf.data.manifest import load_manifest
from pgolf.data.paths import resolve_data
from pgolf.errors import ConfigError, DataError

SEARCH_SPLITS = ("dev", "val")


def manifest_split(data: DataConfig, split: str) -> dict | None:
    """The manifest's entry for ``split`` (``val``, ``dev``, ``train``) of ``data``'s dataset (docs,
    tokens, shards, document hashes), or None when the dataset has no such split (or no manifest)."""
    try:
        manifest = load_manifest(resolve_data(data).dataset_dir)
    except DataError:
        return None
    entry = manifest.get("splits", {}).get(split)
    return entry if isinstance(entry, dict) else None


def search_split(data: DataConfig, split: str, opt_out: str) -> tuple[str, str]:
    """(the ``data.score_split`` a search's runs take, the line it prints first). ``split`` is what the
    search asked for (``dev`` by default); ``opt_out`` says how it asks for validation instead
    (e.g. ``--split val``), for the messages."""
    if split not in SEARCH_SPLITS:
        raise ConfigError(f"split {split!r}; expected one of {SEARCH_SPLITS}")
    folder = resolve_data(data).dataset_dir
    if split == "val":
        return "val", (
            f"scoring on: the VALIDATION split of {folder} ({opt_out}). Settings chosen on it are tuned to "
            "the set their final score reads: that score is biased (issue 34)"
        )
    dev = manifest_split(data, "dev")
    if dev is None:
        raise ConfigError(
            f"{folder} has no dev split to tune on. Rebuild it with one (`pgolf data build ... --dev-docs N`;"
            " the demo corpus: `pgolf data demo --dev-docs 60`) and point data.dataset at the new folder "
            f"(its name ends _dev<N>), or tune on validation with {opt_out} (its final scores are then "
            "biased)"
        )
    return "dev", (
        f"scoring on: the dev split of {folder} ({dev.get('docs')} documents, {dev.get('tokens') or 0:,} "
        f"tokens, carved from the training documents); validation is not read ({opt_out} to score it instead)"
    )

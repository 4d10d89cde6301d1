"""Download the contest's published FineWeb export (``pgolf data fineweb``).

Source: Hugging Face dataset ``willdepueoai/parameter-golf``; remote paths under ``datasets/``:
``manifest.json``, ``datasets/fineweb10B_<variant>/fineweb_{val,train}_NNNNNN.bin`` and the
tokenizer files the manifest names. Local layout is the contest's: the ``datasets/`` prefix is
dropped, giving ``<out>/datasets/fineweb10B_sp1024/`` and ``<out>/tokenizers/fineweb_1024_bpe.model``.

The manifest decides the shard counts. Remote sizes are asked for first (one call, which also
fails fast when offline); a local file of the right size is skipped, anything else is fetched
(the hub client resumes partial downloads in its cache) and placed atomically, then its size and,
for shards, its header are verified. Rerunning after an interruption resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pgolf.data.shards import read_header
from pgolf.errors import FetchError
from pgolf.fileio import atomic_file

REPO_ID = "willdepueoai/parameter-golf"
REMOTE_PREFIX = "datasets"


class HubClient(Protocol):
    def file_sizes(self, paths: list[str]) -> dict[str, int]:
        """Remote path -> size in bytes, for the paths that exist."""

    def download(self, path: str) -> Path:
        """Fetch one remote file and return a local path to its bytes."""


class HfHubClient:
    """The real client: ``huggingface_hub`` with its cache (resumable downloads)."""

    def __init__(self, repo_id: str = REPO_ID) -> None:
        self.repo_id = repo_id

    def _offline(self, e: Exception) -> FetchError:
        return FetchError(
            f"cannot reach the Hugging Face hub for dataset {self.repo_id} ({type(e).__name__}: {e}). "
            "`pgolf data fineweb` needs network access; offline, use `pgolf data demo` or `pgolf data build`."
        )

    def file_sizes(self, paths: list[str]) -> dict[str, int]:
        from huggingface_hub import HfApi

        try:
            infos = HfApi().get_paths_info(self.repo_id, paths, repo_type="dataset")
        except Exception as e:  # httpx/hub errors have no common base; this is the network boundary
            raise self._offline(e) from None
        return {info.path: info.size for info in infos if getattr(info, "size", None) is not None}

    def download(self, path: str) -> Path:
        from huggingface_hub import hf_hub_download

        parent, _, name = path.rpartition("/")
        try:
            local = hf_hub_download(self.repo_id, name, subfolder=parent or None, repo_type="dataset")
        except Exception as e:
            raise self._offline(e) from None
        return Path(local).resolve()


@dataclass
class FetchReport:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dataset_dir: Path | None = None
    tokenizer_path: Path | None = None


def dataset_name(variant: str) -> str:
    if variant == "byte260" or re.fullmatch(r"sp\d+", variant):
        return f"fineweb10B_{variant}"
    raise FetchError(f"--variant {variant!r}: expected sp<VOCAB> (e.g. sp1024) or byte260")


def local_path(out_root: Path, remote: str) -> Path:
    rel = remote.removeprefix(REMOTE_PREFIX + "/")
    return out_root / rel


def _place(src: Path, dest: Path) -> None:
    """Hard-link (or copy) ``src`` to ``dest`` via a temp name, so ``dest`` is never partial."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _manifest(client: HubClient, out_root: Path) -> dict:
    remote = f"{REMOTE_PREFIX}/manifest.json"
    src = client.download(remote)
    try:
        manifest = json.loads(Path(src).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FetchError(f"{remote}: manifest is not valid JSON ({e})") from None
    with atomic_file(out_root / "manifest.json") as f:
        f.write(Path(src).read_bytes())
    return manifest


def plan(manifest: dict, variant: str, train_shards: int) -> tuple[list[str], str]:
    """Remote paths to fetch (val shards, the first ``train_shards`` train shards, tokenizer files)
    and the remote tokenizer model path."""
    name = dataset_name(variant)
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == name), None)
    if entry is None:
        known = [d.get("name") for d in manifest.get("datasets", [])]
        raise FetchError(f"dataset {name} is not in the export's manifest (it lists {known})")
    stats = entry.get("stats") or {}
    try:
        n_train, n_val = int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError):
        raise FetchError(f"manifest entry {name} lacks stats.files_train / stats.files_val") from None
    if not 0 <= train_shards <= n_train:
        raise FetchError(f"--train-shards {train_shards}: {name} has {n_train} training shards")
    tok_name = entry.get("tokenizer_name")
    tok = next((t for t in manifest.get("tokenizers", []) if t.get("name") == tok_name), None)
    if tok is None or not tok.get("model_path"):
        raise FetchError(f"tokenizer {tok_name!r} of {name} is not in the manifest")
    base = f"{REMOTE_PREFIX}/datasets/{name}"
    paths = [f"{base}/fineweb_val_{i:06d}.bin" for i in range(n_val)]
    paths += [f"{base}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    tok_files = [tok[k] for k in ("model_path", "vocab_path") if tok.get(k)]
    paths += [f"{REMOTE_PREFIX}/{p}" for p in tok_files]
    return paths, f"{REMOTE_PREFIX}/{tok['model_path']}"


def fetch_fineweb(
    variant: str,
    train_shards: int,
    out_root: str | os.PathLike,
    *,
    client: HubClient | None = None,
    log: Callable[[str], None] = print,
) -> FetchReport:
    out_root = Path(out_root)
    client = client or HfHubClient()
    name = dataset_name(variant)
    paths, tok_remote = plan(_manifest(client, out_root), variant, train_shards)
    sizes = client.file_sizes(paths)
    missing = [p for p in paths if p not in sizes]
    if missing:
        raise FetchError(f"the export lacks {len(missing)} file(s) its manifest names, e.g. {missing[0]}")
    report = FetchReport(
        dataset_dir=out_root / "datasets" / name, tokenizer_path=local_path(out_root, tok_remote)
    )
    for i, remote in enumerate(paths, 1):
        dest = local_path(out_root, remote)
        if dest.is_file() and dest.stat().st_size == sizes[remote]:
            report.skipped.append(remote)
            continue
        log(f"[{i}/{len(paths)}] {remote} ({sizes[remote] / 1e6:.1f} MB)")
        src = client.download(remote)
        if src.stat().st_size != sizes[remote]:
            raise FetchError(
                f"{remote}: downloaded {src.stat().st_size} bytes, the hub lists {sizes[remote]}"
            )
        _place(src, dest)
        if dest.suffix == ".bin":
            read_header(dest)
        report.downloaded.append(remote)
    return report

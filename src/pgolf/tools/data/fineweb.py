"""Download the contest's published FineWeb export, or a community one (``pgolf data fineweb``).

Source: a Hugging Face dataset, ``willdepueoai/parameter-golf`` by default (``--repo`` for the
community exports: ``kevclark/parameter-golf`` SP4096/SP8192, ``romeerp/parameter-golf-caseops-v1``
CaseOps); remote paths under a prefix (``datasets/``): ``manifest.json``,
``datasets/fineweb10B_<variant>/fineweb_{val,train}_NNNNNN.bin`` (and ``fineweb_val_bytes_NNNNNN.bin``
byte sidecars where the export has them), the tokenizer files the manifest names, and with
``--with-docs`` the document dump ``docs_selected.jsonl`` (+ its source manifest). Local layout is
the contest's: the prefix is dropped, giving ``<out>/datasets/fineweb10B_sp1024/`` and
``<out>/tokenizers/fineweb_1024_bpe.model``.

Each fetched dataset folder gets a pgolf ``manifest.json`` naming the repository it came from and
every shard's token count and sha256, so loading checks the validation stream against it (a
truncated shard is refused), a CaseOps export must keep its sidecars, and a later fetch of the same
folder name from another repository is refused instead of silently mixing the two (the stale local
manifest of the contest's downloader); ``--replace`` clears the folder first.

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

from pgolf.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from pgolf.data.shards import read_header
from pgolf.data.sidecar import SIDECAR_PREFIX
from pgolf.errors import FetchError
from pgolf.fileio import atomic_file, file_sha256, write_json_atomic
from pgolf.vocab import BOS_ID

REPO_ID = "willdepueoai/parameter-golf"
REMOTE_PREFIX = "datasets"
DOCS_FILES = ("docs_selected.jsonl", "docs_selected.source_manifest.json")


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


@dataclass(frozen=True)
class Source:
    """Where an export lives: the hub repository and the prefix of its files."""

    repo: str = REPO_ID
    prefix: str = REMOTE_PREFIX

    def remote(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel


@dataclass
class FetchReport:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dataset_dir: Path | None = None
    tokenizer_path: Path | None = None


def dataset_name(variant: str) -> str:
    """``sp1024`` -> ``fineweb10B_sp1024``; a suffix names a community variant, e.g.
    ``sp8192_lossless_caps_caseops_v1_reserved``."""
    if re.fullmatch(r"(sp\d+|byte260)(_[A-Za-z0-9_]+)?", variant):
        return f"fineweb10B_{variant}"
    raise FetchError(
        f"--variant {variant!r}: expected sp<VOCAB> (e.g. sp1024) or byte260, optionally with a suffix "
        "(e.g. sp8192_lossless_caps_caseops_v1_reserved)"
    )


def local_path(out_root: Path, remote: str, source: Source = Source()) -> Path:
    rel = remote.removeprefix(source.prefix + "/") if source.prefix else remote
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


def _manifest(client: HubClient, out_root: Path, source: Source) -> dict:
    remote = source.remote("manifest.json")
    src = client.download(remote)
    try:
        manifest = json.loads(Path(src).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FetchError(f"{remote}: manifest is not valid JSON ({e})") from None
    with atomic_file(out_root / "manifest.json") as f:
        f.write(Path(src).read_bytes())
    return manifest


def plan(
    manifest: dict, variant: str, train_shards: int, source: Source = Source()
) -> tuple[list[str], str, list[str]]:
    """Remote paths to fetch (val shards, the first ``train_shards`` train shards, tokenizer files),
    the remote tokenizer model path, and the byte sidecars the export may have (fetched if present)."""
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
    base = source.remote(f"datasets/{name}")
    paths = [f"{base}/fineweb_val_{i:06d}.bin" for i in range(n_val)]
    paths += [f"{base}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    tok_files = [tok[k] for k in ("model_path", "vocab_path") if tok.get(k)]
    paths += [source.remote(p) for p in tok_files]
    sidecars = [f"{base}/{SIDECAR_PREFIX}{i:06d}.bin" for i in range(n_val)]
    return paths, source.remote(tok["model_path"]), sidecars


def fetch_fineweb(
    variant: str,
    train_shards: int,
    out_root: str | os.PathLike,
    *,
    source: Source = Source(),
    with_docs: bool = False,
    replace: bool = False,
    client: HubClient | None = None,
    log: Callable[[str], None] = print,
) -> FetchReport:
    out_root = Path(out_root)
    client = client or HfHubClient(source.repo)
    name = dataset_name(variant)
    paths, tok_remote, sidecars = plan(_manifest(client, out_root, source), variant, train_shards, source)
    if with_docs:
        paths += [source.remote(f) for f in DOCS_FILES]
    sizes = client.file_sizes(paths + sidecars)
    missing = [p for p in paths if p not in sizes]
    if missing:
        raise FetchError(f"the export lacks {len(missing)} file(s) its manifest names, e.g. {missing[0]}")
    have = [p for p in sidecars if p in sizes]
    if (have and len(have) != len(sidecars)) or ("caseops" in name.lower() and not have):
        raise FetchError(f"{name}: byte sidecars for {len(have)} of {len(sidecars)} validation shards")
    paths += have
    report = FetchReport(
        dataset_dir=out_root / "datasets" / name, tokenizer_path=local_path(out_root, tok_remote, source)
    )
    _claim(report.dataset_dir, source, name, replace)
    for i, remote in enumerate(paths, 1):
        dest = local_path(out_root, remote, source)
        if not replace and dest.is_file() and dest.stat().st_size == sizes[remote]:
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
    _write_provenance(report, source, name, bool(have))
    return report


def _claim(folder: Path, source: Source, name: str, replace: bool) -> None:
    """Refuse to mix two exports in one folder: its manifest must name this source, or the folder
    must hold no shards. Then mark it as being fetched from this source (incomplete until the end)."""
    path = folder / MANIFEST_NAME
    if replace and folder.is_dir():
        for f in [*folder.glob("fineweb_*.bin"), path]:
            f.unlink(missing_ok=True)
    was, unknown = {}, {"repo": "an unrecorded source"}
    if path.is_file():
        try:
            was = json.loads(path.read_text()).get("source") or unknown
        except (ValueError, AttributeError):
            was = unknown
    elif folder.is_dir() and any(folder.glob("fineweb_*.bin")):
        was = unknown
    if was and (was.get("repo"), was.get("prefix")) != (source.repo, source.prefix):
        raise FetchError(
            f"{folder} holds {was.get('repo') or 'a local build'}'s files; this fetch is from "
            f"{source.repo}. Same-sized files would be kept as they are: pass --replace to clear the "
            "folder, or fetch into another --out"
        )
    if not was:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            path,
            {
                "format": MANIFEST_FORMAT,
                "name": name,
                "complete": False,
                "splits": {},
                "source": {"repo": source.repo, "prefix": source.prefix},
            },
        )


def _write_provenance(report: FetchReport, source: Source, name: str, sidecars: bool) -> None:
    """The folder's pgolf manifest: the source, and every shard's token count and digest (a shard
    this fetch skipped keeps the digest the previous manifest gave it)."""
    folder = report.dataset_dir
    old = {}
    if (folder / MANIFEST_NAME).is_file():
        listed = json.loads((folder / MANIFEST_NAME).read_text()).get("splits", {})
        old = {e["file"]: e for split in listed.values() for e in split["shards"]}
        old.update({e["file"]: e for e in listed.get("val", {}).get("byte_sidecar", {}).get("shards", [])})
    skipped = {Path(p).name for p in report.skipped}

    def shards(pattern: str) -> list[dict]:
        out = []
        for f in sorted(folder.glob(pattern)):
            n = read_header(f)
            known = old.get(f.name) if f.name in skipped else None
            digest = known["sha256"] if known and known.get("tokens") == n else file_sha256(f)
            out.append({"file": f.name, "tokens": n, "sha256": digest})
        return out

    val = {"shards": shards("fineweb_val_[0-9]*.bin")}  # not the sidecars (fineweb_val_bytes_*)
    if sidecars:
        val["byte_sidecar"] = {"shards": shards(f"{SIDECAR_PREFIX}*.bin")}
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "source": {"repo": source.repo, "prefix": source.prefix},
        "complete": True,
        "bos_id": BOS_ID,
        "tokenizer": {
            "path": os.path.relpath(report.tokenizer_path, folder.parents[1]),
            "sha256": file_sha256(report.tokenizer_path),
        },
        "splits": {"val": val, "train": {"shards": shards("fineweb_train_*.bin")}},
    }
    write_json_atomic(folder / MANIFEST_NAME, manifest)

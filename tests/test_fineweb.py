"""The FineWeb download against a fake hub client."""

import json
from pathlib import Path

import numpy as np
import pytest

from pgolf.data.shards import read_shard, write_shard
from pgolf.tools.data.fineweb import FetchError, fetch_fineweb

MANIFEST = {
    "datasets": [
        {
            "name": "fineweb10B_sp1024",
            "tokenizer_name": "sp_bpe_1024",
            "stats": {"files_train": 3, "files_val": 1},
        }
    ],
    "tokenizers": [
        {
            "name": "sp_bpe_1024",
            "model_path": "tokenizers/fineweb_1024_bpe.model",
            "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
        }
    ],
}


class FakeHub:
    """Serves files from a folder laid out like the remote repository; counts downloads."""

    def __init__(self, root: Path, offline: bool = False) -> None:
        self.root, self.offline, self.downloads = root, offline, []

    def file_sizes(self, paths):
        if self.offline:
            raise FetchError("cannot reach the Hugging Face hub (fake)")
        return {p: (self.root / p).stat().st_size for p in paths if (self.root / p).exists()}

    def download(self, path):
        if self.offline:
            raise FetchError("cannot reach the Hugging Face hub (fake)")
        self.downloads.append(path)
        return self.root / path


@pytest.fixture
def remote(tmp_path):
    root = tmp_path / "remote"
    base = root / "datasets" / "datasets" / "fineweb10B_sp1024"
    write_shard(base / "fineweb_val_000000.bin", np.arange(100, dtype=np.uint16))
    for i in range(3):
        write_shard(base / f"fineweb_train_{i:06d}.bin", np.full(50 + i, i, dtype=np.uint16))
    (root / "datasets" / "tokenizers").mkdir(parents=True)
    (root / "datasets" / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(b"model")
    (root / "datasets" / "tokenizers" / "fineweb_1024_bpe.vocab").write_bytes(b"vocab")
    (root / "datasets" / "manifest.json").write_text(json.dumps(MANIFEST))
    return root


def test_fetch_layout_and_resume(remote, tmp_path):
    out = tmp_path / "data"
    hub = FakeHub(remote)
    r = fetch_fineweb("sp1024", 2, out, client=hub, log=lambda s: None)
    ds = out / "datasets" / "fineweb10B_sp1024"
    assert sorted(p.name for p in ds.iterdir()) == [
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_val_000000.bin",
        "manifest.json",  # pgolf's: the source and every shard's token count and digest
    ]
    assert (out / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"model"
    assert r.tokenizer_path == out / "tokenizers" / "fineweb_1024_bpe.model" and r.dataset_dir == ds
    assert list(read_shard(ds / "fineweb_train_000001.bin")) == [1] * 51
    assert len(r.downloaded) == 5 and (out / "manifest.json").exists()

    # an interrupted copy left a wrong-sized file: only it, and the newly asked shard, are fetched
    # (a new file: local shards are hard links to the hub cache, so never write through them)
    (ds / "fineweb_train_000000.bin").unlink()
    (ds / "fineweb_train_000000.bin").write_bytes(b"partial")
    hub.downloads.clear()
    r2 = fetch_fineweb("sp1024", 3, out, client=hub, log=lambda s: None)
    assert sorted(r2.downloaded) == [
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin",
    ]
    assert len(r2.skipped) == 4
    assert list(read_shard(ds / "fineweb_train_000000.bin")) == [0] * 50


def test_fetch_errors(remote, tmp_path):
    quiet = {"log": lambda s: None}
    with pytest.raises(FetchError, match="--train-shards 9: fineweb10B_sp1024 has 3 training shards"):
        fetch_fineweb("sp1024", 9, tmp_path / "d", client=FakeHub(remote), **quiet)
    with pytest.raises(FetchError, match=r"dataset fineweb10B_sp4096 is not in the export's manifest"):
        fetch_fineweb("sp4096", 1, tmp_path / "d", client=FakeHub(remote), **quiet)
    with pytest.raises(FetchError, match="expected sp<VOCAB>"):
        fetch_fineweb("gpt2", 1, tmp_path / "d", client=FakeHub(remote), **quiet)
    with pytest.raises(FetchError, match="cannot reach the Hugging Face hub"):
        fetch_fineweb("sp1024", 1, tmp_path / "d", client=FakeHub(remote, offline=True), **quiet)
    (remote / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin").unlink()
    with pytest.raises(FetchError, match="lacks 1 file"):
        fetch_fineweb("sp1024", 1, tmp_path / "d", client=FakeHub(remote), **quiet)


def test_real_client_reports_offline_clearly(tmp_path, monkeypatch):
    """The real hub client, with the network made unreachable, stops with the offline message."""
    import huggingface_hub.constants as hub_constants

    from pgolf.tools.data.fineweb import HfHubClient

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at call time by the client
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FetchError, match="needs network access"):
        HfHubClient().download("datasets/manifest.json")


def _caseops_remote(root: Path) -> Path:
    """A community export under another prefix: a CaseOps variant with byte sidecars and docs."""
    name = "fineweb10B_sp1024_caseops_v1"
    base = root / "exp" / "datasets" / name
    write_shard(base / "fineweb_val_000000.bin", np.array([1, 5, 6, 1, 7], dtype=np.uint16))
    write_shard(base / "fineweb_val_bytes_000000.bin", np.array([0, 2, 3, 0, 1], dtype=np.uint16))
    write_shard(base / "fineweb_train_000000.bin", np.array([1, 8, 9], dtype=np.uint16))
    (root / "exp" / "tokenizers").mkdir(parents=True)
    (root / "exp" / "tokenizers" / "caseops.model").write_bytes(b"cased model")
    (root / "exp" / "docs_selected.jsonl").write_text('{"text": "Doc"}\n')
    (root / "exp" / "docs_selected.source_manifest.json").write_text("{}")
    manifest = {
        "datasets": [{"name": name, "tokenizer_name": "c", "stats": {"files_train": 1, "files_val": 1}}],
        "tokenizers": [{"name": "c", "model_path": "tokenizers/caseops.model"}],
    }
    (root / "exp" / "manifest.json").write_text(json.dumps(manifest))
    return base


def test_a_community_export_brings_its_sidecars_docs_and_provenance(remote, tmp_path):
    from pgolf.data.manifest import load_manifest
    from pgolf.tools.data.fineweb import Source

    base = _caseops_remote(remote)
    out, hub, quiet = tmp_path / "data", FakeHub(remote), {"log": lambda s: None}
    community = Source("someone/caseops", "exp")
    r = fetch_fineweb("sp1024_caseops_v1", 1, out, source=community, with_docs=True, client=hub, **quiet)
    ds = out / "datasets" / "fineweb10B_sp1024_caseops_v1"
    assert r.dataset_dir == ds and (ds / "fineweb_val_bytes_000000.bin").is_file()
    assert (out / "docs_selected.jsonl").read_text() == '{"text": "Doc"}\n'
    m = load_manifest(ds)
    assert m["source"]["repo"] == "someone/caseops" and m["tokenizer"]["path"] == "tokenizers/caseops.model"
    assert m["splits"]["val"]["shards"][0]["tokens"] == 5
    assert m["splits"]["val"]["byte_sidecar"]["shards"][0]["file"] == "fineweb_val_bytes_000000.bin"
    # a rerun skips everything and keeps the provenance
    assert len(fetch_fineweb("sp1024_caseops_v1", 1, out, source=community, client=hub, **quiet).skipped) == 4
    # the same folder name from another repository is refused, not mixed; --replace clears it
    other = Source("another/repo", "exp")
    with pytest.raises(FetchError, match="holds someone/caseops's files"):
        fetch_fineweb("sp1024_caseops_v1", 1, out, source=other, client=hub, **quiet)
    r = fetch_fineweb("sp1024_caseops_v1", 1, out, source=other, replace=True, client=hub, **quiet)
    assert len(r.downloaded) == 4 and load_manifest(ds)["source"]["repo"] == "another/repo"
    # a CaseOps export without its sidecars is refused at download, before anything is scored
    (base / "fineweb_val_bytes_000000.bin").unlink()
    with pytest.raises(FetchError, match="byte sidecars for 0 of 1"):
        fetch_fineweb("sp1024_caseops_v1", 1, tmp_path / "d2", source=community, client=hub, **quiet)


def test_unrecorded_folders_are_not_adopted_and_an_unfinished_fetch_is_not_scored(remote, tmp_path):
    from pgolf.config.data import DataConfig
    from pgolf.data.valset import load_validation
    from pgolf.errors import DataError
    from pgolf.tools.data.build import DataBuildError, build_dataset

    out, quiet = tmp_path / "data", {"log": lambda s: None}
    ds = out / "datasets" / "fineweb10B_sp1024"
    write_shard(ds / "fineweb_train_000000.bin", np.zeros(50, dtype=np.uint16))  # another tool's file
    with pytest.raises(FetchError, match="holds an unrecorded source's files"):
        fetch_fineweb("sp1024", 1, out, client=FakeHub(remote), **quiet)

    class Dies(FakeHub):
        def download(self, path):
            if path.endswith("train_000000.bin"):
                raise FetchError("connection reset (fake)")
            return super().download(path)

    with pytest.raises(FetchError, match="connection reset"):
        fetch_fineweb("sp1024", 1, out, client=Dies(remote), replace=True, **quiet)
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 5)) for _ in range(400)]
    text = [" ".join(rng.choice(words, 200)) for _ in range(40)]
    local = build_dataset(text, out_root=tmp_path / "local", name="local", vocab_size=300, val_docs=2)
    cfg = DataConfig(root=str(out), dataset="datasets/fineweb10B_sp1024", tokenizer=str(local.tokenizer_path))
    with pytest.raises(DataError, match="its download did not finish"):
        load_validation(cfg, 1024)
    fetch_fineweb("sp1024", 1, out, client=FakeHub(remote), **quiet)  # the same source completes it
    with pytest.raises(DataBuildError, match="holds a downloaded export"):  # and a build cannot overwrite it
        build_dataset(text, out_root=out, name="fineweb10B", vocab_size=1024, val_docs=1)

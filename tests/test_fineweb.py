"""The FineWeb download against a fake hub client."""

import json
from pathlib import Path

import numpy as np
import pytest

from pgolf.data.fineweb import FetchError, fetch_fineweb
from pgolf.data.shards import read_shard, write_shard

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

    from pgolf.data.fineweb import HfHubClient

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at call time by the client
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FetchError, match="needs network access"):
        HfHubClient().download("datasets/manifest.json")

"""Shared fixtures: a small demo dataset built once per session, and tiny configs that use it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.config.run import RunConfig, apply_overrides
from pgolf.tools.data.stdlib_corpus import build_demo_dataset
from pgolf.tools.presets import get_preset

TEST_DOCS = 160
TEST_VAL_DOCS = 12


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pipeline on the first 160 stdlib modules: ~1M characters, vocab 1024."""
    root = tmp_path_factory.mktemp("data")
    build_demo_dataset(root, vocab_size=1024, val_docs=TEST_VAL_DOCS, max_docs=TEST_DOCS)
    return root


@pytest.fixture(scope="session")
def built(data_root: Path):
    return build_demo_dataset(data_root, vocab_size=1024, val_docs=TEST_VAL_DOCS, max_docs=TEST_DOCS)


@pytest.fixture(scope="session")
def demo_at(data_root: Path):
    """Builds (once) the same test corpus at another vocabulary under ``data_root``."""

    def build(vocab_size: int) -> Path:
        build_demo_dataset(data_root, vocab_size=vocab_size, val_docs=TEST_VAL_DOCS, max_docs=TEST_DOCS)
        return data_root

    return build


WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda",
         "mu", "nu", "xi", "omicron", "pi")  # fmt: skip


def tiny_docs(n: int) -> list[str]:
    """``n`` short documents of Greek letter names (a corpus that builds in a fraction of a second)."""
    rng = np.random.default_rng(1)
    return [" ".join(rng.choice(WORDS, size=30 + i % 23)) + f". Note {i} ends here." for i in range(n)]


@pytest.fixture(scope="session")
def dev_data(tmp_path_factory: pytest.TempPathFactory):
    """(data root, build) of 120 tiny documents with a dev split (issue 34): 10 validation, 12 dev, 98
    train, vocab 300, small shards (several per split), in ``datasets/t_sp300_dev12``."""
    from pgolf.tools.data.build import build_dataset

    root = tmp_path_factory.mktemp("devdata")
    built = build_dataset(tiny_docs(120), out_root=root, name="t", vocab_size=300, val_docs=10, dev_docs=12,
                          shard_tokens=1500)  # fmt: skip
    return root, built


@pytest.fixture(scope="session")
def plain_data(dev_data):
    """The same corpus built without a dev split, under the same data root (``datasets/t_sp300``)."""
    from pgolf.tools.data.build import build_dataset

    root, _ = dev_data
    return root, build_dataset(tiny_docs(120), out_root=root, name="t", vocab_size=300, val_docs=10)


def debug_config(data_root: Path, **overrides) -> RunConfig:
    cfg = get_preset("debug")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_root)))
    return apply_overrides(cfg, overrides)


@pytest.fixture(scope="session")  # a stateless factory: module fixtures may use it too
def debug_cfg(data_root: Path):
    def make(**overrides) -> RunConfig:
        return debug_config(data_root, **overrides)

    return make


@pytest.fixture(autouse=True)
def _threads():
    # Two cores: keep intra-op threads fixed so timings and results do not depend on the runner.
    torch.set_num_threads(2)
    yield


ARITH_MODULES = {"test_model", "test_metric", "test_quant", "test_fisher", "test_optim", "test_experts",
                 "test_techniques", "test_frontier"}  # fmt: skip
"""Modules of float comparisons against references and tolerances: every test in them is ``arith``
(tests/test_portability.py runs them again on AVX2 kernels, as on a laptop without AVX-512)."""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in ARITH_MODULES:
            item.add_marker(pytest.mark.arith)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

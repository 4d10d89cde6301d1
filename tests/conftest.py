"""Shared fixtures: a small demo dataset built once per session, and tiny configs that use it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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

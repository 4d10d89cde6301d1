"""The suite on another CPU's kernels: users' CPUs differ from the development VM's (AMD without
AVX-512, AVX2 laptops, no AMX), and oneDNN/ATen pick kernels by instruction set, so a float that a
test compares can move. The ``arith`` tests (tests/conftest.py) run again here in a child pytest
limited to AVX2 kernels, so that a test which only holds on this VM's kernels fails here, not on a
user's first run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

LOWER_ISA = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.mark.skipif(
    platform.machine().lower() not in {"x86_64", "amd64"}, reason="AVX2 is an x86 instruction set"
)
@pytest.mark.skipif(
    os.environ.get("ATEN_CPU_CAPABILITY") is not None, reason="already running on lowered kernels"
)
def test_arithmetic_tests_pass_on_avx2_kernels():
    root = Path(__file__).resolve().parent
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "arith", "-p", "no:cacheprovider", "--durations=0",
           "-o", "addopts=", str(root)]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, **LOWER_ISA}, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "no tests ran" not in proc.stdout, tail

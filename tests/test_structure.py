"""House rules from STYLE.md that a test can measure."""

import ast
from pathlib import Path

from pgolf.artifact import package_dir

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules():
    return sorted(package_dir().rglob("*.py"))


def test_modules_are_short():
    long = {
        str(p.relative_to(package_dir())): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_functions_are_short():
    long = []
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.name}:{node.name} ({n} lines)")
    assert long == []


def test_no_work_or_cuda_at_import():
    """Importing every module must not touch CUDA or start work (checked by source: no module-level
    calls other than definitions, constants and registrations)."""
    for p in _modules():
        if p.name == "__main__.py":  # runs only as `python -m pgolf`
            continue
        tree = ast.parse(p.read_text())
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                raise AssertionError(f"{p.name}:{node.lineno} calls something at import time")
    assert "cuda" not in Path(package_dir() / "__init__.py").read_text()


def test_lint_and_format():
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    assert ruff, "ruff is part of the test extras"
    root = package_dir().parent.parent
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run([ruff, *args], cwd=root, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr

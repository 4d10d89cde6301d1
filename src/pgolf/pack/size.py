"""Byte accounting: counted code (a computed import closure) and the one size report.

Counted bytes (the contest rule, seed-techniques §10) = artifact file + code. The code is every
pgolf module that ``pgolf.entry`` (the bundled file's main: train -> pack -> score) or
``pgolf.eval.artifact`` (score an artifact) can import, found by walking their ``import``
statements, lazy ones inside functions included, plus the ``__init__`` of every package on the way.
Tooling (CLI, presets, data building, plots, help text) stays outside because nothing counted
imports it; a test keeps it so. Optional evaluation methods (TTT, experts, the correction table)
are plug-ins (``EvalConfig.plugin_modules``), loaded by name and counted only in a config that uses
them. Its bytes are those of the bundled file (``pack.bundle``).
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pgolf

ENTRY_POINTS = ("pgolf.entry", "pgolf.eval.artifact")


def package_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    root = package_dir()
    for cand in (root / rel / "__init__.py", (root / rel).with_suffix(".py")):
        if cand.is_file() and cand.is_relative_to(root):
            return cand
    return None


def _imported_modules(module: str, path: Path) -> set[str]:
    """pgolf modules named by any import statement in ``path`` (``from pkg import sub`` names the
    submodule when ``sub`` is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")}
    return {m for m in found if m == "pgolf" or m.startswith("pgolf.")}


@cache
def counted_modules(
    plugins: tuple[str, ...] = (), entry_points: tuple[str, ...] = ENTRY_POINTS
) -> tuple[str, ...]:
    """Paths (relative to the package) of the counted modules, sorted: the closure of the entry
    points and of the config's plug-ins."""
    seen: set[str] = set()
    todo = [*entry_points, *plugins]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _module_file(module)
        if path is None:
            raise ImportError(f"counted code: {module} is not a pgolf module")
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += sorted(_imported_modules(module, path) - seen)
    root = package_dir()
    return tuple(sorted(str(_module_file(m).relative_to(root)) for m in seen))


def sources_sha256(plugins: tuple[str, ...] = ()) -> str:
    """Digest over the counted modules' paths and sources (before any minifying): changes whenever
    counted code does. A bundled file carries the digest of the sources it was built from."""
    if pgolf.BUNDLE:
        return pgolf.BUNDLE["sources_sha256"]
    h = hashlib.sha256()
    root = package_dir()
    for m in counted_modules(plugins):
        data = (root / m).read_bytes()
        h.update(f"{m}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@dataclass(frozen=True)
class SizeReport:
    model_bytes: int
    code_bytes: int
    cap_bytes: int
    """0: no cap (the debug track)."""

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.code_bytes

    @property
    def fits(self) -> bool:
        return not self.cap_bytes or self.total_bytes <= self.cap_bytes

    @property
    def headroom(self) -> int:
        return self.cap_bytes - self.total_bytes

    def verdict(self) -> str:
        """``cap N, fits by H`` / ``cap N, OVER THE CAP by H`` / ``no cap``."""
        if not self.cap_bytes:
            return "no cap"
        return f"cap {self.cap_bytes}, {'fits' if self.fits else 'OVER THE CAP'} by {abs(self.headroom)}"

    def log_lines(self, label: str) -> list[str]:
        """The contest's three size lines, e.g. label ``int8+zlib``."""
        return [
            f"Serialized model {label}: {self.model_bytes} bytes",
            f"Code size: {self.code_bytes} bytes",
            f"Total submission size {label}: {self.total_bytes} bytes ({self.verdict()})",
        ]

    def to_dict(self) -> dict:
        return {
            "bytes_model": self.model_bytes,
            "bytes_code": self.code_bytes,
            "bytes_total": self.total_bytes,
            "bytes_cap": self.cap_bytes,
            "fits_cap": self.fits,
        }

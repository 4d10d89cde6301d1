"""The embedded demo corpus: English prose that every Python installation carries.

Each document is the natural-language text of one standard-library module: its docstrings
(module, classes, functions, in source order) and its ``#`` comments, joined by blank lines.
Code itself is left out. Files under ``site-packages`` and modules with fewer than
``min_chars`` characters of text are skipped, so nothing depends on what the user installed.

The corpus is deterministic for a given Python version (the stdlib changes between
releases), which is why the manifest records ``python_version`` and the corpus hash.
"""

from __future__ import annotations

import ast
import hashlib
import io
import platform
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path

from pgolf.data.manifest import load_manifest
from pgolf.errors import DataError
from pgolf.tools.data.build import BuiltDataset, build_dataset, dataset_tag, layout

MIN_CHARS = 400
"""Modules with less prose than this are skipped (mostly tiny ``__init__`` files)."""


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _docstrings(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                line = node.body[0].lineno if node.body else 0
                out.append((line, doc))
    return out


def _comments(source: str) -> list[tuple[int, str]]:
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                if text and not text.startswith("!") and "coding" not in text[:20]:
                    out.append((tok.start[0], text))
    except (tokenize.TokenError, SyntaxError):
        return []
    return out


def module_prose(source: str) -> str:
    """Docstrings and comments of one module, in source order; consecutive comments form a
    paragraph."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    items = sorted(
        [(line, doc, False) for line, doc in _docstrings(tree)]
        + [(line, c, True) for line, c in _comments(source)],
        key=lambda x: x[0],
    )
    paragraphs: list[str] = []
    run: list[str] = []
    last_comment_line = -2
    for line, text, is_comment in items:
        if is_comment and run and line == last_comment_line + 1:
            run.append(text)
        else:
            if run:
                paragraphs.append(" ".join(run))
                run = []
            if is_comment:
                run = [text]
            else:
                paragraphs.append(text)
        if is_comment:
            last_comment_line = line
    if run:
        paragraphs.append(" ".join(run))
    return "\n\n".join(p for p in paragraphs if p.strip())


def iter_stdlib_documents(min_chars: int = MIN_CHARS, max_docs: int | None = None) -> Iterator[str]:
    """Yield one document per stdlib module, in sorted path order."""
    root = stdlib_root()
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
    n = 0
    for path in files:
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = module_prose(source)
        if len(text) >= min_chars:
            yield text
            n += 1
            if max_docs is not None and n >= max_docs:
                return


DEMO_NAME = "pgolf_demo"
DEMO_VAL_DOCS = 60
"""Validation documents of the demo split (about 5% of the ~1,100 modules of Python 3.11)."""
DEMO_DEV_DOCS = 60
"""The dev split ``pgolf data demo --dev-docs`` suggests, as large as the validation split. The default
build has none (``dev_docs=0``), so its training documents, and every figure measured on it, stay as
they were; a build with one lands in its own folder (``pgolf_demo_sp<vocab>_dev<N>``)."""


def demo_source(max_docs: int | None) -> dict:
    """What the demo corpus is made of; a cached build is reused only if this matches."""
    return {
        "corpus": "docstrings and comments of the Python standard library, one document per module",
        "extractor_version": 1,
        "stdlib_root": str(stdlib_root()),
        "python_version": platform.python_version(),
        "min_chars": MIN_CHARS,
        "max_docs": max_docs,
    }


def corpus_hash(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(hashlib.sha256(d.encode()).digest())
    return h.hexdigest()


def build_demo_dataset(
    out_root: str | Path,
    *,
    vocab_size: int = 1024,
    val_docs: int = DEMO_VAL_DOCS,
    max_docs: int | None = None,
    force: bool = False,
    dev_docs: int = 0,
) -> BuiltDataset:
    """Build (or reuse) the demo dataset under ``out_root`` in the contest layout; with ``dev_docs``
    a dev split too, in its own folder."""
    out_root = Path(out_root)
    source = demo_source(max_docs)
    folder = out_root / layout(DEMO_NAME, vocab_size, dataset_tag(False, dev_docs))[0]
    if not force and (folder / "manifest.json").exists():
        try:
            manifest = load_manifest(folder)
        except DataError:
            manifest = {}
        tok = out_root / manifest.get("tokenizer", {}).get("path", "missing")
        same = {k: v for k, v in manifest.get("source", {}).items() if k != "corpus_sha256"} == source
        counts = (manifest.get("val_docs"), manifest.get("dev_docs", 0)) == (val_docs, dev_docs)
        if same and counts and tok.exists():
            return BuiltDataset(folder, tok, manifest)
    docs = list(iter_stdlib_documents(max_docs=max_docs))
    source["corpus_sha256"] = corpus_hash(docs)
    return build_dataset(
        docs,
        out_root=out_root,
        name=DEMO_NAME,
        vocab_size=vocab_size,
        val_docs=val_docs,
        source=source,
        dev_docs=dev_docs,
    )

"""``build_bundle(cfg, form)``: the single ``train_gpt.py`` a submission counts (DESIGN: pack).

The file embeds every counted module's source (``pack.size.counted_modules``) and a small import
hook that serves ``pgolf.*`` from them, so that it runs with nothing of pgolf installed: only the
third-party packages the counted code imports. The run's resolved config is baked in, less
``data.root``: where the data lives is not code, so a run's counted bytes and digest do not depend on
it (the bundled file reads ``./data``, ``PGOLF_DATA_ROOT`` or ``DATA_PATH``). The contest's
environment variables (``DATA_PATH``, ``SEED``, ``MAX_WALLCLOCK_SECONDS``, ...) adjust it at start
(``pgolf.entry``). Three forms, each a plain UTF-8 Python file whose size is its counted bytes:

- ``readable``: the sources as they are, one raw string per module;
- ``minified``: each module, and the import hook, through python-minifier (docstrings and
  annotations of arguments and variables dropped, locals renamed, module-level names kept since
  modules import them);
- ``compressed``: the minified file, lzma (stdlib, so nothing more needs installing), base85, and a
  one-line self-extracting wrapper, the late records' layout.

The bundling code is counted itself (``pack.size.code_account`` builds a run's bundle to count it),
but a bundled file never runs it: it counts its own file.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import lzma
import math
import pprint
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pgolf
from pgolf import __version__
from pgolf.config.pack import CODE_FORMS
from pgolf.config.run import RunConfig
from pgolf.errors import ConfigError
from pgolf.pack.size import counted_modules, package_dir, sources_sha256

BOOTSTRAP = '''import importlib.abc,importlib.util,linecache,os,sys
class PgolfBundle(importlib.abc.MetaPathFinder,importlib.abc.Loader):
    """Serves pgolf's modules from the sources embedded in this file."""
    def find_spec(self,name,path=None,target=None):
        if name in MODULES:
            origin,package=self.filename(name),MODULES[name][0]
            return importlib.util.spec_from_loader(name,self,origin=origin,is_package=package)
    def filename(self,name):
        return '<bundle>/'+name.replace('.','/')+'.py'
    def create_module(self,spec):
        return None
    def exec_module(self,module):
        source=MODULES[module.__name__][1]
        filename=self.filename(module.__name__)
        linecache.cache[filename]=(len(source),None,source.splitlines(True),filename)
        exec(compile(source,filename,'exec'),module.__dict__)
    def get_source(self,name):
        return MODULES[name][1]
sys.meta_path.insert(0,PgolfBundle())
import pgolf
pgolf.BUNDLE={'file':os.path.abspath(__file__),'form':FORM,'sources_sha256':SOURCES_SHA256}
if __name__=='__main__':
    from pgolf.entry import main
    sys.exit(main(CONFIG))
'''

HEADER = '''#!/usr/bin/env python3
"""pgolf {version} bundle of preset {preset!r} (track {track}), {form} form: pgolf's whole counted code
in one file, the resolved config baked into CONFIG. Run from a records folder:

    torchrun --standalone --nproc_per_node=N train_gpt.py

The contest's environment variables adjust the config (DATA_PATH, TOKENIZER_PATH, VOCAB_SIZE, SEED,
RUN_ID, MAX_WALLCLOCK_SECONDS, ITERATIONS, ...; see pgolf.entry), as does PGOLF_<SECTION>_<FIELD>
for any field, e.g. PGOLF_TRAIN_SEQ_LEN=2048; the data root is ./data or PGOLF_DATA_ROOT. Output
goes to runs/<RUN_ID>/ (or $OUT_DIR).
"""
'''


def module_name(rel: str) -> tuple[str, bool]:
    """``config/run.py`` -> (``pgolf.config.run``, False);
    ``config/__init__.py`` -> (``pgolf.config``, True)."""
    parts = ["pgolf", *rel.removesuffix(".py").split("/")]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


@cache
def _sources(plugins: tuple[str, ...]) -> dict[str, tuple[bool, str]]:
    root = package_dir()
    out = {}
    for rel in counted_modules(plugins):
        name, is_package = module_name(rel)
        out[name] = (is_package, (root / rel).read_text(encoding="utf-8"))
    return out


def _minify(source: str) -> str:
    try:
        import python_minifier
    except ImportError:
        raise ConfigError(
            "pack.code_form minified/compressed needs python-minifier (pip install python-minifier)"
        ) from None
    return python_minifier.minify(
        source,
        remove_literal_statements=True,
        hoist_literals=False,
        rename_locals=True,
        rename_globals=False,
        remove_asserts=False,
        remove_debug=False,
    )


@cache
def _minified_bootstrap() -> str:
    return _minify(BOOTSTRAP) + "\n"


@cache
def _minified(source: str) -> str:
    return _minify(source)


def _minified_sources(plugins: tuple[str, ...]) -> dict[str, tuple[bool, str]]:
    return {name: (pkg, _minified(src)) for name, (pkg, src) in _sources(plugins).items()}


def _literal(text: str) -> str:
    """A raw triple-quoted literal where the text allows one (readable, and it compresses better
    than ``repr``'s escapes), else ``repr``; checked to read back as ``text``."""
    for q in ("'''", '"""'):
        if q in text or text.endswith(("\\", q[0])):
            continue
        lit = f"r{q}{text}{q}"
        try:
            if ast.literal_eval(lit) == text:
                return lit
        except SyntaxError:
            pass
    return repr(text)


def _flat(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _assemble(cfg: RunConfig, modules: dict[str, tuple[bool, str]], form: str, readable: bool) -> str:
    config: Any = cfg.to_dict()
    config["data"]["root"] = ""
    bad = [k for k, v in _flat(config) if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ConfigError(f"cannot bake non-finite values into the bundle: {', '.join(bad)}")
    lines = (
        [HEADER.format(version=__version__, preset=cfg.preset, track=cfg.track, form=form)]
        if readable
        else []
    )
    lines += [
        f"FORM={form!r}",
        f"SOURCES_SHA256={sources_sha256(cfg.eval.plugin_modules)!r}",
        "CONFIG=" + (pprint.pformat(config, sort_dicts=False, width=100) if readable else repr(config)),
        "MODULES={",
        *(f"{name!r}:({pkg},{_literal(src)})," for name, (pkg, src) in modules.items()),
        "}",
        BOOTSTRAP if readable else _minified_bootstrap(),
    ]
    return "\n".join(lines)


@cache
def build_bundle(cfg: RunConfig, form: str) -> str:
    """The text of ``cfg``'s bundled ``train_gpt.py`` in ``form``."""
    if form not in CODE_FORMS:
        raise ConfigError(f"bundle form {form!r}; expected one of {CODE_FORMS}")
    plugins = cfg.eval.plugin_modules
    if form == "readable":
        return _assemble(cfg, _sources(plugins), form, readable=True)
    minified = _assemble(cfg, _minified_sources(plugins), form, readable=False)
    if form == "minified":
        return minified
    packed = lzma.compress(minified.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    payload = base64.b85encode(packed).decode("ascii")
    return f'import base64,lzma\nexec(lzma.decompress(base64.b85decode("{payload}")))\n'


def bundle_digest(text: str) -> tuple[int, str]:
    """(counted bytes, sha256) of a bundle's text as written (UTF-8)."""
    return _digest(text.encode("utf-8"))


def file_digest(path: str | Path) -> tuple[int, str]:
    """(bytes, sha256) of a bundled file on disk."""
    return _digest(Path(path).read_bytes())


def _digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CodeAccount:
    """The counted code of a run: its bundled file's form, bytes and sha256, and the digest of the
    sources it was built from."""

    form: str
    bytes: int
    sha256: str
    sources_sha256: str


def code_account(cfg: RunConfig) -> CodeAccount:
    """In a bundled file: that file, whatever the config says. Otherwise: ``cfg``'s bundle in the
    form ``cfg.pack.code_form``, built (not written) to be counted."""
    if pgolf.BUNDLE:
        n, digest = file_digest(pgolf.BUNDLE["file"])
        return CodeAccount(pgolf.BUNDLE["form"], n, digest, sources_sha256())
    n, digest = bundle_digest(build_bundle(cfg, cfg.pack.code_form))
    return CodeAccount(cfg.pack.code_form, n, digest, sources_sha256(cfg.eval.plugin_modules))

"""The reference stays true: the generated pages (docs/cli.md, docs/presets.md, the README's results
table) equal a fresh generation, every relative link of README.md and docs/ resolves, every command
and argument is described, and the README stays a front door."""

import argparse
import re
from pathlib import Path

import pytest

from pgolf.errors import PgolfError
from pgolf.tools import docs
from pgolf.tools.cli import build_parser, main
from pgolf.tools.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _commands(path: str, p: argparse.ArgumentParser):
    yield path, p
    for name, sub, _ in docs._subcommands(p):
        yield from _commands(f"{path} {name}", sub)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_generated_pages_are_fresh(capsys):
    assert docs.stale(ROOT, build_parser()) == [], "run `pgolf docs` and commit the result"
    assert main(["docs", "--root", str(ROOT), "--check"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (page.parent / path).exists(), f"{page.name}: broken link {target}"
        elif anchor:
            assert anchor in anchors, f"{page.name}: no heading for #{anchor}"


def test_every_command_argument_and_preset_is_in_the_reference():
    cli = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    presets = (ROOT / "docs" / "presets.md").read_text(encoding="utf-8")
    for path, p in _commands("pgolf", build_parser()):
        if path != "pgolf":
            assert f"## {path}\n" in cli, path
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert a.help, f"{path} {a.option_strings or a.dest}: no help text, so no meaning in docs/cli.md"
    for name in PRESETS:
        assert f"### `{name}`\n" in presets, name


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert docs.RESULTS_BEGIN in text and docs.RESULTS_END in text
    for page in ("getting-started", "scoring", "submissions", "cli", "presets", "development"):
        assert f"docs/{page}.md" in text, page


def test_the_results_table_reads_every_record_folder(tmp_path):
    """One row per record folder under records/, with its link; the splice keeps the rest of a page."""
    rows = docs.results_table(ROOT)
    folders = sorted((ROOT / "records").glob("*/*/submission.json"))
    assert len([r for r in rows if r.startswith("| `")]) == len(folders) > 0
    for sub in folders:
        assert any(f"({sub.parent.relative_to(ROOT).as_posix()}/)" in r for r in rows)
    page = f"head\n{docs.RESULTS_BEGIN}\nold\n{docs.RESULTS_END}\ntail\n"
    assert docs.splice(page, ["new"], "x") == f"head\n{docs.RESULTS_BEGIN}\nnew\n{docs.RESULTS_END}\ntail\n"
    with pytest.raises(PgolfError, match="x: expected the markers"):
        docs.splice("no markers", ["new"], "x")

"""Progress for tooling's long commands (data build, plan, check): training's own bar (``runlog.bar``:
tqdm on stderr when stderr is a terminal), else nothing, so that a pipe or a log file gets the
command's output alone. Call sites need no ``if``: off a terminal every method does nothing."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TextIO, TypeVar

from pgolf.runlog import bar

T = TypeVar("T")


class Progress:
    """A bar of ``total`` units (None: a count), or of named stages with ``stage``."""

    def __init__(
        self, desc: str, total: int | None = None, unit: str = "it", stream: TextIO | None = None
    ) -> None:
        self.bar = bar(stream or sys.stderr, desc=desc, total=total, unit=unit)
        self.staged = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stage(self, name: str) -> None:
        """Name the stage now running; the one before it counts as done."""
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)
            self.bar.update(int(self.staged))
            self.bar.refresh()  # now, not at the next update: a stage can be long
        self.staged = True

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            if self.staged:
                self.bar.update()
            self.bar.close()
            self.bar = None


def track(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", stream: TextIO | None = None
) -> Iterator[T]:
    """``items`` unchanged, counted on a bar (on a terminal) of ``total`` (default: their length, if any)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(desc, total, unit, stream) as p:
        for item in items:
            yield item
            p.update()

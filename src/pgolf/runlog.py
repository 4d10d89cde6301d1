"""Run logs: one parseable ``key:value`` line per event (contest-compatible), the same events as
JSONL, and a progress bar when stdout is a terminal (``bar``, tooling's too); long loops off the step
loop (calibration, evaluation) tick a line every ~30 s (``Ticker``). Only the main rank writes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def bar(stream: TextIO, **kw: Any) -> Any:
    """A tqdm bar on ``stream`` when it is a terminal, else None: tqdm is imported only then, and a pipe
    or a log file gets no bar."""
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(file=stream, leave=False, dynamic_ncols=True, **kw)


TICK_S = 30.0
"""Seconds between a long loop's progress lines (``Ticker``)."""


class Ticker:
    """``tick(done)`` sends ``what:done/total elapsed:Ns`` to ``echo`` at most once per ``TICK_S`` seconds
    of wall time, the first after ``TICK_S``: a long loop says where it is without a line per step. It
    reads the host's clock only (no device sync); without ``echo`` it prints nothing."""

    def __init__(
        self,
        echo: Callable[[str], None] | None,
        what: str,
        total: int,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.echo, self.what, self.total, self.now = echo, what, total, now
        self.t0 = self.last = now()

    def __call__(self, done: int) -> None:
        if self.echo and (t := self.now()) - self.last >= TICK_S:
            self.last = t
            self.echo(f"{self.what}:{done}/{self.total} elapsed:{t - self.t0:.0f}s")

    def over(self, items: Iterable) -> Iterator:
        """``items`` unchanged, ticking the count done before each."""
        for i, item in enumerate(items):
            self(i)
            yield item


class RunLog:
    def __init__(
        self, out_dir: Path | None, *, enabled: bool = True, echo: bool = True, stream: TextIO | None = None
    ) -> None:
        self.enabled = enabled
        self.echo = echo
        self.stream = stream or sys.stdout
        self.text = self.jsonl = None
        self.bar = None
        if enabled and out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.text_path, self.jsonl_path = out_dir / "train.log", out_dir / "events.jsonl"
            self.text = open(self.text_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
            self.jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115

    def line(self, text: str) -> None:
        """A free-form line (headers, the config block); text log and console only."""
        if not self.enabled:
            return
        if self.text:
            self.text.write(text + "\n")
            self.text.flush()
        if self.echo:
            if self.bar is not None:
                self.bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def event(self, kind: str, text: str | None = None, **fields: Any) -> None:
        """Write ``text`` (default: the fields as key:value) and a JSONL record of the fields."""
        if not self.enabled:
            return
        self.line(text if text is not None else " ".join(f"{k}:{fmt(v)}" for k, v in fields.items()))
        if self.jsonl:
            self.jsonl.write(json.dumps({"event": kind, "time": round(time.time(), 3), **fields}) + "\n")
            self.jsonl.flush()

    def start_progress(self, total: float, unit: str) -> None:
        if self.enabled and self.echo:
            self.bar = bar(self.stream, total=total, unit=unit)

    def progress(self, value: float) -> None:
        if self.bar is not None:
            self.bar.n = min(value, self.bar.total)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        for f in (self.text, self.jsonl):
            if f:
                f.close()
        self.text = self.jsonl = None

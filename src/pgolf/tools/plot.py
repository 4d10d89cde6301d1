"""Loss-curve PNGs (matplotlib, headless): one run's curve (``plot_run``, the demo's
``loss_curve.png``) and several runs grouped by configuration (``plot_runs``, ``pgolf plot``).

A run is what a run folder (``result.json`` + ``train.log``) or one seed of a record folder
(``result_seed<S>.json`` + ``train_seed<S>.log``) holds: the train loss of every step from the result,
and from the log the elapsed training time at the logged steps, the in-training validation scores and
the final round trip's label. Runs whose configurations have the same ``logs.config_digest`` (seed
and data root aside) are seeds of one configuration: one colour, their mean and min-max band.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.errors import PgolfError
from pgolf.tools.records.logs import IGNORED_FIELDS, SCORE, STEP, STOP, config_digest

VAL = re.compile(
    r"^step:(?P<step>\d+)/\d+ (?P<s>val|dev)_loss:\s*(?P<loss>\d+\.\d+) (?P=s)_bpb:\s*(?P<bpb>\d+\.\d+)"
)
"""An in-training validation line (dev_loss, dev_bpb in a run scoring the dev split, data.score_split)."""
X_AXES = {"steps": "step", "seconds": "training time (s)"}
"""``--x`` choices and their axis labels."""


@dataclass(frozen=True)
class RunCurve:
    """One run's training, as the plots need it."""

    source: str
    config: dict
    steps: np.ndarray
    """(N,) the step of each recorded train loss."""
    loss: np.ndarray
    """(N,) train loss, nats/token."""
    clock: np.ndarray
    """(K, 2) (step, seconds of training) where the log says; K is 0 for a run without a log."""
    val: np.ndarray
    """(V, 3) (step, val_loss, val_bpb) of the in-training validations (the pre-quantization one at
    the end included)."""
    final_loss: float
    final_bpb: float
    label: str
    """The final round trip's label (``int8_zlib``...), "" where the log is absent."""
    train_seconds: float
    split: str = "val"
    """What its scores are scores of: ``val``, or ``dev`` (``data.score_split``): every label says it."""

    @property
    def preset(self) -> str:
        return str(self.config.get("preset", "?"))

    @property
    def seed(self) -> int | None:
        return self.config.get("train", {}).get("seed")

    def seconds(self, steps: np.ndarray) -> np.ndarray:
        """Seconds of training at ``steps``: linear between logged steps, the last logged pace past
        them."""
        if not len(self.clock):
            raise PgolfError(f"{self.source}: its log has no train_time (plot it with --x steps)")
        s, t = np.r_[0.0, self.clock[:, 0]], np.r_[0.0, self.clock[:, 1]]
        pace = t[-1] / s[-1] if s[-1] else 0.0
        return np.where(steps <= s[-1], np.interp(steps, s, t), t[-1] + (steps - s[-1]) * pace)

    def x(self, steps: np.ndarray, axis: str) -> np.ndarray:
        return self.seconds(steps) if axis == "seconds" else np.asarray(steps, dtype=float)


def read_log(text: str) -> tuple[np.ndarray, np.ndarray, str]:
    """A training log's (step, seconds) pairs, (step, val_loss, val_bpb) rows and final round-trip
    label. The first time logged for a step counts (a final validation's line repeats the step after
    calibration)."""
    clock: dict[int, float] = {}
    val, label = [], ""
    for line in text.splitlines():
        if m := VAL.match(line):
            val.append((int(m["step"]), float(m["loss"]), float(m["bpb"])))
        if m := STEP.match(line) or STOP.match(line):
            clock.setdefault(int(m["step"]), int(m["ms"]) / 1000)
        elif (m := SCORE.match(line)) and m["label"].startswith("final_") and not label:
            label = m["label"].removeprefix("final_").removesuffix("_exact").removesuffix("_roundtrip")
    pairs = np.array(sorted(clock.items()), dtype=float).reshape(-1, 2)
    return pairs, np.array(val, dtype=float).reshape(-1, 3), label


def read_run(result: Path, log: Path) -> RunCurve:
    """One run from its result JSON and (when present) its training log."""
    try:
        r = json.loads(result.read_text())
        history = r["history"]
        steps = np.array([h["step"] for h in history], dtype=float)
        loss = np.array([h["train_loss"] for h in history], dtype=float)
        fields = {k: r[k] for k in ("config", "train_seconds")} | {"split": r.get("split", "val")}
        final = (float(r["val_loss"]), float(r["val_bpb"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"{type(e).__name__}: {e}"
        raise PgolfError(f"{result}: not a pgolf result with a loss history ({why})") from None
    if not len(steps):
        raise PgolfError(f"{result}: no training steps in its history")
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    clock, val, label = read_log(text)
    return RunCurve(
        source=str(result),
        steps=steps,
        loss=loss,
        clock=clock,
        val=val,
        label=label,
        final_loss=final[0],
        final_bpb=final[1],
        **fields,
    )


def load_runs(paths: list[Path]) -> list[RunCurve]:
    """Run folders (one run each) and record folders (one run per seed), in the order given."""
    runs = []
    for p in map(Path, paths):
        if (p / "result.json").is_file():
            runs.append(read_run(p / "result.json", p / "train.log"))
        elif seeds := sorted(p.glob("result_seed*.json")):
            runs += [read_run(r, p / f"train_{r.stem.removeprefix('result_')}.log") for r in seeds]
        else:
            raise PgolfError(f"{p}: not a run folder (result.json) or a record folder (result_seed*.json)")
    return runs


@dataclass(frozen=True)
class Group:
    """The runs of one configuration (its seeds)."""

    digest: str
    runs: list[RunCurve]
    differs: str
    """What sets the configuration apart from the others in the plot (``a.b=v, ...``)."""

    @property
    def name(self) -> str:
        presets = "/".join(dict.fromkeys(r.preset for r in self.runs))
        return f"{presets} {self.digest[:8]}"

    @property
    def bpb(self) -> np.ndarray:
        return np.array([r.final_bpb for r in self.runs])


def _flat(config: dict) -> dict[str, object]:
    ignored = {f"{s}.{f}" for s, f in IGNORED_FIELDS} | {"preset"}
    out: dict[str, object] = {}
    for key, value in config.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for sub, v in items:
            name = f"{key}.{sub}" if sub else key
            if name not in ignored:
                out[name] = v
    return out


def group_runs(runs: list[RunCurve], shown: int = 3) -> list[Group]:
    """Runs grouped by ``config_digest`` in order of first appearance. Each group says (up to ``shown``
    fields, those where the fewest other groups share its value first) how its configuration differs."""
    by_digest: dict[str, list[RunCurve]] = {}
    for r in runs:
        by_digest.setdefault(config_digest(r.config), []).append(r)
    flats = {d: {k: json.dumps(v) for k, v in _flat(rs[0].config).items()} for d, rs in by_digest.items()}
    keys = sorted({k for f in flats.values() for k in f})
    groups = []
    for d, rs in by_digest.items():
        sharing = {k: sum(f.get(k) == flats[d].get(k) for f in flats.values()) for k in keys}
        varied = sorted((k for k in keys if sharing[k] < len(flats)), key=lambda k: (sharing[k], k))
        parts = [f"{k}={textwrap.shorten(flats[d].get(k, '-').strip(chr(34)), 24)}" for k in varied[:shown]]
        more = f", +{len(varied) - shown} more" if len(varied) > shown else ""
        groups.append(Group(d, rs, ", ".join(parts) + more))
    return groups


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean over ``window`` points (fewer at the ends, never shifted)."""
    if window <= 1:
        return y.copy()
    k = np.ones(window)
    return np.convolve(y, k, "same") / np.convolve(np.ones_like(y), k, "same")


def window_for(n: int) -> int:
    """Smoothing window for a curve of ``n`` steps: about 1/30 of it, at least 5 (none under 10), odd."""
    return 1 if n < 10 else max(5, n // 30) | 1


@dataclass(frozen=True)
class Band:
    """A group's smoothed train loss over the union of its runs' x (NaN where a run has no data)."""

    x: np.ndarray
    """(G,) steps or seconds."""
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray
    """(G,) how many runs have data at each x."""


def band(group: Group, axis: str, window: int) -> Band:
    """Each run smoothed, then mean, min and max over the runs that reach each x: every run is drawn
    to its own end, never cut to the shortest."""
    xs = [r.x(r.steps, axis) for r in group.runs]
    grid = np.unique(np.concatenate(xs))
    ys = [smooth(r.loss, window) for r in group.runs]
    m = np.stack(
        [np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in zip(xs, ys, strict=True)]
    )  # (R, G)
    count = np.isfinite(m).sum(0)
    return Band(grid, np.nanmean(m, 0), np.nanmin(m, 0), np.nanmax(m, 0), count)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    _pyplot().close(fig)
    return path


def _ylim(ax, curves: list[np.ndarray], points: list[float], skip: float = 0.03) -> None:
    """From the lowest point to the highest smoothed loss after the first ``skip`` of each curve (where
    the first steps' loss, far above the rest, would flatten the differences that matter)."""
    tops = [np.nanmax(c[int(len(c) * skip) :]) for c in curves]
    lows = [np.nanmin(c) for c in curves] + points
    top, low = max(tops + points), min(lows)
    pad = 0.06 * (top - low or 1.0)
    ax.set_ylim(low - pad, top + pad)


def _title(fig, lines: list[str], width: int) -> None:
    """A title wrapped to the figure's width (never cut off at the sides)."""
    wrapped = [w for line in lines for w in textwrap.wrap(line, width, break_on_hyphens=False)]
    fig.suptitle("\n".join(wrapped), fontsize=10)


def run_figure(run: RunCurve, title: str = ""):
    """One run: the train loss raw (faint) and smoothed, the in-training validation losses, the final
    round trip's val_loss as a labelled line; steps below, seconds of training above where logged."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120, layout="constrained")
    w = window_for(len(run.steps))
    smoothed = smooth(run.loss, w)
    if w > 1:
        ax.plot(run.steps, run.loss, color="C0", lw=0.7, alpha=0.3, label="train loss, every step")
    ax.plot(
        run.steps,
        smoothed,
        color="C0",
        lw=1.8,
        label=f"train loss, mean of {w} steps" if w > 1 else "train loss",
    )
    sp = run.split
    if len(run.val):
        last = f"; the last, {run.val[-1, 2]:.4f} bpb, before quantization"
        ax.plot(*run.val[:, :2].T, "o", color="C1", ms=5, label=f"{sp}_loss during training{last}")
    what = f"{run.label} round trip" if run.label else "round trip"
    final = f"final {what}: {sp}_loss {run.final_loss:.4f}, {sp}_bpb {run.final_bpb:.4f}"
    ax.axhline(run.final_loss, color="C3", ls="--", lw=1.2, label=final)
    # at the left, on the line: the first steps' loss is far above the final score
    ax.annotate(
        f"{sp}_bpb {run.final_bpb:.4f}",
        (0, run.final_loss),
        xycoords=("axes fraction", "data"),
        xytext=(4, 3),
        textcoords="offset points",
        fontsize=9,
        color="C3",
    )
    _ylim(ax, [run.loss], [run.final_loss, *run.val[:, 1]], skip=0)
    ax.set(xlabel="step", ylabel="loss (nats/token)")
    if len(run.clock):
        _seconds_on_top(ax, run)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    seed = f", seed {run.seed}" if run.seed is not None else ""
    _title(
        fig,
        [
            title or f"{run.preset}{seed}",
            f"{int(run.steps[-1])} steps in {run.train_seconds:.0f} s; {sp}_bpb {run.final_bpb:.4f}"
            f" after the {what}",
        ],
        90,
    )
    return fig


def _seconds_on_top(ax, run: RunCurve) -> None:
    """A top axis in seconds of training: ``RunCurve.seconds`` tabulated, extended linearly below
    step 0 (the axis' margin), and its inverse."""
    end = max(run.steps[-1], run.clock[-1, 0])
    grid = np.linspace(-end, 2 * end, 1024)
    first = run.clock[0, 1] / run.clock[0, 0] if run.clock[0, 0] else 0.0
    t = run.seconds(np.maximum(grid, 0)) + np.minimum(grid, 0) * first
    top = ax.secondary_xaxis(
        "top", functions=(lambda x: np.interp(x, grid, t), lambda x: np.interp(x, t, grid))
    )
    top.set_xlabel("training time (s)")


def plot_run(run_dir: str | Path, path: str | Path, *, title: str = "") -> Path:
    """``run_figure`` of a run folder, written to ``path``."""
    return _save(run_figure(load_runs([Path(run_dir)])[0], title), path)


def _draw_band(ax, group: Group, b: Band, axis: str, color: str) -> None:
    """The mean (dotted where fewer runs than the group's have data), the min-max band where two or
    more do, and each run's in-training validation losses."""
    n = len(group.runs)
    full = b.count == n
    ax.plot(b.x, np.where(full, b.mean, np.nan), color=color, lw=1.6)
    if not full.all():
        part = ~full | np.r_[~full[1:], False] | np.r_[False, ~full[:-1]]  # shares a point with the rest
        ax.plot(b.x, np.where(part, b.mean, np.nan), color=color, lw=1.3, ls=":")
    if n > 1:
        ax.fill_between(b.x, b.lo, b.hi, where=b.count > 1, color=color, alpha=0.2, lw=0)
    for r in group.runs:
        if len(r.val):
            ax.plot(r.x(r.val[:, 0], axis), r.val[:, 1], "o", mfc="none", color=color, ms=5)


def _score(bpb: np.ndarray) -> str:
    return f"{bpb.mean():.4f} ± {bpb.std(ddof=1):.4f}" if len(bpb) > 1 else f"{bpb[0]:.4f}"


def _split(runs: list[RunCurve]) -> str:
    """What the runs' scores are scores of, for the labels: ``val``, ``dev``, or ``val/dev`` when both
    (the groups then differ by ``data.score_split``, which their names say)."""
    return "/".join(sorted({r.split for r in runs}, reverse=True))


def _draw_scores(bx, groups: list[Group]) -> None:
    """Each seed's final round-trip bpb (dots), each group's mean ± sd (diamond), labelled."""
    for i, g in enumerate(groups):
        color, bpb = f"C{i % 10}", g.bpb
        bx.scatter(np.full(len(bpb), i - 0.12), bpb, color=color, s=16, alpha=0.8)
        sd = [bpb.std(ddof=1)] if len(bpb) > 1 else None
        bx.errorbar([i + 0.05], [bpb.mean()], yerr=sd, fmt="D", color=color, ms=5, capsize=3)
        bx.annotate(_score(bpb).replace(" ± ", "\n± "), (i + 0.15, bpb.mean()), va="center", fontsize=8)
    bx.set_xticks(range(len(groups)), [g.name for g in groups], rotation=25, ha="right", fontsize=8)
    bx.set(xlim=(-0.5, len(groups) - 0.1), ylabel=f"{_split([r for g in groups for r in g.runs])}_bpb")
    bx.set_title("final round trip: seeds, mean ± sd", fontsize=9)
    bx.margins(y=0.15)
    bx.grid(alpha=0.3)


def _style_handles(groups: list[Group], bands: list[Band], window: int) -> list:
    """Legend entries that say how to read the lines (only those the figure uses)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    several = any(len(g.runs) > 1 for g in groups)
    what = "mean of the seeds' train loss, each" if several else "train loss"
    out = [Line2D([], [], color="0.3", lw=1.6, label=f"{what} smoothed over {window} steps")]
    if several:
        out.append(Patch(color="0.3", alpha=0.2, label="band: min-max of the seeds"))
    if any((b.count < len(g.runs)).any() for g, b in zip(groups, bands, strict=True)):
        out.append(Line2D([], [], color="0.3", lw=1.3, ls=":", label="dotted: where fewer seeds have data"))
    if any(len(r.val) for g in groups for r in g.runs):
        what = f"{_split([r for g in groups for r in g.runs])}_loss during training"
        out.append(Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label=what))
    return out


def runs_figure(runs: list[RunCurve], axis: str = "steps"):
    """Train loss of several runs, one colour per configuration (``group_runs``): its seeds' mean,
    smoothed, and their min-max band, each run to its own end; in-training val_loss as rings; the
    final val_bpb per seed and configuration beside it."""
    if axis not in X_AXES:
        raise PgolfError(f"--x: expected one of {', '.join(X_AXES)}, got {axis!r}")
    groups = group_runs(runs)
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(11, 4.8), dpi=120, layout="constrained", gridspec_kw={"width_ratios": [2.6, 1]}
    )
    w = window_for(max(len(r.steps) for r in runs))
    bands = [band(g, axis, w) for g in groups]
    handles = []
    for i, (g, b) in enumerate(zip(groups, bands, strict=True)):
        _draw_band(ax, g, b, axis, f"C{i % 10}")
        seeds = f"{len(g.runs)} seeds" if len(g.runs) > 1 else "1 run"
        what = f" ({g.differs})" if g.differs else ""
        label = f"{g.name}{what}: {seeds}, {_split(g.runs)}_bpb {_score(g.bpb)}"
        handles.append(Line2D([], [], color=f"C{i % 10}", lw=1.6, label=label))
    handles += _style_handles(groups, bands, w)
    vals = [v for r in runs for v in r.val[:, 1]]
    _ylim(ax, [c for b in bands for c in (b.lo, b.hi)], vals)
    ax.set(xlabel=X_AXES[axis], ylabel="train loss (nats/token)")
    ax.grid(alpha=0.3)
    _draw_scores(bx, groups)
    fig.legend(handles=handles, loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    n = len(runs)
    _title(
        fig,
        [
            f"{n} run{'s' * (n > 1)}, {len(groups)} configuration{'s' * (len(groups) > 1)}"
            " (grouped by config digest: same config apart from seed and data root)"
        ],
        120,
    )
    return fig


def plot_runs(paths: list[Path], path: str | Path, *, axis: str = "steps") -> Path:
    """``runs_figure`` of run and record folders, written to ``path``."""
    return _save(runs_figure(load_runs(paths), axis), path)

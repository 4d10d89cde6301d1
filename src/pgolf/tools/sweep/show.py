"""``pgolf sweep show`` (tooling): every trial of a study, whichever worker ran it, with the finalists'
re-runs, where each run's folder is (machine and path, from the trial's attributes), and the history and
importance plots of the search."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pgolf.tools.studies import lost, need_optuna
from pgolf.tools.sweep.study import STUDY, finalists, is_final, open_study, study_split


def show(out_dir: Path, *, storage: str | None = None, name: str = STUDY) -> list[str]:
    """The trials as a table, the finalists, the runs' folders, and the plots written into ``out_dir``."""
    study = open_study(out_dir, storage=storage, name=name, create=False)
    trials = study.get_trials(deepcopy=False)
    search = [t for t in trials if not is_final(t) and "surplus" not in t.user_attrs]
    keys = list(dict.fromkeys(k for t in search for k in t.params))
    split = study_split(study)
    lines = [
        f"scored on: the {split} split",
        " ".join(["trial", "state    ", f"{split}_bpb", *keys, "machine"]),
    ]
    for t in search:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        params = [_short(t.params.get(k, "-")) for k in keys]
        machine = t.user_attrs.get("worker", "-").split(":")[0]
        lines.append(
            " ".join([f"{t.number:5d}", f"{t.state.name:9s}", f"{value:>7s}", *params, machine]) + _note(t)
        )
    if n := sum("surplus" in t.user_attrs for t in trials):
        lines.append(f"({n} surplus trial(s): drawn or queued twice by a race between workers, never run)")
    if finals := finalists(trials):
        lines.append("finalists (mean over final seeds):")
        lines += [f"  trial {f['trial']}: {f['mean']:.4f} {f['val_bpb']} seeds {f['seeds']}" for f in finals]
    runs = [(t, r) for t in trials for r in t.user_attrs.get("runs", [])]
    if runs:
        lines.append("runs (machine:folder):")
        lines += [f"  {_label(t)} seed {r['seed']}: {r['host']}:{r['dir']}" for t, r in runs]
    return lines + _plots(search, Path(out_dir))


def _note(t) -> str:
    if "infeasible" in t.user_attrs:
        return f"  ({'; '.join(t.user_attrs['infeasible'])})"
    if "error" in t.user_attrs:
        return f"  (run failed: {t.user_attrs['error'].splitlines()[0]})"
    if lost(t):
        return "  (worker lost: its heartbeat stopped; not counted)"
    return ""


def _label(t) -> str:
    if is_final(t):
        return f"trial {t.number} (finalist {t.user_attrs['final_of']})"
    return f"trial {t.number}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plots(search, out_dir: Path) -> list[str]:
    """History and importances of the search's trials (not the finalists' re-runs)."""
    optuna = need_optuna()
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    view = optuna.create_study(direction="minimize")
    view.add_trials([t for t in search if t.state.is_finished()])
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, fn in (
        ("history", plots.plot_optimization_history),
        ("importance", plots.plot_param_importances),
    ):
        path = out_dir / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" notices of optuna's matplotlib plots
                ax = fn(view)
            ax.figure.savefig(path, dpi=110, bbox_inches="tight")
            out.append(f"wrote {path}")
        except (ValueError, RuntimeError) as e:  # e.g. importances need two finished trials
            out.append(f"no {name} plot: {e}")
    return out

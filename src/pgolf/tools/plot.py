"""Loss-curve PNGs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(
    history: list[dict], path: str | Path, *, title: str, val_loss: float | None = None, label: str = ""
) -> Path:
    """Train loss per step (nats/token); optionally the final validation loss (of the ``label``
    round trip) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], lw=1.2, label="train loss")
    if val_loss is not None:
        ax.axhline(
            val_loss, color="tab:red", ls="--", lw=1, label=f"val loss ({label} round trip) {val_loss:.3f}"
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_runs(runs: list[Path], path: str | Path) -> Path:
    """Train-loss curves of several runs (one colour per preset: the mean over its seeds, the band
    their min-max) and each run's round-trip val_bpb, in one PNG."""
    import json

    import matplotlib
    import numpy as np

    from pgolf.errors import PgolfError

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = {}
    for run in runs:
        try:
            r = json.loads((Path(run) / "result.json").read_text())
        except (OSError, ValueError) as e:
            raise PgolfError(f"{run}: no readable result.json ({e})") from None
        groups.setdefault(r["preset"], []).append(r)
    path = Path(path)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), dpi=120, gridspec_kw={"width_ratios": [2, 1]})
    for i, (preset, results) in enumerate(groups.items()):
        n = min(len(r["history"]) for r in results)
        steps = [h["step"] for h in results[0]["history"][:n]]
        losses = np.array([[h["train_loss"] for h in r["history"][:n]] for r in results])
        color = f"C{i}"
        ax.plot(steps, losses.mean(0), color=color, lw=1.2, label=f"{preset} ({len(results)} run(s))")
        if len(results) > 1:
            ax.fill_between(steps, losses.min(0), losses.max(0), color=color, alpha=0.25, lw=0)
        bpb = [r["val_bpb"] for r in results]
        bx.scatter([i] * len(bpb), bpb, color=color, s=18)
        bx.errorbar([i + 0.15], [np.mean(bpb)], yerr=[np.std(bpb, ddof=1)] if len(bpb) > 1 else None,
                    fmt="D", color=color, capsize=3)  # fmt: skip
    ax.set(
        xlabel="step",
        ylabel="train loss (nats/token)",
        ylim=(None, float(losses.max(0)[n // 10 :].max()) + 0.5),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    bx.set_xticks(range(len(groups)), list(groups), rotation=20, fontsize=8)
    bx.set(ylabel="val_bpb (round trip)", title="per run, mean ± std", xlim=(-0.5, len(groups) - 0.5))
    bx.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

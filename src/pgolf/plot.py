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

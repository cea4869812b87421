"""Training curves as PNG: validation HR@10 / NDCG@10 and the training loss against wall-clock minutes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_training_curves(
    runs: dict[str, Sequence[dict[str, float]]], path: Path, title: str, targets: dict[str, float] | None = None,
    xlabel: str = "minutes of the time budget",
) -> Path:
    """One panel per metric (HR@10, NDCG@10, loss), one line per run; `targets` draws horizontal goal lines.

    Each run is its `history` (rows with "elapsed" seconds on the run's budget clock, "HR@10", "NDCG@10", "loss").
    """
    from matplotlib.figure import Figure  # deferred: matplotlib is only needed when a plot is written

    fig = Figure(figsize=(11, 3.4))
    panels = fig.subplots(1, 3)
    for panel, metric in zip(panels, ("HR@10", "NDCG@10", "loss"), strict=True):
        for label, history in runs.items():
            minutes = [row.get("elapsed", 0.0) / 60 for row in history]
            panel.plot(minutes, [row[metric] for row in history], marker=".", label=label)
        if targets and metric in targets:
            panel.axhline(targets[metric], color="grey", linestyle="--", linewidth=1)
        panel.set_xlabel(xlabel)
        panel.set_title(metric if metric == "loss" else f"validation {metric}")
        panel.grid(alpha=0.3)
    panels[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path

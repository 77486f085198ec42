"""The two plots the course drew for every run: validation BAC, and train vs validation loss."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: list[dict[str, float]], folder: str | Path) -> list[Path]:
    """Write `validation_bac.png` and `loss.png` from per-epoch records; return their paths."""
    folder = Path(folder)
    epochs = [h["epoch"] for h in history]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["validation_balanced_accuracy"] for h in history], marker="o")
    ax.set(xlabel="epoch", ylabel="balanced accuracy", title="Validation balanced accuracy")
    ax.grid(alpha=0.3)
    paths.append(folder / "validation_bac.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax.plot(epochs, [h["validation_loss"] for h in history], marker="o", label="validation")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(folder / "loss.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths

"""PNG figures of a training run, written atomically (matplotlib without a display)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.fileio import atomic_write  # noqa: E402


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def plot_results(rows: list[dict], path: Path) -> None:
    """Loss components and mAP per epoch."""
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.6))
    for ax, key in zip(axes, ("box", "obj", "cls", "total")):
        ax.plot(epochs, [r[key] for r in rows], marker=".")
        ax.set_title(f"{key} loss")
        ax.set_xlabel("epoch")
    evaluated = [(e, r["mAP50"], r["mAP"]) for e, r in zip(epochs, rows) if r["mAP50"] != ""]
    if evaluated:
        e, m50, m = zip(*evaluated)
        axes[4].plot(e, m50, marker=".", label="mAP@0.5")
        axes[4].plot(e, m, marker=".", label="mAP@0.5:0.95")
        axes[4].legend()
    axes[4].set_title("validation mAP")
    axes[4].set_xlabel("epoch")
    fig.tight_layout()
    _save(fig, path)


def plot_bn_gammas(history: list[tuple[int, np.ndarray]], path: Path) -> None:
    """Histogram of |BN gamma| at each evaluation: sparsity training should pile them up near zero."""
    fig, ax = plt.subplots(figsize=(8, 4))
    top = max(float(g.max()) for _, g in history) or 1.0
    bins = np.linspace(0, top, 60)
    colours = plt.cm.viridis(np.linspace(0, 1, len(history)))
    for (epoch, gammas), colour in zip(history, colours):
        counts, _ = np.histogram(gammas, bins)
        ax.plot((bins[1:] + bins[:-1]) / 2, counts, color=colour, label=f"epoch {epoch + 1}")
    ax.set_xlabel("|gamma|")
    ax.set_ylabel("channels")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)


def plot_pr_curves(result, path: Path) -> None:
    """Precision-recall at IoU 0.5 for every class with ground truth, AP@0.5 in the legend."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for index, c in enumerate(result.classes):
        if c.targets and len(c.recall_curve):
            ax.plot(c.recall_curve, c.precision_curve, label=f"{c.name} {c.ap50:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall at IoU 0.5 (mAP@0.5 {result.map50:.3f})")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    _save(fig, path)


def plot_gamma_threshold(gammas: list[float], threshold: float, path: Path) -> None:
    """Histogram of the prunable |BN gamma| with the pruning threshold."""
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(gammas, bins=80, color="tab:blue")
    ax.axvline(threshold, color="tab:red", label=f"threshold {threshold:.4f}")
    ax.set_xlabel("|gamma|")
    ax.set_ylabel("channels")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_channels(before: list[int], after: list[int], path: Path) -> None:
    """Output channels of every conv, before and after pruning."""
    fig, ax = plt.subplots(figsize=(max(8, len(before) * 0.12), 4))
    positions = np.arange(len(before))
    ax.bar(positions, before, color="lightgrey", label="before")
    ax.bar(positions, after, color="tab:green", label="after")
    ax.set_xlabel("conv (network order, block convs included)")
    ax.set_ylabel("output channels")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)

"""Figures of a training run and of its data, written atomically (matplotlib without a display; cv2 for the
batch grids)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.fileio import atomic_write  # noqa: E402
from utils.inference.visualize import class_colour  # noqa: E402
from utils.training.run_files import NOT_EVALUATED  # noqa: E402

CONFUSION_PICTURE = "confusion_matrix.png"
CURVE_PICTURES = {"f1": "F1_curve.png", "precision": "P_curve.png", "recall": "R_curve.png"}


def _legend(ax, **options) -> None:
    """A legend where something is labelled (matplotlib warns of an empty one: an evaluation without ground
    truth has no curve to name)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)

def _save(fig, path: Path) -> None:
    """Write the figure, unless ``path`` already holds this very picture (Agg's PNG bytes are reproducible), so
    that a resumed run leaves what it would only redraw untouched."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    if path.is_file() and path.read_bytes() == buffer.getvalue():
        return
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def plot_results(rows: list[dict], terms: Sequence[str], path: Path) -> None:
    """results.png: the loss ``terms`` and mAP per epoch (results.csv's rows)."""
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, len(terms) + 1, figsize=(4 * len(terms) + 4, 3.6))
    for ax, key in zip(axes, terms):
        ax.plot(epochs, [r[key] for r in rows], marker=".")
        ax.set_title(f"{key} loss")
        ax.set_xlabel("epoch")
    evaluated = [(e, r["mAP50"], r["mAP"]) for e, r in zip(epochs, rows) if r["mAP50"] != NOT_EVALUATED]
    if evaluated:
        e, m50, m = zip(*evaluated)
        axes[-1].plot(e, m50, marker=".", label="mAP@0.5")
        axes[-1].plot(e, m, marker=".", label="mAP@0.5:0.95")
        _legend(axes[-1])
    axes[-1].set_title("validation mAP")
    axes[-1].set_xlabel("epoch")
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
    _legend(ax, fontsize=7, ncol=2)
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
    _legend(ax, fontsize=7, loc="lower left")
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
    _legend(ax)
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
    _legend(ax)
    fig.tight_layout()
    _save(fig, path)


def plot_evolution(trials: Sequence, best, keys: Sequence[str], path: Path) -> None:
    """--evolve's picture: fitness against each of ``keys``' values (the trials' ``values`` and ``fitness``), one
    panel per key; the ``best`` trial is the star."""
    columns = 4
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows))
    fitness = [trial.fitness for trial in trials]
    for ax, key in zip(axes.ravel(), keys):
        ax.scatter([trial.values[key] for trial in trials], fitness, c=range(len(trials)), cmap="viridis", s=20)
        ax.plot(best.values[key], best.fitness, "r*", markersize=14)
        ax.set_title(f"{key} = {best.values[key]:.4g}", fontsize=9)
        ax.set_ylabel("fitness (best mAP@0.5)", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_labels(labels: list[np.ndarray], names: list[str], path: Path) -> None:
    """``labels.png``: boxes per class, where box centres fall, and box widths against heights (normalised)."""
    boxes = np.concatenate([np.asarray(rows, np.float64).reshape(-1, 5) for rows in labels] or [np.zeros((0, 5))])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    counts = np.bincount(boxes[:, 0].astype(int), minlength=len(names))
    axes[0].bar(np.arange(len(names)), counts, color="tab:blue")
    if len(names) <= 30:  # beyond that the names overlap; the bar index is the class index
        axes[0].set_xticks(np.arange(len(names)), names, rotation=90 if len(names) > 8 else 0)
    axes[0].set_ylabel("boxes")
    axes[0].set_title(f"boxes per class ({len(boxes)} in all)")
    for ax, (x, y), title, labels_xy in ((axes[1], (1, 2), "box centres", ("cx", "cy")),
                                         (axes[2], (3, 4), "box sizes", ("width", "height"))):
        # cmin=1 leaves empty bins white, so that a single box still shows
        ax.hist2d(boxes[:, x], boxes[:, y], bins=50, range=[[0, 1], [0, 1]], cmap="viridis", cmin=1)
        ax.set_xlabel(f"{labels_xy[0]} (fraction of the image)")
        ax.set_ylabel(f"{labels_xy[1]} (fraction of the image)")
        ax.set_title(title)
        ax.set_aspect("equal")
    axes[1].invert_yaxis()  # image rows grow downwards
    fig.tight_layout()
    _save(fig, path)


def _draw_targets(tile: np.ndarray, targets: np.ndarray, names: list[str]) -> None:
    """Boxes ``class cx cy w h`` (normalised) with their class names, drawn into ``tile`` (BGR) in place."""
    height, width = tile.shape[:2]
    thickness = max(1, round(min(height, width) / 250))
    for cls, cx, cy, w, h in targets:
        colour = class_colour(int(cls))
        x1, y1 = int(round((cx - w / 2) * width)), int(round((cy - h / 2) * height))
        x2, y2 = int(round((cx + w / 2) * width)), int(round((cy + h / 2) * height))
        cv2.rectangle(tile, (x1, y1), (x2, y2), colour, thickness)  # aliased: thin lines stay crisper in a JPEG
        name = names[int(cls)] if 0 <= int(cls) < len(names) else str(int(cls))
        cv2.putText(tile, name, (x1 + 2, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)


def plot_batch(batch, names: list[str], path: Path, max_images: int = 16, max_side: int = 1920) -> None:
    """``train_batchN.jpg``: the first ``max_images`` images of a ``utils.data.dataset.Batch`` (uint8 RGB,
    as augmented) in a grid, each with its target boxes and its file name; the grid is scaled down to at
    most ``max_side`` pixels."""
    count = min(len(batch), max_images)
    if count == 0:
        return
    _, _, height, width = batch.images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = min(1.0, max_side / max(columns * width, rows * height))
    tile_h, tile_w = max(1, int(height * scale)), max(1, int(width * scale))
    grid = np.full((rows * tile_h, columns * tile_w, 3), 255, np.uint8)
    targets = batch.targets.numpy()
    for i in range(count):
        tile = np.ascontiguousarray(batch.images[i].permute(1, 2, 0).numpy()[:, :, ::-1])
        tile = cv2.resize(tile, (tile_w, tile_h), interpolation=cv2.INTER_AREA) if scale < 1 else tile
        _draw_targets(tile, targets[targets[:, 0] == i][:, 1:], names)
        cv2.putText(tile, Path(batch.paths[i]).name[:40], (3, tile_h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 255), 1, cv2.LINE_AA)
        top, left = (i // columns) * tile_h, (i % columns) * tile_w
        grid[top:top + tile_h, left:left + tile_w] = tile
        cv2.rectangle(grid, (left, top), (left + tile_w - 1, top + tile_h - 1), (255, 255, 255), 1)
    ok, encoded = cv2.imencode(".jpg", grid, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"JPEG encoding of {path} failed")
    with atomic_write(path) as f:
        f.write(encoded.tobytes())


def _matrix_panel(ax, values: np.ndarray, labels: list[str], title: str, as_fraction: bool) -> None:
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if as_fraction else max(1, values.max()))
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    if len(labels) <= 31:  # beyond that the names overlap; positions are class indices
        ax.set_xticks(ticks, labels, rotation=90)
        ax.set_yticks(ticks, labels)
        for (row, col), value in np.ndenumerate(values):
            if value:
                text = f"{value:.2f}" if as_fraction else f"{int(value)}"
                ax.text(col, row, text, ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 * (1 if as_fraction else values.max()) else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: Path, subtitle: str = "") -> None:
    """``confusion_matrix.png``: counts (left) and each row divided by its sum (right: for a class row, where
    its boxes went; for the background row, which classes the false positives claimed). Rows true, columns
    predicted, the last of each "background"."""
    labels = list(names) + ["background"]
    rows = matrix.sum(1, keepdims=True)
    normalised = np.where(rows > 0, matrix / np.maximum(rows, 1), 0.0)
    side = max(6.0, 0.35 * len(labels) + 3)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    _matrix_panel(axes[0], matrix, labels, "confusion matrix (counts)", False)
    _matrix_panel(axes[1], normalised, labels, "confusion matrix (each row / its sum)", True)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_confidence_curves(curves, best: tuple[float, float] | None, out_dir: Path) -> list[Path]:
    """``F1_curve.png``, ``P_curve.png`` and ``R_curve.png`` under ``out_dir``: each class thin (named when
    there are few), the mean over classes thick; the F1 figure marks the best threshold. Returns the paths."""
    paths = []
    for key, label in (("f1", "F1"), ("precision", "precision"), ("recall", "recall")):
        values = getattr(curves, key)
        fig, ax = plt.subplots(figsize=(7, 5))
        few = len(curves.names) <= 20
        for name, row in zip(curves.names, values):
            ax.plot(curves.confidence, row, linewidth=1, label=name if few else None, color=None if few else "grey")
        if len(values):
            mean = values.mean(0)
            text = f"all classes, best {best[1]:.3f} at {best[0]:.3f}" if key == "f1" and best else "all classes"
            ax.plot(curves.confidence, mean, linewidth=3, color="tab:blue", label=text)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence threshold")
        ax.set_ylabel(label)
        ax.set_title(f"{label} against the confidence threshold")
        _legend(ax, fontsize=7, loc="lower left" if key != "recall" else "upper right")
        fig.tight_layout()
        paths.append(out_dir / CURVE_PICTURES[key])
        _save(fig, paths[-1])
    return paths

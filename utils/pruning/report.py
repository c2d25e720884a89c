"""prune.py's report: the pruned model against the original (parameters, BFLOPs, .weights size, CPU latency
and, given a dataset, mAP@0.5), printed as a table and written as report.md."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from terminaltables import AsciiTable

from utils.darknet.model import Darknet
from utils.darknet.summary import summarize
from utils.darknet.weights import darknet_weights_size
from utils.data.batching import evaluation_loader
from utils.data.dataset import DetectionDataset
from utils.evaluation.evaluate import collect_detections, score
from utils.fileio import atomic_write
from utils.output_files import named_write_errors
from utils.pruning.select import Selection
from utils.timing import alternating_median_seconds

LATENCY_ROUNDS = 8


@dataclass(frozen=True)
class ValidationSet:
    """The images both models are scored on, their labels read once, and the class names."""

    images: DetectionDataset
    names: list[str]


@dataclass(frozen=True)
class PruneRequest:
    """What prune.py was asked for, as the report states it."""

    weights_path: str
    percent: float = 0.0
    layers: int = 0
    layer_keep: float = 0.0
    channel_multiple: int = 1
    shortcut_mode: str = "union"

    def describe(self, selection: Selection | None) -> str:
        """The request in a sentence or two, with the channel ``selection`` made for it (None without
        --percent)."""
        units = f"{self.layers} residual units removed first. " if self.layers > 0 else ""
        channels = ""
        if selection is not None:
            channels = (f"{self.percent:.1%} of prunable BN channels targeted (threshold |gamma| "
                        f"{selection.threshold:.5f}, {selection.pruned_share:.1%} at or under it, shortcut mode "
                        f"{self.shortcut_mode}, layer_keep "
                        f"{self.layer_keep}, channel_multiple {self.channel_multiple}); "
                        f"largest safe percent {selection.safe_percent:.1%}. ")
        return (units + channels).strip()


@dataclass
class Comparison:
    """Rows of ``label, before, after, change``."""

    rows: list[list[str]] = field(default_factory=lambda: [["", "before", "after pruning", "change"]])

    def add(self, label: str, before: float, after: float, fmt: Callable[[float], str]) -> None:
        change = f"{(after - before) / before:+.1%}" if before else ""
        self.rows.append([label, fmt(before), fmt(after), change])

    def table(self) -> str:
        return AsciiTable(self.rows).table

    def markdown(self) -> str:
        def line(row: list[str]) -> str:
            return "| " + " | ".join(map(str, row)) + " |"
        return "\n".join([line(self.rows[0]), "|---|---|---|---|", *map(line, self.rows[1:])])


def latencies_ms(models: list[Darknet], img_size: int) -> list[float]:
    """Batch-1 latency of each model after prepare_inference(), timed in alternating rounds."""
    ready = [copy.deepcopy(model).prepare_inference() for model in models]
    x = torch.rand(1, models[0].input_channels, img_size, img_size)
    with torch.inference_mode():
        return [1e3 * t for t in alternating_median_seconds([lambda m=m: m(x) for m in ready], rounds=LATENCY_ROUNDS)]


def map50(model: Darknet, validation: ValidationSet, img_size: int) -> float:
    loader = evaluation_loader(validation.images, 8, img_size, workers=0)
    return score(collect_detections(model, loader, torch.device("cpu")).records, validation.names).map50


def compare(original: Darknet, pruned: Darknet, pruned_weights: Path, img_size: int,
            validation: ValidationSet | None) -> Comparison:
    """``pruned`` (written to ``pruned_weights``) against ``original`` at ``img_size``; mAP on ``validation``
    when given."""
    size = (img_size, img_size)
    comparison = Comparison()
    comparison.add("parameters", sum(p.numel() for p in original.parameters()),
                   sum(p.numel() for p in pruned.parameters()), lambda v: f"{v:,}")
    comparison.add(f"BFLOPs at {img_size}", sum(r.flops for r in summarize(original, size)) / 1e9,
                   sum(r.flops for r in summarize(pruned, size)) / 1e9, lambda v: f"{v:.3f}")
    comparison.add(".weights size (MB)", darknet_weights_size(original.layers, original.weights_header) / 1e6,
                   pruned_weights.stat().st_size / 1e6, lambda v: f"{v:.2f}")
    before_ms, after_ms = latencies_ms([original, pruned], img_size)
    threads = torch.get_num_threads()
    comparison.add(f"CPU latency at {img_size} (ms, {threads} thread{'s' if threads > 1 else ''})", before_ms,
                   after_ms, lambda v: f"{v:.1f}")
    speedup = before_ms / after_ms
    comparison.rows[-1][-1] += f" ({speedup:.2f}x faster)" if speedup >= 1 else f" ({1 / speedup:.2f}x slower)"
    if validation is not None:
        comparison.add("mAP@0.5 (valid)", map50(original, validation, img_size), map50(pruned, validation, img_size),
                       lambda v: f"{v:.4f}")
    return comparison


def write_report(path: Path, request: PruneRequest, selection: Selection | None, comparison: Comparison) -> None:
    """report.md: what was asked for and the comparison table."""
    text = f"# Pruning {request.weights_path}\n\n{request.describe(selection)}\n\n{comparison.markdown()}\n"
    with named_write_errors(path, "pruning report"), atomic_write(path) as f:
        f.write(text.encode())

"""Channel pruning (network slimming) of a trained model, exported as a cfg + .weights that Darknet runs.

    python prune.py --model_def cfg/res2net-yolov3-tiny.cfg --weights_path runs/train/exp1/best.pth \\
                    --data_config data/demo/shapes.data --percent 0.5 [--layers 2] --output runs/prune/exp1

Train with --sr first so that many BN gammas approach zero. What may be pruned, and which channels
must go together, is derived from the network graph (see utils/prune.py). Writes to OUTPUT:
pruned.cfg, pruned.weights, pruned.pth, report.md, gammas.png and channels.png. Fine-tune with
    python train.py --model_def OUTPUT/pruned.cfg --pretrained_weights OUTPUT/pruned.weights ...
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from terminaltables import AsciiTable

from utils.darknet.cfg import CfgError
from utils.darknet.checkpoint import model_from_file
from utils.conversion.convert import weights_to_checkpoint
from utils.darknet.weights import WeightsFileError, darknet_weights_size
from utils.data.dataset import DataError, DetectionDataset, evaluation_loader, parse_data_config
from utils.evaluation.evaluate import collect_detections, score
from utils.fileio import atomic_write
from utils.plots import plot_channels, plot_gamma_threshold
from utils.pruning.prune import PruneError, compact_model, masked_model, remove_units
from utils.darknet.summary import summarize
from utils.timing import alternating_median_seconds


def latencies_ms(models: list, img_size: int) -> list[float]:
    """Batch-1 latency of each model after prepare_inference(), timed in alternating rounds."""
    ready = [copy.deepcopy(model).prepare_inference() for model in models]
    x = torch.rand(1, 3, img_size, img_size)
    with torch.inference_mode():
        return [1e3 * t for t in alternating_median_seconds([lambda m=m: m(x) for m in ready], rounds=8)]


def map50(model, data, img_size: int) -> float:
    loader = evaluation_loader(DetectionDataset(data.valid, data.classes, None), 8, img_size, workers=0)
    return score(collect_detections(model, loader, torch.device("cpu")), data.names).map50


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_def", help="Darknet .cfg (a .pth carries its own)")
    p.add_argument("--weights_path", required=True, help=".weights or .pth of the trained model")
    p.add_argument("--data_config", help=".data file: report mAP@0.5 on its valid list before and after")
    p.add_argument("--percent", type=float, default=0.0, help="fraction of prunable BN channels to remove")
    p.add_argument("--layers", type=int, default=0,
                   help="first remove this many residual units / [res2net] blocks (lowest mean |gamma|)")
    p.add_argument("--layer_keep", type=float, default=0.0,
                   help="keep at least this fraction of every conv's channels (default: refuse to empty one)")
    p.add_argument("--channel_multiple", type=int, default=1,
                   help="then keep more channels (highest |gamma| first) so every layer keeps a multiple of N "
                        "(8 suits CPU and GPU kernels)")
    p.add_argument("--shortcut_mode", choices=("union", "skip"), default="union",
                   help="channels tied by additions: keep one if any member keeps it (union) or leave them (skip)")
    p.add_argument("--img_size", type=int, default=416, help="size for FLOPs, latency and mAP")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="write into an output folder that is not empty")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(args.output)
    scratch = tempfile.TemporaryDirectory()
    try:
        if out.exists() and any(out.iterdir()) and not args.force:
            raise FileExistsError(f"{out} is not empty; pass --force to write into it")
        if args.percent <= 0 and args.layers <= 0:
            raise ValueError("nothing to do: give --percent (channels) and/or --layers (residual units)")
        model, state = model_from_file(args.weights_path, args.model_def)
        model.eval()
        work = model
        if args.layers > 0:
            work, units = remove_units(model, args.layers, Path(scratch.name) / "thinner.cfg")
            print(f"removing {len(units)} units (lowest mean |gamma|): layers "
                  + ", ".join(f"{u.layers.start}-{u.layers[-1]}" for u in units))
        if args.percent > 0:
            masked, graph, selection = masked_model(work, args.percent, args.layer_keep, args.shortcut_mode,
                                                    args.channel_multiple)
        data = parse_data_config(args.data_config) if args.data_config else None
    except (CfgError, WeightsFileError, DataError, PruneError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    if args.percent > 0:
        print(f"threshold |gamma| {selection.threshold:.5f} at {args.percent:.1%}; "
              f"the largest percent that empties no layer is {selection.safe_percent:.1%}")
        compact = compact_model(masked, graph, selection, out / "pruned.cfg")
    else:
        compact = work
        with atomic_write(out / "pruned.cfg") as f:
            f.write(work.cfg_text.encode())
    compact.save_darknet_weights(out / "pruned.weights")
    names = (state or {}).get("names") or (data.names if data else None)
    weights_to_checkpoint(compact, out / "pruned.pth", names)
    size = (args.img_size, args.img_size)
    rows = [["", "before", "after pruning", "change"]]

    def add(label, before, after, fmt):
        change = f"{(after - before) / before:+.1%}" if before else ""
        rows.append([label, fmt(before), fmt(after), change])

    add("parameters", sum(p.numel() for p in model.parameters()), sum(p.numel() for p in compact.parameters()),
        lambda v: f"{v:,}")
    add(f"BFLOPs at {args.img_size}", sum(r.flops for r in summarize(model, size)) / 1e9,
        sum(r.flops for r in summarize(compact, size)) / 1e9, lambda v: f"{v:.3f}")
    add(".weights size (MB)", darknet_weights_size(model.layers, model.weights_header) / 1e6,
        (out / "pruned.weights").stat().st_size / 1e6, lambda v: f"{v:.2f}")
    before_ms, after_ms = latencies_ms([model, compact], args.img_size)
    add(f"CPU latency at {args.img_size} (ms, 2 threads)", before_ms, after_ms, lambda v: f"{v:.1f}")
    rows[-1][-1] += f" ({before_ms / after_ms:.2f}x faster)"
    if data is not None:
        add("mAP@0.5 (valid)", map50(model, data, args.img_size), map50(compact, data, args.img_size),
            lambda v: f"{v:.4f}")
    table = AsciiTable(rows).table
    print(table)
    markdown = "\n".join(["| " + " | ".join(map(str, row)) + " |" for row in rows[:1]]
                         + ["|---|---|---|---|"] + ["| " + " | ".join(map(str, row)) + " |" for row in rows[1:]])
    with atomic_write(out / "report.md") as f:
        channels = (f"{args.percent:.1%} of prunable BN channels targeted (threshold |gamma| "
                    f"{selection.threshold:.5f}, shortcut mode {args.shortcut_mode}, layer_keep {args.layer_keep}, "
                    f"channel_multiple {args.channel_multiple}); "
                    f"largest safe percent {selection.safe_percent:.1%}. " if args.percent > 0 else "")
        units = f"{args.layers} residual units removed first. " if args.layers > 0 else ""
        f.write(f"# Pruning {args.weights_path}\n\n{(units + channels).strip()}\n\n{markdown}\n".encode())
    if args.percent > 0:
        plot_gamma_threshold(selection.gammas, selection.threshold, out / "gammas.png")
        before = [r.conv.conv.out_channels for r in graph.convs]
        after = [int(selection.keep_mask(graph, r.outputs).sum()) for r in graph.convs]
        plot_channels(before, after, out / "channels.png")
    print(f"wrote {out}/: pruned.cfg, pruned.weights, pruned.pth, report.md"
          f"{', gammas.png, channels.png' if args.percent > 0 else ''}\n"
          f"fine-tune: python train.py --model_def {out}/pruned.cfg --pretrained_weights {out}/pruned.weights "
          f"--data_config ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Channel pruning (network slimming) of a trained model, exported as a cfg + .weights that Darknet runs.

    python prune.py --model_def cfg/res2net-yolov3-tiny.cfg --weights_path runs/train/exp1/best.pth \\
                    --data_config data/demo/shapes.data --percent 0.5 [--layers 2] --output runs/prune/exp1

Train with --sr first so that many BN gammas approach zero. What may be pruned, and which channels
must go together, is derived from the network graph (see utils/pruning/). Writes to OUTPUT (default
runs/prune/expN; a folder that holds files only with --exist_ok): pruned.cfg, pruned.weights, pruned.pth,
report.md, gammas.png and channels.png. Fine-tune with
    python train.py --model_def OUTPUT/pruned.cfg --pretrained_weights OUTPUT/pruned.weights ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.cli import ArgumentParser, add_run_size_flag, integer, number, output_folder, run_main
from utils.darknet.checkpoint import (model_from_file, run_size, save_model, save_weights, trained_single_class,
                                      trained_size)
from utils.darknet.cfg import DEFAULT_IMG_SIZE
from utils.darknet.model import Darknet
from utils.data.check import check_evaluation_labels
from utils.data.config import parse_data_config
from utils.data.dataset import DetectionDataset
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.output_files import named_write_errors, refuse_replacing_inputs, removed_on_failure
from utils.plots import plot_channels, plot_gamma_threshold
from utils.pruning import compact_model, masked_model, remove_units
from utils.pruning.report import PruneRequest, ValidationSet, compare, write_report

RUNS = Path("runs/prune")  # where results go without --output, as runs/prune/expN
PRUNED_CFG, PRUNED_WEIGHTS, PRUNED_CHECKPOINT, REPORT = "pruned.cfg", "pruned.weights", "pruned.pth", "report.md"
GAMMA_PLOT, CHANNEL_PLOT = "gammas.png", "channels.png"
ALWAYS_WRITTEN = (PRUNED_CFG, PRUNED_WEIGHTS, PRUNED_CHECKPOINT, REPORT)
CHANNEL_PLOTS = (GAMMA_PLOT, CHANNEL_PLOT)  # when channels were pruned (--percent)
OUTPUT_FILES = ALWAYS_WRITTEN + CHANNEL_PLOTS
FRACTION = number(0, 1)
PERCENT = number(0, 1, below=True)  # all channels (1) would empty every layer


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model_def", help="Darknet .cfg (a .pth carries its own)")
    p.add_argument("--weights_path", required=True, help=".weights or .pth of the trained model")
    p.add_argument("--data_config", help=".data file: report mAP@0.5 on its valid list before and after")
    p.add_argument("--percent", type=PERCENT, default=0.0,
                   help="fraction of prunable BN channels to remove")
    p.add_argument("--layers", type=integer(0), default=0,
                   help="first remove this many residual units / [res2net] blocks (lowest mean |gamma|)")
    p.add_argument("--layer_keep", type=FRACTION, default=0.0,
                   help="keep at least this fraction of every conv's channels (default: refuse to empty one)")
    p.add_argument("--channel_multiple", type=integer(1), default=1,
                   help="then keep more channels (highest |gamma| first) so every layer keeps a multiple of N "
                        "(8 suits CPU and GPU kernels)")
    p.add_argument("--shortcut_mode", choices=("union", "skip"), default="union",
                   help="channels tied by additions: keep one if any member keeps it (union) or leave them (skip)")
    add_run_size_flag(p, "size for FLOPs, latency and mAP")
    p.add_argument("--output", help=f"output folder, new or empty (default: {RUNS}/expN)")
    p.add_argument("--exist_ok", "--force", dest="exist_ok", action="store_true",
                   help="write into an --output that holds files, replacing them")
    return p.parse_args(argv)


def check_request(args: argparse.Namespace) -> Path:
    """The output folder (a named one not created yet); a request that cannot be done stops here, before any
    work."""
    if args.percent <= 0 and args.layers <= 0:
        raise UserError("nothing to do: give --percent (channels) and/or --layers (residual units)")
    if args.output:
        written = [Path(args.output) / name for name in OUTPUT_FILES]
        refuse_replacing_inputs(written, [args.weights_path, args.model_def, args.data_config], "--output")
    return output_folder(args.output, RUNS, args.exist_ok)


def validation_set(data_config: str | None, model: Darknet, single_class: bool) -> ValidationSet | None:
    """--data_config's valid images, as the model scores them (``single_class``: a --single_cls model; the class
    counts checked), or None without it."""
    if not data_config:
        return None
    data = parse_data_config(data_config).scored_by(model.num_classes, single_class)
    images = DetectionDataset.from_config(data, "valid")
    check_evaluation_labels(images, data.names)  # before any file is written
    return ValidationSet(images, data.names)


def without_units(model: Darknet, count: int) -> Darknet:
    """``model`` less its ``count`` residual units of lowest mean |gamma| (itself when ``count`` is 0)."""
    if count <= 0:
        return model
    thinner, units = remove_units(model, count)
    print(f"removing {len(units)} units (lowest mean |gamma|): layers "
          + ", ".join(f"{u.layers.start}-{u.layers[-1]}" for u in units))
    return thinner


def write_channel_plots(graph, selection, out: Path) -> None:
    with named_write_errors(out / GAMMA_PLOT, "gamma histogram"):
        plot_gamma_threshold(selection.gammas, selection.threshold, out / GAMMA_PLOT)
    before = [r.conv.conv.out_channels for r in graph.convs]
    after = [int(selection.keep_mask(graph, r.outputs).sum()) for r in graph.convs]
    with named_write_errors(out / CHANNEL_PLOT, "channel plot"):
        plot_channels(before, after, out / CHANNEL_PLOT)


def write_model_files(compact: Darknet, out: Path, names: list[str] | None, trained: dict | None) -> None:
    """The pruned cfg, .weights and .pth (``trained``: the original's checkpoint, whose training options the .pth
    carries)."""
    with named_write_errors(out / PRUNED_CFG, "pruned cfg"), atomic_write(out / PRUNED_CFG) as f:
        f.write(compact.cfg_text.encode())
    save_weights(compact, out / PRUNED_WEIGHTS)
    save_model(compact, out / PRUNED_CHECKPOINT, names, trained)


def prune(args: argparse.Namespace) -> int:
    out = check_request(args)
    with removed_on_failure(out, claimed=args.output is None):  # a failure part-way leaves no new folder behind
        return prune_into(out, args)


def prune_into(out: Path, args: argparse.Namespace) -> int:
    request = PruneRequest(args.weights_path, args.percent, args.layers, args.layer_keep, args.channel_multiple,
                           args.shortcut_mode)
    model, state = model_from_file(args.weights_path, args.model_def)
    model.eval()
    validation = validation_set(args.data_config, model, trained_single_class(state))
    work = without_units(model, args.layers)
    compact, graph, selection = work, None, None
    if args.percent > 0:  # refuses a percent that would empty a layer, before anything is written
        masked, graph, selection = masked_model(work, args.percent, args.layer_keep, args.shortcut_mode,
                                                args.channel_multiple)
        print(f"threshold |gamma| {selection.threshold:.5f} at {args.percent:.1%}: {selection.pruned_share:.1%} of the "
              f"channels are at or under it; the largest percent that empties no layer is {selection.safe_percent:.1%}")
        compact = compact_model(masked, graph, selection)
    write_model_files(compact, out, (state or {}).get("names") or (validation.names if validation else None),
                      state)
    comparison = compare(model, compact, out / PRUNED_WEIGHTS, run_size(args.img_size, trained_size(state)),
                         validation)
    print(comparison.table())
    write_report(out / REPORT, request, selection, comparison)
    if selection is not None:
        write_channel_plots(graph, selection, out)
    written = OUTPUT_FILES if selection is not None else ALWAYS_WRITTEN
    print(f"wrote {out}/: {', '.join(written)}\nfine-tune: {fine_tune_command(out, args.data_config, state)}")
    return 0


def fine_tune_command(out: Path, data_config: str | None, trained: dict | None) -> str:
    """train.py on the pruned model as the original was trained (``trained``: its checkpoint): at its size, and
    with --single_cls if it had it (else the pruned one-class heads would be re-made for the data's classes)."""
    size = trained_size(trained)
    at_size = f" --img_size {size}" if size and size != DEFAULT_IMG_SIZE else ""
    merged = " --single_cls" if trained_single_class(trained) else ""
    return (f"python train.py --model_def {out / PRUNED_CFG} --pretrained_weights {out / PRUNED_WEIGHTS} "
            f"--data_config {data_config or 'DATA'}{at_size}{merged}")


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: prune(args))


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a trained model on a dataset's validation list: per-class table, mAP@0.5 and mAP@0.5:0.95.

    python test.py --weights_path runs/demo/exp1/best.pth --data_config data/demo/shapes.data
    python test.py --model_def cfg/yolov3.cfg --weights_path yolov3.weights --data_config data/coco.data

train.py's evaluation runs this same code (utils/evaluation/evaluate.py).
"""
import argparse
import sys
from pathlib import Path

from utils.cli import (ArgumentParser, add_half_flag, add_run_size_flag, device_flag, integer, number, png_file,
                       run_main, select_device)
from utils.data.batching import evaluation_loader
from utils.data.check import check_evaluation_labels
from utils.data.config import DataConfig, DataError, parse_data_config
from utils.data.dataset import DetectionDataset
from utils.errors import UserError
from utils.evaluation.confusion import (EVALUATION_PICTURES, ConfusionOptions, best_f1_confidence,
                                       write_evaluation_pictures)
from utils.evaluation.evaluate import (EVAL_CONF_THRES, EVAL_NMS_THRES, collect_detections, format_best_f1,
                                       format_results, score, write_coco_json)
from utils.evaluation.metrics import DEFAULT_METHOD, METHODS
from utils.inference.load import load_model
from utils.inference.tta import AUGMENT_HELP, network
from utils.output_files import named_write_errors, refuse_existing, refuse_replacing_inputs, refuse_shared_outputs
from utils.plots import CONFUSION_PICTURE, CURVE_PICTURES, plot_pr_curves
from utils.training.options import DEFAULT_DATA


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model_def", help="Darknet .cfg (needed for .weights; a .pth carries its own)")
    p.add_argument("--weights_path", required=True, help=".weights or .pth")
    p.add_argument("--data_config", default=DEFAULT_DATA, help=".data file; its 'valid' list is evaluated")
    p.add_argument("--single_cls", action="store_true",
                   help="score every box as one class, as a model trained with train.py --single_cls predicts "
                        "(default: on for a .pth of such a run)")
    add_run_size_flag(p, "input size")
    p.add_argument("--batch_size", type=integer(1), default=8, help="images per batch")
    p.add_argument("--conf_thres", type=number(0, 1), default=EVAL_CONF_THRES,
                   help="keep detections above this score (low, as mAP needs the whole precision-recall curve)")
    p.add_argument("--nms_thres", type=number(0, 1), default=EVAL_NMS_THRES, help="IoU threshold of NMS")
    p.add_argument("--ap_method", choices=METHODS, default=DEFAULT_METHOD,
                   help="coco: 101-point (pycocotools); voc11: VOC2007; area: all-point (Darknet's detector map)")
    p.add_argument("--augment", action="store_true", help=AUGMENT_HELP)
    p.add_argument("--letterbox", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the aspect ratio and pad (default, as in training), or stretch")
    p.add_argument("--rect", action="store_true",
                   help="rectangular batches: images of like aspect ratio together, each batch only as large as its "
                        "images need with their long side at --img_size (less padding, faster; the scores move a "
                        "little, as the padding differs)")
    p.add_argument("--save_json", metavar="OUT", help="write COCO-format detections to OUT and the matching "
                                                     "ground truth to OUT's name + _gt.json")
    p.add_argument("--pr_curves", metavar="PNG", type=png_file,
                   help="write per-class precision-recall curves to this PNG")
    pictures = (f"{CONFUSION_PICTURE} (conf >= {ConfusionOptions.conf:g}, IoU >= {ConfusionOptions.iou:g}) and "
                f"{', '.join(CURVE_PICTURES.values())}")
    p.add_argument("--plots", metavar="DIR", help=f"write {pictures} into this folder")
    p.add_argument("--exist_ok", action="store_true", help="replace existing --save_json / --pr_curves / --plots "
                                                          "files")
    p.add_argument("--n_cpu", type=integer(0), default=2, help="data loading worker processes")
    p.add_argument("--device", type=device_flag, default="",
                   help="cpu, cuda, cuda:N or a GPU index (default: cuda if available)")
    add_half_flag(p)
    args = p.parse_args(argv)
    if args.rect and not args.letterbox:
        p.error("--rect keeps each image's aspect ratio and --no-letterbox stretches it; use one of them")
    return args


def written_files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(flag, path) of every file the flags ask for."""
    files = []
    if args.save_json:
        detections = Path(args.save_json)
        files += [("--save_json", detections), ("--save_json", detections.with_name(detections.stem + "_gt.json"))]
    if args.pr_curves:
        files.append(("--pr_curves", Path(args.pr_curves)))
    return files + [("--plots", Path(args.plots) / name) for name in EVALUATION_PICTURES if args.plots]


def check_outputs(args: argparse.Namespace, data_files: list[Path]) -> None:
    """Refuse, before evaluating, to replace a file the run would write (unless --exist_ok), any of the files
    it reads (even with --exist_ok: the model, the data config and lists, the images and their labels), or one
    of its own outputs with another."""
    files = written_files(args)
    if args.plots:
        folder = Path(args.plots)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--plots {folder}: is a file, expected a folder")
        clash = next((f"{flag} {path}" for flag, path in files if path.resolve() == folder.resolve()), None)
        if clash:
            raise UserError(f"--plots {folder} is the file {clash} writes; give the folder another name")
    inputs = [args.weights_path, args.model_def, *data_files]
    refuse_shared_outputs(files)
    for flag in dict.fromkeys(flag for flag, _ in files):
        paths = [path for named, path in files if named == flag]
        refuse_replacing_inputs(paths, inputs, flag)
        refuse_existing(paths, flag, args.exist_ok)


def write_outputs(args: argparse.Namespace, records: list, result, names: list[str]) -> None:
    """The files asked for: COCO JSON, precision-recall curves, the confusion matrix and confidence curves."""
    if args.save_json:
        with named_write_errors(args.save_json, "COCO detections"):
            truth = write_coco_json(records, names, Path(args.save_json))
        print(f"COCO detections: {args.save_json}; ground truth: {truth}")
    if args.pr_curves:
        with named_write_errors(args.pr_curves, "precision-recall plot"):
            plot_pr_curves(result, Path(args.pr_curves))
        print(f"precision-recall curves: {args.pr_curves}")
    if args.plots:
        with named_write_errors(Path(args.plots) / CONFUSION_PICTURE, "evaluation pictures"):
            pictures = write_evaluation_pictures(records, result, args.plots)
        print(f"confusion matrix and F1, P, R curves: {', '.join(str(path) for path in pictures.files)}")


def evaluation_data(data_config: str) -> DataConfig:
    """--data_config; the default (the demo's) when it was never generated says how to make it."""
    if data_config == DEFAULT_DATA and not Path(data_config).exists():
        raise DataError(f"--data_config {data_config} (the default, the demo's) does not exist yet: train.py "
                        f"generates it on first use, as does: python -m utils.data.synthetic --out "
                        f"{Path(DEFAULT_DATA).parent}; or name your own dataset with --data_config")
    return parse_data_config(data_config)


def evaluate(args: argparse.Namespace) -> int:
    data = evaluation_data(args.data_config)
    device = select_device(args.device)
    loaded = load_model(args.weights_path, args.model_def, device=device, half=args.half)
    data = data.scored_by(loaded.model.num_classes, args.single_cls or loaded.single_class)
    dataset = DetectionDataset.from_config(data, "valid", keep_ratio=args.letterbox)
    check_outputs(args, [*data.files(), *dataset.files()])
    check_evaluation_labels(dataset, data.names)
    size = loaded.input_size(args.img_size)
    loader = evaluation_loader(dataset, args.batch_size, size, args.n_cpu, args.rect)
    collected = collect_detections(network(loaded.model, args.augment), loader, device, args.conf_thres,
                                   args.nms_thres, progress=True)
    records = collected.records
    result = score(records, data.names, args.ap_method)
    rect = f"rectangular batches, long side {size}"
    print(format_results(result, args.conf_thres, args.nms_thres,
                         f"{'letterboxed' if args.letterbox else 'stretched'} to {rect if args.rect else size}"
                         + (", test-time augmented" if args.augment else "")))
    print(format_best_f1(best_f1_confidence(result)))
    print(f"speed: {collected.speed()} ({rect if args.rect else f'{size}x{size}'}, batch {args.batch_size}, "
          f"{device}; reading the images and scoring not counted)")
    write_outputs(args, records, result, data.names)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: evaluate(args))


if __name__ == "__main__":
    sys.exit(main())

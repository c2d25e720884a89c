"""The model, as users of Darknet-cfg repos import it, the detector for code that embeds a trained one, and the
layer table.

    from models import Darknet, Detector
    model = Darknet("cfg/res2net-yolov3.cfg")
    detector = Detector("runs/train/exp1/best.pth")         # detector("photo.jpg").boxes: x1 y1 x2 y2 in pixels

``python models.py --summary CFG`` (or a .pth) prints the layer table Darknet prints at load, with totals.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from utils.cli import IMAGE_SIZE, ArgumentParser, run_main
from utils.darknet.cfg import SIZE_MULTIPLE
from utils.darknet.checkpoint import (CHECKPOINT_SUFFIXES, exported_state, load_checkpoint, load_model_state,
                                      model_from_file, trained_size)
from utils.darknet.model import Darknet
from utils.darknet.weights import cutoff_from_name
from utils.errors import UserError
from utils.inference.api import Detections, Detector
from utils.inference.pipeline import DetectSettings

__all__ = ["Darknet", "DetectSettings", "Detections", "Detector"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description="Build a model from a Darknet cfg and print its layer table.")
    parser.add_argument("--summary", metavar="CFG", required=True,
                        help="Darknet .cfg to build, or a .pth (its own cfg and weights)")
    parser.add_argument("--img_size", type=IMAGE_SIZE, nargs="+", metavar="N",
                        help=f"input size, multiples of {SIZE_MULTIPLE}: one value (square) or height width; "
                             "default: the size a .pth was trained at, else the cfg's [net]")
    parser.add_argument("--weights", metavar="W", help="also load this .weights or .pth file (checks that it fits)")
    args = parser.parse_args(argv)
    if args.img_size and len(args.img_size) > 2:
        parser.error(f"argument --img_size: expected one size or height width, got {len(args.img_size)} values")
    return args


def load_weights(model: Darknet, path: str) -> str:
    """Load a .weights (a <net>.conv.N backbone: its N layers) or .pth file into ``model`` (refused, named, when
    it does not fit); what was loaded."""
    if path.endswith(CHECKPOINT_SUFFIXES):
        load_model_state(model, exported_state(load_checkpoint(path)), path)
        return f"loaded {path}"
    header = model.load_darknet_weights(path)
    return f"loaded {path}: version {header.major}.{header.minor}.{header.revision}, seen {header.seen}"


def built_model(args: argparse.Namespace) -> tuple[Darknet, int | None]:
    """--summary's model: a .cfg built (its warnings shown), or a .pth with its own cfg and weights; and the
    size a training checkpoint was trained at (None for anything else)."""
    if args.summary.endswith((".weights", ".onnx")) or cutoff_from_name(args.summary) is not None:
        raise UserError(f"--summary {args.summary}: expected a Darknet .cfg or a .pth; a Darknet weights file "
                        f"goes with its cfg: --summary CFG --weights {args.summary}")
    if args.summary.endswith(CHECKPOINT_SUFFIXES):
        if args.weights:
            raise UserError(f"--weights {args.weights}: --summary {args.summary} carries its own weights; drop one")
        model, state = model_from_file(args.summary)
        print(f"loaded {args.summary} (its own cfg)")
        return model, trained_size(state)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        return Darknet(args.summary), None


def print_summary(args: argparse.Namespace) -> int:
    model, trained = built_model(args)
    if args.weights:
        print(load_weights(model, args.weights))
    size = (args.img_size[0], args.img_size[-1]) if args.img_size else (trained, trained) if trained else None
    print(model.eval().summary(size))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: print_summary(args))


if __name__ == "__main__":
    sys.exit(main())

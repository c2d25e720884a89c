"""Convert between Darknet and PyTorch, cut backbones, expand Res2Net for Darknet, export ONNX.

    python convert.py --model_def CFG IN.weights OUT.pth          # Darknet -> checkpoint (train/test/detect take it)
    python convert.py [--model_def CFG] IN.pth OUT.weights        # checkpoint -> Darknet (seen, version kept)
    python convert.py --model_def CFG IN.weights darknet53.conv.74 # backbone: layers 0..73 (or --cutoff N)
    python convert.py --model_def CFG --darknet_native OUT.cfg    # [res2net]/[triangle] as plain Darknet layers
    python convert.py [--model_def CFG] IN --onnx OUT.onnx [--img_size 416] [--fuse]
    python convert.py --import_imagenet resnet50.pth --model_def cfg/resnet50-yolov3.cfg resnet50.conv.74
                                                                   # ImageNet classifier -> backbone file

An existing OUT is only replaced with --force, and is never left half-written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.darknet.cfg import read_cfg
from utils.darknet.checkpoint import cutoff_from_name, model_from_file, save_model
from utils.darknet.model import Darknet
from utils.conversion.export import export_onnx
from utils.conversion.imagenet import IMAGENET_MEAN, IMAGENET_STD, import_imagenet, write_backbone
from utils.conversion.native import darknet_native_cfg
from utils.errors import UserError
from utils.fileio import atomic_write

CHECKPOINT_OUT = (".pth", ".pt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help=".weights or .pth")
    p.add_argument("output", nargs="?", help=".pth, or .weights (any name with --cutoff, e.g. darknet53.conv.74)")
    p.add_argument("--model_def", help="Darknet .cfg (a .pth input carries its own)")
    p.add_argument("--cutoff", type=int, help="write only layers 0..N-1 to the .weights output")
    p.add_argument("--class_path", help="class names to store in a .pth output")
    p.add_argument("--darknet_native", metavar="OUT_CFG", help="write the cfg with [res2net]/[triangle] expanded")
    p.add_argument("--onnx", metavar="OUT_ONNX", help="export ONNX (dynamic batch)")
    p.add_argument("--img_size", type=int, default=416, help="ONNX input size")
    p.add_argument("--fuse", action="store_true", help="fold BN into convs before the ONNX export")
    p.add_argument("--import_imagenet", metavar="CKPT", help="a classification checkpoint (torchvision ResNet/"
                   "ResNeXt, SE-ResNet, IBN-Net, Res2Net layouts) to map onto the cfg's backbone; writes OUTPUT")
    p.add_argument("--input_mean", type=float, nargs="+", default=list(IMAGENET_MEAN),
                   help="with --import_imagenet: the RGB mean the checkpoint's inputs were normalised with "
                        "(folded into the first conv; 0 0 0 and --input_std 1 1 1 to fold nothing)")
    p.add_argument("--input_std", type=float, nargs="+", default=list(IMAGENET_STD))
    p.add_argument("--force", action="store_true", help="replace an existing output")
    return p.parse_args(argv)


def run_import(args, cfg: Path | None) -> str:
    if cfg is None or not args.input or args.output:  # the one positional argument is the output here
        raise ValueError("--import_imagenet CKPT needs --model_def CFG and one output (OUT.conv.N, .weights or .pth)")
    out = Path(args.input)
    refuse_existing(out, args.force)
    imported = import_imagenet(args.import_imagenet, Darknet(cfg), args.input_mean, args.input_std)
    how = write_backbone(imported, out)
    left_out = f"; left out: {', '.join(imported.dropped)}" if imported.dropped else ""
    return (f"wrote {out}: the {imported.convs} convs of {args.import_imagenet} as layers 0..{imported.cutoff - 1} "
            f"of {cfg}{left_out}\ntrain from it: python train.py --model_def {cfg} {how}")


def refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")


def run(args) -> str:
    cfg = Path(args.model_def) if args.model_def else None
    if args.import_imagenet:
        return run_import(args, cfg)
    if args.darknet_native:
        if cfg is None:
            raise ValueError("--darknet_native needs --model_def")
        out = Path(args.darknet_native)
        refuse_existing(out, args.force)
        source = read_cfg(cfg)
        native = darknet_native_cfg(source)
        with atomic_write(out) as f:
            f.write(native.text.encode())
        if native is source:
            return f"wrote {out}: {cfg} is plain Darknet already, copied unchanged"
        return f"wrote {out}: {cfg} with every [res2net]/[triangle] as plain Darknet layers (same .weights)"
    if not args.input:
        raise ValueError("name the input weights (and an output, or --onnx); see --help")
    source = Path(args.input)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    if args.onnx:
        out = Path(args.onnx)
        refuse_existing(out, args.force)
        export_onnx(model_from_file(source, cfg)[0], out, args.img_size, args.fuse)
        return f"wrote {out} (input 'images' (batch, 3, {args.img_size}, {args.img_size}), output 'detections')"
    if not args.output:
        raise ValueError("name an output file (.pth or .weights), or use --onnx / --darknet_native")
    out = Path(args.output)
    refuse_existing(out, args.force)
    if out.suffix in CHECKPOINT_OUT:
        if args.cutoff is not None:
            raise ValueError("--cutoff writes a Darknet .weights file; the output here is a .pth")
        names = None
        if args.class_path:
            names = [n.strip() for n in Path(args.class_path).read_text().splitlines() if n.strip()]
        save_model(model_from_file(source, cfg)[0], out, names)
        return f"wrote {out}"
    cutoff = args.cutoff if args.cutoff is not None else cutoff_from_name(out)
    if out.suffix != ".weights" and cutoff is None:
        raise ValueError(f"{out}: unknown output extension {out.suffix!r}; expected .pth or .weights "
                         f"(or a backbone name like darknet53.conv.74, or --cutoff)")
    model = model_from_file(source, cfg)[0]
    model.save_darknet_weights(out, cutoff)
    header = model.weights_header
    layers = f"layers 0..{cutoff - 1}" if cutoff is not None else f"all {len(model.layers)} layers"
    return f"wrote {out}: {layers}, header {header.major}.{header.minor}.{header.revision}, seen {header.seen}"


def main(argv=None) -> int:
    try:
        print(run(parse_args(argv)))
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

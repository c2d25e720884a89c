"""Convert between Darknet and PyTorch, cut backbones, expand Res2Net for Darknet, export ONNX and TorchScript.

    python convert.py --model_def CFG IN.weights OUT.pth          # Darknet -> checkpoint (train/test/detect take it)
    python convert.py [--model_def CFG] IN.pth OUT.weights        # checkpoint -> Darknet (seen, version kept)
    python convert.py --model_def CFG IN.weights darknet53.conv.74 # backbone: layers 0..73 (or --cutoff N)
    python convert.py --model_def CFG --darknet_native OUT.cfg    # [res2net]/[triangle] as plain Darknet layers
    python convert.py IN.pth --darknet_native OUT.cfg             # the same, for the cfg a .pth carries
    python convert.py [--model_def CFG] IN --onnx OUT.onnx [--img_size N] [--fuse]     # ONNX opset 17
    python convert.py [--model_def CFG] IN --onnx OUT.onnx --nms [--conf_thres --iou_thres --max_det]
    python convert.py [--model_def CFG] IN --torchscript OUT.pt                        # traced TorchScript

Exports take any batch and input size (--img_size, default the size a .pth was trained at, else the cfg's [net]
size, is only the traced example).
With --nms the ONNX graph ends in ONNX NonMaxSuppression: rows of batch, x1, y1, x2, y2, score, class.
    python convert.py --import_imagenet resnet50.pth --model_def cfg/resnet50-yolov3.cfg resnet50.conv.73
                                                                   # ImageNet classifier -> backbone file

An existing OUT is only replaced with --force (never an input), and is never left half-written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from utils.cli import IMAGE_SIZE, ArgumentParser, integer, number, run_main
from utils.conversion.darknet_files import to_checkpoint, to_darknet_weights
from utils.conversion.export import ONNX_OPSET, NmsOptions, require_onnx, write_onnx, write_torchscript
from utils.conversion.imagenet import IMAGENET_MEAN, IMAGENET_STD, import_imagenet, write_backbone
from utils.conversion.native import write_native_cfg
from utils.darknet.cfg import Cfg, read_cfg
from utils.darknet.checkpoint import CHECKPOINT_SUFFIXES, checkpoint_cfg, load_checkpoint, model_from_file, trained_size
from utils.darknet.model import Darknet
from utils.darknet.weights import WeightsFileError
from utils.errors import UserError
from utils.fileio import regular_file
from utils.output_files import named_write_errors, refuse_existing, refuse_replacing_inputs, refuse_shared_outputs


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("input", nargs="?", help=".weights or .pth")
    p.add_argument("output", nargs="?", help=".pth, or .weights (any name with --cutoff, e.g. darknet53.conv.74)")
    p.add_argument("--model_def", help="Darknet .cfg (a .pth input carries its own)")
    p.add_argument("--cutoff", type=integer(1), help="write only layers 0..N-1 to the .weights output")
    p.add_argument("--class_path", help="class names to store in a .pth output")
    p.add_argument("--darknet_native", metavar="OUT_CFG", help="write the cfg with [res2net]/[triangle] expanded")
    add_export_flags(p)
    add_import_flags(p)
    p.add_argument("--force", "--exist_ok", dest="force", action="store_true", help="replace an existing output")
    return p.parse_intermixed_args(argv)  # the files may come before, between or after the flags


def add_export_flags(p: ArgumentParser) -> None:
    defaults = NmsOptions()
    p.add_argument("--onnx", metavar="OUT_ONNX", help=f"export ONNX (opset {ONNX_OPSET}; dynamic batch, height, width)")
    p.add_argument("--nms", action="store_true", help="end the ONNX graph in NonMaxSuppression: final boxes")
    p.add_argument("--conf_thres", type=number(0, 1), help=f"with --nms: score threshold ({defaults.conf_thres})")
    p.add_argument("--iou_thres", type=number(0, 1), help=f"with --nms: IoU threshold ({defaults.iou_thres})")
    p.add_argument("--max_det", type=integer(1), help=f"with --nms: boxes per image at most ({defaults.max_det})")
    p.add_argument("--torchscript", metavar="OUT_PT", help="export traced TorchScript (fused, channels-last)")
    p.add_argument("--img_size", type=IMAGE_SIZE,
                   help="size of the traced example input (default: the size a .pth was trained at, else the "
                        "cfg's [net]; exports take any size)")
    p.add_argument("--fuse", action="store_true", help="fold BN into convs before the ONNX export")


def add_import_flags(p: ArgumentParser) -> None:
    p.add_argument("--import_imagenet", metavar="CKPT", help="a classification checkpoint (torchvision ResNet/"
                   "ResNeXt, SE-ResNet, IBN-Net, Res2Net layouts) to map onto the cfg's backbone; writes OUTPUT")
    p.add_argument("--input_mean", type=number(), nargs=3,
                   help=f"with --import_imagenet: the RGB mean the checkpoint's inputs were normalised with "
                        f"(folded into the first conv; 0 0 0 and --input_std 1 1 1 to fold nothing; default: "
                        f"ImageNet's, {' '.join(map(str, IMAGENET_MEAN))})")
    p.add_argument("--input_std", type=number(0, above=True), nargs=3,
                   help=f"with --import_imagenet: the RGB standard deviation of that normalisation (default: "
                        f"ImageNet's, {' '.join(map(str, IMAGENET_STD))})")


def run_import(args, cfg: Path | None) -> str:
    if cfg is None or not args.input or args.output:  # the one positional argument is the output here
        raise UserError("--import_imagenet CKPT needs --model_def CFG and one output (OUT.conv.N, .weights or .pth)")
    out = Path(args.input)
    check_output(out, "output", args.force, (args.import_imagenet, cfg))
    imported = import_imagenet(args.import_imagenet, Darknet(cfg), args.input_mean or list(IMAGENET_MEAN),
                               args.input_std or list(IMAGENET_STD))
    with named_write_errors(out, "backbone"):
        how = write_backbone(imported, out)
    left_out = f"; left out: {', '.join(imported.dropped)}" if imported.dropped else ""
    return (f"wrote {out}: the {imported.convs} convs of {args.import_imagenet} as layers 0..{imported.cutoff - 1} "
            f"of {cfg}{left_out}\ntrain from it: python train.py --model_def {cfg} {how}")


def check_output(path: Path, flag: str, force: bool, inputs: tuple[Path | str | None, ...]) -> None:
    """Refuse an output that is one of the inputs, even with --force; an existing one without it; one that
    could not be written."""
    refuse_replacing_inputs([path], inputs, flag)
    refuse_existing([path], flag, force, "--force")


OTHER_FORMATS = {".onnx": "an ONNX model", ".weights": "Darknet weights", ".cfg": "a Darknet cfg",
                 ".pth": "a checkpoint"}  # what a TorchScript file must not be named as


def refuse_other_format(out: Path, flag: str) -> None:
    """An export named as another format would not be what its name says."""
    if flag == "--onnx" and out.suffix != ".onnx":
        raise UserError(f"--onnx {out}: expected a name ending in .onnx")
    if flag == "--torchscript" and out.suffix in OTHER_FORMATS:
        raise UserError(f"--torchscript {out}: {out.suffix} names {OTHER_FORMATS[out.suffix]}; give the "
                        f"TorchScript file a name such as model.pt or model.torchscript")


EXPORT_FLAGS = ("nms", "conf_thres", "iou_thres", "max_det", "fuse", "img_size")  # only an export reads these
ONNX_ONLY_FLAGS = ("nms", "conf_thres", "iou_thres", "max_det")  # the NMS step ends an ONNX graph only


def refuse_unused_flags(args) -> None:
    """A flag the chosen conversion would ignore is a mistake to name, not to pass over in silence."""
    if not (args.onnx or args.torchscript):
        given = [name for name in EXPORT_FLAGS if getattr(args, name) not in (None, False)]
        if given:
            onnx_only = given[0] in ONNX_ONLY_FLAGS
            raise UserError(f"--{given[0]} sets an export; add --onnx OUT.onnx"
                            + ("" if onnx_only else " or --torchscript OUT.pt"))
    normalisation = [name for name in ("input_mean", "input_std") if getattr(args, name) is not None]
    if normalisation and not args.import_imagenet:
        raise UserError(f"--{normalisation[0]} describes a classifier's inputs; it applies with --import_imagenet only")
    if args.darknet_native:
        other = [flag for flag, given in (("--onnx", args.onnx), ("--torchscript", args.torchscript),
                                          ("--cutoff", args.cutoff is not None), ("--class_path", args.class_path))
                 if given]
        if other:
            raise UserError(f"{other[0]} belongs to another conversion; --darknet_native writes only its cfg: "
                            f"convert in a call of its own")
    if args.import_imagenet and args.cutoff is not None:
        raise UserError("--cutoff does not apply to --import_imagenet: the backbone's layers are those the "
                        "checkpoint fills (name the output .conv.N or .weights)")


def native_source(args, cfg: Path | None) -> tuple[Cfg, str]:
    """The cfg --darknet_native expands and how to name it: --model_def's, or the one a .pth input carries."""
    if args.output:
        raise UserError(f"{args.output}: --darknet_native writes only its cfg (the .weights stay as they are); "
                        f"convert in a call of its own")
    checkpoint = args.input and Path(args.input).suffix in CHECKPOINT_SUFFIXES
    if args.input and (cfg is not None or not checkpoint):
        raise UserError(f"{args.input}: --darknet_native reads no weights (the expanded cfg reads the same .weights); "
                        f"name the cfg with --model_def, or give only a .pth, which carries its cfg")
    if checkpoint:
        path = Path(args.input)
        return checkpoint_cfg(load_checkpoint(path), path), f"{path}'s cfg"
    if cfg is None:
        raise UserError("--darknet_native needs --model_def (or a .pth, which carries its cfg)")
    return read_cfg(cfg), str(cfg)


def write_darknet_native(args, cfg: Path | None) -> str:
    source, name = native_source(args, cfg)
    out = Path(args.darknet_native)
    if out.suffix != ".cfg":
        raise UserError(f"--darknet_native {out}: writes a cfg; name it .cfg, not "
                        f"{out.suffix or 'without an extension'}")
    check_output(out, "--darknet_native", args.force, (cfg, args.input))
    return write_native_cfg(source, name, out)


def run(args) -> str:
    refuse_unused_flags(args)
    cfg = Path(args.model_def) if args.model_def else None
    if args.import_imagenet:
        return run_import(args, cfg)
    if args.darknet_native:
        return write_darknet_native(args, cfg)
    if not args.input:
        raise UserError("name the input weights (and an output, or --onnx); see --help")
    source = regular_file(args.input, "weights file", WeightsFileError)
    if args.onnx or args.torchscript:
        return export(args, source, cfg)
    if not args.output:
        raise UserError("name an output file (.pth or .weights), or use --onnx / --torchscript / --darknet_native")
    out = Path(args.output)
    check_output(out, "output", args.force, (source, cfg))
    return convert_weights(args, source, cfg, out)


def convert_weights(args, source: Path, cfg: Path | None, out: Path) -> str:
    """.weights <-> .pth, or a backbone cut, by the output's name."""
    if out.suffix in CHECKPOINT_SUFFIXES:
        if args.cutoff is not None:
            raise UserError("--cutoff writes a Darknet .weights file; the output here is a .pth")
        return to_checkpoint(source, cfg, out, args.class_path)
    if args.class_path:
        raise UserError(f"--class_path stores class names in a .pth output; {out} is a Darknet .weights file, "
                        f"which holds none (Darknet reads them from a .names file)")
    return to_darknet_weights(source, cfg, out, args.cutoff)


def nms_options(args) -> NmsOptions | None:
    """The --nms step of an ONNX export, from its flags (each needs --nms, and --nms needs --onnx)."""
    given = {name: getattr(args, name) for name in ("conf_thres", "iou_thres", "max_det")
             if getattr(args, name) is not None}
    if not args.nms:
        if given:
            raise UserError(f"--{next(iter(given))} sets the NMS step of an ONNX export; add --nms")
        return None
    if not args.onnx:
        raise UserError("--nms ends an ONNX graph; add --onnx OUT.onnx")
    return NmsOptions(**given)


def export(args, source: Path, cfg: Path | None) -> str:
    """--onnx and/or --torchscript from one loaded model (ONNX first: TorchScript fuses the model)."""
    nms = nms_options(args)
    if args.onnx:
        require_onnx()
    if args.output:
        raise UserError(f"{args.output}: an export writes only its --onnx / --torchscript file; drop this output")
    targets = {flag: Path(name) for flag, name in (("--onnx", args.onnx), ("--torchscript", args.torchscript)) if name}
    refuse_shared_outputs(targets.items())
    for flag, out in targets.items():
        refuse_other_format(out, flag)
        check_output(out, flag, args.force, (source, cfg))
    model, state = model_from_file(source, cfg)
    size = args.img_size or trained_size(state)
    lines = []
    if args.onnx:
        lines.append(write_onnx(model, Path(args.onnx), size, args.fuse, nms))
    if args.torchscript:
        lines.append(write_torchscript(model, Path(args.torchscript), size))
    return "\n".join(lines)


def convert(args) -> int:
    print(run(args))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())

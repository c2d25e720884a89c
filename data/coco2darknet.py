"""Convert a COCO instances dataset (JSON + images) into a Darknet dataset.

    python -m data.coco2darknet --annotations instances_train2017.json --images train2017 \\
                                --valid_annotations instances_val2017.json --valid_images val2017 \\
                                --out data/coco --name coco
    python -m data.coco2darknet --annotations _annotations.coco.json --images export/ --out data/mine

Categories become classes 0..N-1 in id order; crowd boxes are left out; images without annotations are
kept as negatives; boxes are clipped to their image and those left empty dropped (all counted). Images are
linked (or with --copy, copied) into OUT/images so that labels can sit in OUT/labels, as Darknet expects;
the source folders are only read. Without --valid_annotations the train JSON is split (seeded).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python data/x.py): the repo root is not on sys.path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import ArgumentParser, run_main
from utils.data.coco import CocoOptions, CocoSource, convert_coco, describe
from utils.data.layout import add_split_flags, check_destination
from utils.errors import UserError
from utils.output_files import made_folder, named_write_errors


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--annotations", required=True, help="COCO instances JSON of the training images")
    p.add_argument("--images", required=True, help="folder its file_name entries are relative to")
    p.add_argument("--valid_annotations", help="COCO instances JSON of the validation images")
    p.add_argument("--valid_images", help="their folder (default: --images)")
    p.add_argument("--out", required=True, help="output dataset folder, new or empty")
    p.add_argument("--exist_ok", action="store_true", help="write into an --out that holds files, replacing them")
    p.add_argument("--name", default="coco", help="base name of the .data and .names files")
    add_split_flags(p, "without --valid_annotations: share split off for validation")
    p.add_argument("--copy", action="store_true", help="copy images instead of linking them")
    return p.parse_args(argv)


def convert(args) -> int:
    if args.valid_images and not args.valid_annotations:
        raise UserError("--valid_images needs --valid_annotations")
    train = CocoSource(Path(args.annotations), Path(args.images))
    valid = CocoSource(Path(args.valid_annotations), Path(args.valid_images or args.images)) \
        if args.valid_annotations else None
    folders = [("--images", train.images)] + ([("--valid_images", valid.images)] if valid else [])
    check_destination(Path(args.out), args.name, folders, args.exist_ok)
    with made_folder(Path(args.out), "--out"), named_write_errors(args.out, "dataset"):  # no half-written new dataset
        data, counts = convert_coco(train, args.out, valid, CocoOptions(args.name, args.valid_fraction, args.seed,
                                                                        args.copy))
    print(describe(data, counts))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())

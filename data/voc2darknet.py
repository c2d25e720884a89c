"""Convert a Pascal VOC dataset (XML annotations + images) into a Darknet dataset.

    python -m data.voc2darknet --annotations ../shared/datasets/raccoon/annotations \\
                               --images ../shared/datasets/raccoon/images --out data/raccoon --name raccoon

Images are linked (or with --copy, copied) into OUT/images so that labels can sit in OUT/labels, as
Darknet expects; the source folders are only read. The train/valid split is seeded.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python data/x.py): the repo root is not on sys.path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import ArgumentParser, run_main
from utils.data.layout import add_split_flags, check_destination
from utils.data.voc import VocOptions, convert_voc, describe
from utils.output_files import made_folder, named_write_errors


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--annotations", required=True, help="folder of VOC .xml files")
    p.add_argument("--images", required=True, help="folder of the images they describe")
    p.add_argument("--out", required=True, help="output dataset folder, new or empty")
    p.add_argument("--exist_ok", action="store_true", help="write into an --out that holds files, replacing them")
    p.add_argument("--name", default="voc", help="base name of the .data and .names files")
    p.add_argument("--classes", nargs="+", help="class names in order (default: every name found, sorted)")
    add_split_flags(p)
    p.add_argument("--include_difficult", action="store_true", help="keep objects marked difficult")
    p.add_argument("--copy", action="store_true", help="copy images instead of linking them")
    return p.parse_args(argv)


def convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_destination(out, args.name, [("--images", Path(args.images)), ("--annotations", Path(args.annotations))],
                      args.exist_ok)
    options = VocOptions(tuple(args.classes) if args.classes else None, args.valid_fraction, args.seed,
                         args.include_difficult, args.copy)
    with made_folder(out, "--out"), named_write_errors(out, "dataset"):  # no half-written new dataset is left
        data, counts = convert_voc(args.annotations, args.images, out, args.name, options)
    print(describe(data, counts))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())

"""Convert a Pascal VOC dataset (XML annotations + images) into a Darknet dataset.

    python -m data.voc2darknet --annotations ../shared/datasets/raccoon/annotations \\
                               --images ../shared/datasets/raccoon/images --out data/raccoon --name raccoon

Images are linked (or with --copy, copied) into OUT/images so that labels can sit in OUT/labels, as
Darknet expects; the source folders are only read. The train/valid split is seeded.
"""
import argparse
import sys

from utils.cli import run_main
from utils.data.voc import VocOptions, convert_voc


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", required=True, help="folder of VOC .xml files")
    p.add_argument("--images", required=True, help="folder of the images they describe")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--name", default="voc", help="base name of the .data and .names files")
    p.add_argument("--classes", nargs="+", help="class names in order (default: every name found, sorted)")
    p.add_argument("--valid_fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include_difficult", action="store_true", help="keep objects marked difficult")
    p.add_argument("--copy", action="store_true", help="copy images instead of linking them")
    return p.parse_args(argv)


def convert(args: argparse.Namespace) -> int:
    options = VocOptions(tuple(args.classes) if args.classes else None, args.valid_fraction, args.seed,
                         args.include_difficult, args.copy)
    print(f"wrote {convert_voc(args.annotations, args.images, args.out, args.name, options)}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: convert(args))


if __name__ == "__main__":
    sys.exit(main())

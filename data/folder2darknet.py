"""Make a dataset of a folder of images whose Darknet (YOLO) label files are written already, as labelling tools'
YOLO exports leave them (labelImg, CVAT: each .txt beside its image, with classes.txt or obj.names) or as
images/ beside labels/: seeded train.txt and valid.txt lists and a .data, nothing copied or moved.

    python -m data.folder2darknet --images data/mine/images --names data/mine/classes.txt --out data/mine
    python train.py --data_config data/mine/mine.data ...

The labels are checked first, as training checks them: a folder whose labels are not where Darknet looks for
them is refused, naming the paths it tried, and nothing is written.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by its path (python data/x.py): the repo root is not on sys.path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import ArgumentParser, run_main
from utils.data.check import format_dataset_summary
from utils.data.config import DataError
from utils.data.folder import LIST_FILES, FolderSplit, LabelledFolder, split_folder
from utils.data.layout import add_split_flags, check_dataset_name
from utils.fileio import regular_file
from utils.output_files import made_folder, named_write_errors, refuse_existing, refuse_replacing_inputs


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--images", required=True, help="folder of the images (read at any depth, sorted)")
    p.add_argument("--names", required=True, help="the class names, one a line (classes.txt, obj.names)")
    p.add_argument("--out", required=True, help="folder for train.txt, valid.txt and NAME.data (e.g. the dataset's)")
    p.add_argument("--name", help="base name of the .data file (default: the --out folder's name)")
    p.add_argument("--exist_ok", action="store_true", help="replace train.txt, valid.txt and NAME.data in --out")
    add_split_flags(p)
    return p.parse_args(argv)


def split(args: argparse.Namespace) -> int:
    out = Path(args.out)
    name = args.name or Path(out.resolve()).name
    check_dataset_name(name)
    outputs = [out / listed for listed in LIST_FILES] + [out / f"{name}.data"]
    refuse_existing(outputs, "--out", args.exist_ok)
    images = Path(args.images)
    if not images.is_dir():
        raise DataError(f"--images {images}: not a folder")
    folder = LabelledFolder.read(images, regular_file(args.names, "class names", DataError))
    refuse_replacing_inputs(outputs, folder.files(), "--out")
    with made_folder(out, "--out"), named_write_errors(out, "dataset lists"):
        made = split_folder(folder, out, name, FolderSplit(args.valid_fraction, args.seed))
    print(format_dataset_summary(made.summary))
    print(f"wrote {made.data}: {made.sizes['train']} train and {made.sizes['valid']} valid images, "
          f"{len(folder.names)} classes (names from {folder.names_file}); train with: python train.py "
          f"--data_config {made.data}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: split(args))


if __name__ == "__main__":
    sys.exit(main())

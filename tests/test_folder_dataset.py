"""data/folder2darknet.py: a folder of images with their label files written already becomes lists and a .data."""
import shutil

import pytest

from data.folder2darknet import main
from utils.data.config import parse_data_config, read_image_list
from utils.data.dataset import DetectionDataset
from utils.data.synthetic import write_dataset


@pytest.fixture
def flat(tmp_path):
    """A labelImg-style folder: each image's .txt beside it, and classes.txt."""
    write_dataset(tmp_path / "set", train=8, valid=1, size=64, seed=3)
    folder = tmp_path / "flat"
    folder.mkdir()
    for image in (tmp_path / "set" / "images" / "train").iterdir():
        shutil.copy(image, folder / image.name)
        shutil.copy(tmp_path / "set" / "labels" / "train" / f"{image.stem}.txt", folder / f"{image.stem}.txt")
    shutil.copy(tmp_path / "set" / "shapes.names", folder / "classes.txt")
    return folder


def run(folder, *extra):
    return main(["--images", str(folder), "--names", str(folder / "classes.txt"), "--out", str(folder), *extra])


def test_a_labelled_folder_becomes_seeded_lists_and_a_data_file_in_place(flat, capsys):
    assert run(flat, "--seed", "1") == 0
    assert f"wrote {flat / 'flat.data'}: 6 train and 2 valid images, 4 classes" in capsys.readouterr().out
    config = parse_data_config(flat / "flat.data")
    assert config.names == ["circle", "rectangle", "triangle", "cross"] and config.names_file == flat / "classes.txt"
    train, valid = read_image_list(config.train), read_image_list(config.valid)
    assert sorted(train + valid) == sorted(flat.glob("*.jpg")) and not set(train) & set(valid)
    assert (flat / "train.txt").read_text().splitlines()[0] == train[0].name  # relative to the folder, as listed
    dataset = DetectionDataset(config.train, 4)  # each image finds its label file beside it
    assert [len(labels) for labels in dataset.labels] == \
        [len((flat / f"{image.stem}.txt").read_text().splitlines()) for image in train]
    assert sum(map(len, dataset.labels)) > 0
    lists = {name: (flat / name).read_bytes() for name in ("train.txt", "valid.txt", "flat.data")}
    assert run(flat, "--seed", "1") == 1
    assert "train.txt: the file exists; choose another name or pass --exist_ok" in capsys.readouterr().err
    assert run(flat, "--seed", "1", "--exist_ok") == 0  # seeded: the same split again
    assert {name: (flat / name).read_bytes() for name in lists} == lists


def test_images_elsewhere_are_listed_by_absolute_paths(flat, tmp_path):
    assert main(["--images", str(flat), "--names", str(flat / "classes.txt"), "--out", str(tmp_path / "lists"),
                 "--name", "mine"]) == 0
    entries = (tmp_path / "lists" / "train.txt").read_text().splitlines()
    assert all(entry.startswith(str(flat)) for entry in entries)
    assert parse_data_config(tmp_path / "lists" / "mine.data").classes == 4


def test_labels_not_found_or_wrong_stop_before_anything_is_written(flat, tmp_path, capsys):
    for label in flat.glob("0*.txt"):
        label.unlink()
    out = tmp_path / "lists"
    assert main(["--images", str(flat), "--names", str(flat / "classes.txt"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no label file was found for any of its 8 images" in err
    assert f"{flat}/00000.txt (for {flat}/00000.jpg)" in err and not out.exists()
    (flat / "00000.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    assert main(["--images", str(flat), "--names", str(flat / "classes.txt"), "--out", str(out)]) == 1
    assert f"{flat}/00000.txt:1: class 7" in capsys.readouterr().err and not out.exists()


def test_a_list_that_would_replace_a_label_file_is_refused_even_with_exist_ok(flat, capsys):
    (flat / "00000.jpg").rename(flat / "train.jpg")
    (flat / "00000.txt").rename(flat / "train.txt")  # train.jpg's labels, where the train list would go
    assert run(flat, "--exist_ok") == 1
    assert f"--out {flat / 'train.txt'} is the input {flat / 'train.txt'}" in capsys.readouterr().err
    assert (flat / "train.txt").read_text().startswith(("0 ", "1 ", "2 ", "3 "))

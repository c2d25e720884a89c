"""The dataset check: counts, the stop when labels were never found (naming where it looked), the summary
table, labels.png and the train_batchN.jpg grids."""
import warnings

import cv2
import numpy as np
import pytest
import torch

from utils.data.check import (VALIDATION, CheckOptions, check_dataset, check_evaluation_labels, dataset_notes,
                              format_dataset_summary, labels_problem, summarize_dataset, warn_shared_images)
from utils.data.check import main as check_main
from utils.data.config import DataError, DataWarning, parse_data_config
from utils.data.dataset import Batch, DetectionDataset
from utils.data.synthetic import write_dataset
from utils.inference.visualize import class_colour
from utils.plots import plot_batch, plot_labels

NAMES = ["circle", "rectangle", "triangle", "cross"]


@pytest.fixture
def shapes(tmp_path):
    data = write_dataset(tmp_path / "set", train=10, valid=1, size=64, seed=1)
    return tmp_path / "set", parse_data_config(data)


def test_counts_images_negatives_missing_files_and_tiny_boxes(shapes):
    root, config = shapes
    labels = root / "labels" / "train"
    (labels / "00000.txt").unlink()  # a negative by absence
    (labels / "00001.txt").write_text("")  # an explicit negative
    (labels / "00002.txt").write_text("0 0.5 0.5 0.03 0.5\n2 0.5 0.5 0.5 0.5\n")  # 0.03 * 64 < 4 px
    (root / "images" / "train" / "00003.jpg").unlink()
    summary = check_dataset(DetectionDataset(config.train, 4), NAMES, CheckOptions(img_size=64))
    assert len(summary.images) == 10 and summary.present == 9
    assert summary.missing_images == [root / "images" / "train" / "00003.jpg"]
    assert summary.without_label_file == [root / "images" / "train" / "00000.jpg"]
    assert (summary.empty_label_files, summary.negatives) == (1, 2)
    expected = np.zeros(4, int)
    for i in range(4, 10):
        expected += np.bincount(np.loadtxt(labels / f"0000{i}.txt", ndmin=2)[:, 0].astype(int), minlength=4)
    np.testing.assert_array_equal(summary.boxes_per_class, expected + [1, 0, 1, 0])
    assert summary.tiny_per_class.tolist() == [1, 0, 0, 0]
    table = format_dataset_summary(summary)
    assert "| circle" in table and "< 4 px" in table
    notes = "\n".join(dataset_notes(summary))
    assert "7 with boxes, 2 negatives (1 without a label file, 1 with an empty one)" in notes
    assert "1 listed images are not files on disk (missing, or folders)" in notes and "1 boxes are under 4 px" in notes


def test_labels_never_found_stop_with_the_paths_looked_for(shapes):
    root, config = shapes
    for label in (root / "labels" / "train").iterdir():
        label.unlink()
    dataset = DetectionDataset(config.train, 4)
    with pytest.raises(DataError) as caught:
        check_dataset(dataset, NAMES)
    message = str(caught.value)
    assert message.startswith(f"{root / 'train.txt'}: no label file was found for any of its 10 images")
    assert f"{root}/labels/train/00000.txt (for {root}/images/train/00000.jpg)" in message
    assert "and 7 more" in message and "replacing the last 'images'" in message and "--allow_all_negative" in message
    summary = check_dataset(dataset, NAMES, CheckOptions(allow_negatives=True))
    assert summary.negatives == 10


def test_label_files_without_a_single_box_stop_training_and_are_a_warning_for_evaluation(shapes):
    root, config = shapes
    for label in (root / "labels" / "train").iterdir():
        label.write_text("")
    dataset = DetectionDataset(config.train, 4)
    with pytest.raises(DataError, match=rf"{root / 'train.txt'}: not one box in its 10 images \(10 empty label "
                                        r"files\), so they would train as negatives .* Write the boxes into the label "
                                        r"files, or pass --allow_all_negative if these images really hold no "
                                        r"objects\.$"):
        check_dataset(dataset, NAMES)
    assert check_dataset(dataset, NAMES, CheckOptions(allow_negatives=True)).negatives == 10
    with pytest.raises(DataError, match=r"files\), so every detection on them would count as a false positive \(mAP "
                                        r"near 0\)\. Write the boxes into the label files, or pass "
                                        r"--allow_all_negative"):
        check_dataset(dataset, NAMES, CheckOptions(use=VALIDATION))  # as training's validation list is checked
    with pytest.warns(UserWarning, match=r"not one box in its 10 images \(10 empty label files\)"):
        check_evaluation_labels(dataset, NAMES)
    (root / "labels" / "train" / "00009.txt").unlink()  # one missing among the empty ones: still no box
    with pytest.raises(DataError, match=r"not one box in its 10 images \(9 empty label files, 1 without one\)"):
        check_dataset(DetectionDataset(config.train, 4), NAMES)
    (root / "labels" / "train" / "00000.txt").write_text("1 0.5 0.5 0.2 0.2\n")  # one box: negatives are allowed
    check_dataset(DetectionDataset(config.train, 4), NAMES)


def test_more_than_half_without_labels_stops_half_does_not(shapes):
    root, config = shapes
    for i in range(5):
        (root / "labels" / "train" / f"0000{i}.txt").unlink()
    check_dataset(DetectionDataset(config.train, 4), NAMES)  # exactly half: a warning in the notes only
    (root / "labels" / "train" / "00005.txt").unlink()
    with pytest.raises(DataError, match=r"6 of its 10 images \(60 %\) have no label file"):
        check_dataset(DetectionDataset(config.train, 4), NAMES)


def test_images_outside_an_images_folder_look_beside_themselves(tmp_path):
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")  # where the user hoped it would be found
    (tmp_path / "list.txt").write_text("photos/a.jpg\n")
    dataset = DetectionDataset(tmp_path / "list.txt", 1)
    problem = labels_problem(summarize_dataset(dataset.images, dataset.labels, ["x"], "list.txt"))
    assert f"{tmp_path}/photos/a.txt (for {tmp_path}/photos/a.jpg)" in problem


def test_every_image_missing_is_an_error_even_with_negatives_allowed(tmp_path):
    (tmp_path / "list.txt").write_text("images/gone.jpg\n")
    dataset = DetectionDataset(tmp_path / "list.txt", 1)
    with pytest.raises(DataError, match="none of its 1 listed images exists"):
        check_dataset(dataset, ["x"], CheckOptions(allow_negatives=True))


def test_validation_images_that_are_training_images_are_warned_of(shapes, tmp_path):
    root, config = shapes
    train, valid = DetectionDataset(config.train, 4), DetectionDataset(config.valid, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_shared_images(train, valid)  # apart: nothing to say
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "again.jpg").symlink_to(train.images[1])  # the same image by another name
    both = DetectionDataset((config.valid, tmp_path / "images"), 4)
    with pytest.warns(DataWarning, match=rf"1 of the {len(valid) + 1} validation images are training images too "
                                         rf"\(e\.g\. {tmp_path}/images/again\.jpg\), so the mAP overstates"):
        warn_shared_images(train, both)


def test_labels_png_is_written(shapes, tmp_path):
    _, config = shapes
    out = tmp_path / "run" / "labels.png"
    plot_labels(DetectionDataset(config.train, 4).labels, NAMES, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert not list(out.parent.glob(".*tmp"))


def test_labels_png_is_rewritten_only_when_the_labels_change(shapes, tmp_path):
    _, config = shapes
    labels, out = DetectionDataset(config.train, 4).labels, tmp_path / "labels.png"
    plot_labels(labels, NAMES, out)
    written = out.stat().st_mtime_ns, out.read_bytes()
    plot_labels(labels, NAMES, out)  # what a resumed run does
    assert (out.stat().st_mtime_ns, out.read_bytes()) == written
    plot_labels(labels[:len(labels) // 2], NAMES, out)  # label files edited between the runs
    assert out.read_bytes() != written[1]


def test_batch_grid_shows_each_image_with_its_boxes(tmp_path):
    images = torch.full((3, 3, 64, 64), 255, dtype=torch.uint8)
    targets = torch.tensor([[1, 2, 0.5, 0.5, 0.5, 0.5]])  # image 1, class 2: the box 16..48
    batch = Batch(images, targets, ["a.jpg", "b.jpg", "c.jpg"], [0, 1, 2], [(64, 64)] * 3, [None] * 3)
    plot_batch(batch, NAMES, tmp_path / "train_batch0.jpg")
    grid = cv2.imread(str(tmp_path / "train_batch0.jpg"))
    assert grid.shape == (128, 128, 3)  # 2 x 2 tiles of 64
    edge = grid[40, 64 + 16].astype(int)  # left edge of the box, in the second tile (JPEG blurs its colour)
    assert edge.min() < 200 and np.argmax(edge) == np.argmax(class_colour(2))
    assert grid[40, 16].min() > 245  # the first tile has no box


def test_the_command_line_prints_both_lists_and_stops_on_missing_labels(shapes, tmp_path, capsys):
    root, _ = shapes
    assert check_main(["--data_config", str(root / "shapes.data"), "--labels_png", str(tmp_path / "l.png")]) == 0
    out = capsys.readouterr().out
    assert "train.txt" in out and "valid.txt" in out and (tmp_path / "l.png").exists()
    drawn = (tmp_path / "l.png").read_bytes()
    assert check_main(["--data_config", str(root / "shapes.data"), "--labels_png", str(tmp_path / "l.png")]) == 1
    assert "l.png: the file exists; choose another name or pass --exist_ok" in capsys.readouterr().err
    (tmp_path / "folder.png").mkdir()
    assert check_main(["--data_config", str(root / "shapes.data"), "--labels_png", str(tmp_path / "folder.png")]) == 1
    assert "is a folder, expected a file name" in capsys.readouterr().err and (tmp_path / "l.png").read_bytes() == drawn
    with pytest.raises(SystemExit):
        check_main(["--data_config", str(root / "shapes.data"), "--labels_png", str(tmp_path / "labels.jpg")])
    assert "--labels_png: expected a file name ending in .png, got" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check_main(["--data_config", str(root / "shapes.data"), "--img_size", "-5"])
    assert "--img_size: expected an integer in 32 .. 8192" in capsys.readouterr().err
    image = next((root / "images" / "train").iterdir())
    png = image.with_suffix(".png")
    cv2.imwrite(str(png), cv2.imread(str(image)))
    image.unlink()
    (root / "train.txt").write_text((root / "train.txt").read_text().replace(image.name, png.name))
    link = tmp_path / "link.png"
    link.symlink_to(png)
    before = png.read_bytes()
    for target in (png, link):  # a training image, by its name or through a link: never replaced
        assert check_main(["--data_config", str(root / "shapes.data"), "--labels_png", str(target), "--exist_ok"]) == 1
        assert f"--labels_png {target} is the input {png}" in capsys.readouterr().err
    assert png.read_bytes() == before and link.is_symlink()
    for label in (root / "labels" / "valid").iterdir():
        label.unlink()
    assert check_main(["--data_config", str(root / "shapes.data")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {root / 'valid.txt'}: no label file was found")
    assert check_main(["--data_config", str(root / "shapes.data"), "--allow_all_negative"]) == 0

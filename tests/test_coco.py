"""The COCO importer: category remapping, crowds, negatives, clipping and degenerate boxes, named errors; and a
COCO version of a dataset that loads to the same images, labels and mAP as the .data it came from."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import REPO, evaluate_on, random_tiny_model
from utils.data.coco import CocoOptions, CocoSource, convert_coco
from utils.data.config import DataError, DataWarning, parse_data_config
from utils.data.dataset import DetectionDataset
from utils.data.synthetic import write_dataset


def coco_folder(tmp_path, images, annotations, categories):
    (tmp_path / "img").mkdir(exist_ok=True)
    for entry in images:
        cv2.imwrite(str(tmp_path / "img" / entry["file_name"]), np.zeros((entry["height"], entry["width"], 3),
                                                                          np.uint8))
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return CocoSource(path, tmp_path / "img")


def box(ann_id, image_id, category_id, bbox, crowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": crowd}


@pytest.fixture
def small(tmp_path):
    images = [{"id": 5, "file_name": "a.jpg", "width": 100, "height": 50},
              {"id": 6, "file_name": "b.jpg", "width": 40, "height": 40},
              {"id": 9, "file_name": "c.jpg", "width": 20, "height": 10}]
    annotations = [box(1, 5, 7, [10, 5, 20, 10]),
                   box(2, 5, 3, [0, 0, 100, 50], crowd=1),
                   box(3, 5, 1, [90, 40, 20, 20]),  # half outside: clipped to 90..100, 40..50
                   box(4, 6, 7, [50, 50, 10, 10]),  # wholly outside: nothing left
                   box(5, 6, 3, [10, 10, 0, 5])]  # no width
    categories = [{"id": 7, "name": "zebra"}, {"id": 1, "name": "ant"}, {"id": 3, "name": "cat"}]
    return coco_folder(tmp_path, images, annotations, categories)


def test_conversion_remaps_ids_leaves_out_crowds_and_counts(small, tmp_path):
    data, counts = convert_coco(small, tmp_path / "out", options=CocoOptions("mine", valid_fraction=0.34, seed=0))
    config = parse_data_config(data)
    assert config.names == ["ant", "cat", "zebra"]  # ids 1, 3, 7
    assert (counts.images, counts.negatives, counts.boxes) == (3, 2, 2)
    assert (counts.crowd, counts.clipped, counts.degenerate) == (1, 1, 2)
    rows = np.loadtxt(tmp_path / "out" / "labels" / "a.txt", ndmin=2)
    np.testing.assert_allclose(rows, [[2, 0.2, 0.2, 0.2, 0.2], [0, 0.95, 0.9, 0.1, 0.2]])
    assert (tmp_path / "out/labels/b.txt").read_text() == "" and (tmp_path / "out/labels/c.txt").read_text() == ""
    listed = DetectionDataset(config.train, 3).images + DetectionDataset(config.valid, 3).images
    assert sorted(p.name for p in listed) == ["a.jpg", "b.jpg", "c.jpg"]
    assert all(p.is_symlink() for p in (tmp_path / "out" / "images").iterdir())


@pytest.mark.parametrize("change,problem", [
    (lambda d: d.update(images="x"), "not a COCO instances file"),
    (lambda d: d["annotations"].append(box(9, 77, 7, [1, 1, 2, 2])), r"annotations\[5\] \(id 9\): image_id 77 is not"),
    (lambda d: d["annotations"].append(box(9, 5, 2, [1, 1, 2, 2])), r"category_id 2 is not in 'categories'"),
    (lambda d: d["annotations"].append(box(9, 5, 7, [1, 1, "2", 2])), r"bbox must be \[x, y, width, height\]"),
    (lambda d: d["annotations"].append(box(9, 5, 7, [1, 1, float("nan"), 2])), r"four finite numbers"),
    (lambda d: d["images"].append({"id": 10, "file_name": "../x.jpg"}), r"images\[3\]: file_name '../x.jpg' must"),
    (lambda d: d["images"].append({"id": 10, "file_name": "gone.jpg"}), r"1 of its images are not in .*gone.jpg"),
    (lambda d: d["images"].append({"id": 5, "file_name": "b.jpg"}), r"images\[3\]: image id 5 .* appears twice"),
    (lambda d: d["categories"].append({"id": 7, "name": "again"}), r"categories\[3\]: id 7 repeats"),
    (lambda d: d["categories"].append({"id": 40, "name": d["categories"][0]["name"]}),
     r"categories\[3\]: the name '\w+' is also category id \d+'s; two classes of one name"),
    (lambda d: d["images"][0].update(id="5"), r"images\[0\]: 'id' is missing or not an integer"),
])
def test_bad_annotations_are_named(small, tmp_path, change, problem):
    document = json.loads(small.annotations.read_text())
    change(document)
    small.annotations.write_text(json.dumps(document))
    with pytest.raises(DataError, match=problem):
        convert_coco(small, tmp_path / "out")


def test_images_that_would_share_a_label_file_are_refused(small, tmp_path):
    cv2.imwrite(str(small.images / "a.png"), np.zeros((10, 10, 3), np.uint8))
    document = json.loads(small.annotations.read_text())
    document["images"].append({"id": 10, "file_name": "a.png", "width": 10, "height": 10})
    small.annotations.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"a\.png and a\.jpg would share the label file a\.txt"):
        convert_coco(small, tmp_path / "out")


def test_sizes_are_checked_against_the_images_as_the_voc_importer_checks_them(small, tmp_path):
    document = json.loads(small.annotations.read_text())
    del document["images"][1]["width"]  # b.jpg: its size is read from the image
    small.annotations.write_text(json.dumps(document))
    cv2.imwrite(str(small.images / "a.jpg"), np.zeros((100, 200, 3), np.uint8))  # twice the JSON's 100x50
    with pytest.warns(DataWarning, match=r"1 image\(s\) were resized after annotation, in proportion: their boxes "
                                         r"are scaled with them \(first: .*instances.json: images\[0\] says 100x50, "
                                         r"a.jpg is 200x100\)"):
        _, counts = convert_coco(small, tmp_path / "out")
    assert counts.scaled == 1
    rows = np.loadtxt(tmp_path / "out" / "labels" / "a.txt", ndmin=2)
    np.testing.assert_allclose(rows, [[2, 0.2, 0.2, 0.2, 0.2], [0, 0.95, 0.9, 0.1, 0.2]])  # as at the JSON's size
    cv2.imwrite(str(small.images / "a.jpg"), np.zeros((100, 50, 3), np.uint8))  # 50x100: turned a quarter
    with pytest.raises(DataError, match=r"instances.json: images\[0\]: says the image is 100x50, but .*a.jpg is 50x100 "
                                        r"as read \(turned by a quarter: an EXIF orientation\?\); its boxes cannot "
                                        r"be placed: fix width/height and the boxes, or the image"):
        convert_coco(small, tmp_path / "out2")
    cv2.imwrite(str(small.images / "a.jpg"), np.zeros((50, 100, 3), np.uint8))
    (small.images / "b.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"images\[1\]: no width/height, and .*b.jpg cannot be read to find it"):
        convert_coco(small, tmp_path / "out3")


def test_both_jsons_are_checked_before_any_image_is_decoded(small, tmp_path, monkeypatch):
    document = json.loads(small.annotations.read_text())
    document["categories"][0]["name"] = "horse"
    other = tmp_path / "valid.json"
    other.write_text(json.dumps(document))
    monkeypatch.setattr("utils.data.coco.annotated_sizes", lambda entries: pytest.fail("decoded the images first"))
    with pytest.raises(DataError, match=r"valid\.json: its categories differ from those of .*instances\.json"):
        convert_coco(small, tmp_path / "out", CocoSource(other, small.images))


def test_invalid_json_names_its_line(small, tmp_path):
    small.annotations.write_text('{"images": [],\n "categories": [}\n')
    with pytest.raises(DataError, match=r"instances.json:2: not valid JSON"):
        convert_coco(small, tmp_path / "out")


def as_coco(root, split, category_ids):
    """A COCO JSON of one split of a synthetic Darknet dataset, category i having id category_ids[i]."""
    images, annotations = [], []
    for image_id, line in enumerate((root / f"{split}.txt").read_text().split(), 1):
        height, width = cv2.imread(str(root / line)).shape[:2]
        images.append({"id": image_id, "file_name": line.split("/")[-1], "width": width, "height": height})
        labels = np.loadtxt(root / line.replace("images", "labels").replace(".jpg", ".txt"), ndmin=2)
        for cls, cx, cy, w, h in labels.reshape(-1, 5):
            annotations.append(box(len(annotations) + 1, image_id, category_ids[int(cls)],
                                   [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]))
    names = (root / "shapes.names").read_text().split()
    path = root / f"{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": i, "name": n} for i, n in zip(category_ids, names)]}))
    return CocoSource(path, root / "images" / split)


def test_a_coco_version_gives_the_same_dataset_and_map(tmp_path):
    data = write_dataset(tmp_path / "set", train=4, valid=8, size=96, seed=5)
    root = data.parent
    ids = [4, 8, 15, 16]
    coco_data, counts = convert_coco(as_coco(root, "train", ids), tmp_path / "coco", as_coco(root, "valid", ids))
    assert counts.clipped == counts.degenerate == 0
    darknet, coco = parse_data_config(data), parse_data_config(coco_data)
    assert coco.names == darknet.names
    for split in ("train", "valid"):
        ours, theirs = DetectionDataset(getattr(coco, split), 4), DetectionDataset(getattr(darknet, split), 4)
        assert [p.resolve() for p in ours.images] == [p.resolve() for p in theirs.images]
        for a, b in zip(ours.labels, theirs.labels):
            np.testing.assert_allclose(a, b, atol=1.5e-6)
    model = random_tiny_model(4)
    _, expected = evaluate_on(model, data)
    _, converted = evaluate_on(model, coco_data)
    assert expected.map50 > 0.01
    assert (converted.map50, converted.map) == pytest.approx((expected.map50, expected.map), abs=1e-9)


@pytest.mark.e2e
def test_the_command_line_converts_and_reports(small, tmp_path):
    result = subprocess.run([sys.executable, "-m", "data.coco2darknet", "--annotations", str(small.annotations),
                             "--images", str(small.images), "--out", str(tmp_path / "out"), "--name", "mine"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 images (2 without boxes), 2 boxes; left out 1 crowd and 2 degenerate boxes; 1 boxes clipped" \
        in result.stdout
    bad = subprocess.run([sys.executable, "-m", "data.coco2darknet", "--annotations", str(tmp_path / "none.json"),
                          "--images", str(small.images), "--out", str(tmp_path / "out")],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1

"""The VOC importer: Darknet's box conversion, difficult objects, seeded split, errors; and the raccoon set."""
import cv2
import numpy as np
import pytest

from tests.conftest import shared_path
from utils.data.config import DataError, DataWarning, parse_data_config
from utils.data.dataset import DetectionDataset
from utils.data.voc import VocOptions, convert_voc

XML = """<annotation><filename>{name}.jpg</filename><size><width>{w}</width><height>{h}</height></size>
{objects}</annotation>"""
OBJECT = ("<object><name>{cls}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
          "<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def voc_folder(tmp_path, images):
    (tmp_path / "ann").mkdir()
    (tmp_path / "img").mkdir()
    for name, (w, h), objects in images:
        cv2.imwrite(str(tmp_path / "img" / f"{name}.jpg"), np.zeros((h, w, 3), np.uint8))
        text = "".join(OBJECT.format(**o) for o in objects)
        (tmp_path / "ann" / f"{name}.xml").write_text(XML.format(name=name, w=w, h=h, objects=text))
    return tmp_path / "ann", tmp_path / "img"


def test_conversion_split_and_difficult(tmp_path):
    objects = [dict(cls="dog", difficult=0, x1=11, y1=21, x2=51, y2=81),
               dict(cls="cat", difficult=1, x1=1, y1=1, x2=10, y2=10)]
    images = [(f"im{i}", (100, 200), objects) for i in range(10)]
    ann, img = voc_folder(tmp_path, images)
    (ann / "im9.xml").rename(ann / "im9.XML")  # an upper-case extension is an annotation too
    data, counts = convert_voc(ann, img, tmp_path / "out", "pets", VocOptions(seed=3))
    assert (counts.images, counts.boxes, counts.difficult, counts.negatives) == (10, 10, 10, 0)
    config = parse_data_config(data)
    assert config.names == ["dog"]  # the only cat is difficult, so it is not even a class
    assert len(DetectionDataset(config.train, 1)) == 8 and len(DetectionDataset(config.valid, 1)) == 2
    label = (tmp_path / "out" / "labels" / "im0.txt").read_text().split()
    assert [float(v) for v in label] == pytest.approx([0, (31 - 1) / 100, (51 - 1) / 200, 40 / 100, 60 / 200])
    again, _ = convert_voc(ann, img, tmp_path / "out2", "pets", VocOptions(seed=3))
    assert (tmp_path / "out2" / "valid.txt").read_text() == (tmp_path / "out" / "valid.txt").read_text()
    with_difficult, _ = convert_voc(ann, img, tmp_path / "out3", "pets", VocOptions(include_difficult=True))
    assert parse_data_config(with_difficult).names == ["cat", "dog"]
    assert again.exists()


def test_boxes_are_clipped_to_their_image_and_those_outside_it_dropped(tmp_path):
    objects = [dict(cls="cat", difficult=0, x1=251, y1=11, x2=301, y2=51),  # right of a 200 px wide image
               dict(cls="cat", difficult=0, x1=151, y1=11, x2=251, y2=51),  # half outside
               dict(cls="dog", difficult=0, x1=11, y1=11, x2=31, y2=31)]
    ann, img = voc_folder(tmp_path, [("a", (200, 100), objects), ("b", (200, 100), objects[2:])])
    _, counts = convert_voc(ann, img, tmp_path / "out", "pets", VocOptions(classes=("cat",)))
    assert (counts.boxes, counts.clipped, counts.degenerate, counts.unlisted, counts.negatives) == (1, 1, 1, 2, 1)
    row = [float(v) for v in (tmp_path / "out" / "labels" / "a.txt").read_text().split()]
    assert row == pytest.approx([0, 175 / 200, 30 / 100, 50 / 200, 40 / 100])  # one line, the clipped box


def test_an_image_resized_since_its_annotation_keeps_its_boxes_and_one_turned_is_refused(tmp_path):
    objects = [dict(cls="dog", difficult=0, x1=11, y1=21, x2=51, y2=81)]
    ann, img = voc_folder(tmp_path, [("good", (100, 200), objects), ("resized", (100, 200), objects)])
    cv2.imwrite(str(img / "resized.jpg"), np.zeros((100, 50, 3), np.uint8))  # half the size, boxes in the XML's
    with pytest.warns(DataWarning, match=r"1 image\(s\) were resized after annotation, in proportion: their boxes "
                                         r"are scaled with them \(first: .*resized.xml says 100x200, resized.jpg is "
                                         r"50x100\)"):
        _, counts = convert_voc(ann, img, tmp_path / "out", "pets")
    assert counts.scaled == 1
    labels = [(tmp_path / "out" / "labels" / f"{name}.txt").read_text() for name in ("good", "resized")]
    assert labels[0] == labels[1]
    cv2.imwrite(str(img / "resized.jpg"), np.zeros((100, 200, 3), np.uint8))  # 200x100: turned a quarter
    with pytest.raises(DataError, match=r"resized.xml: says the image is 100x200, but .*resized.jpg is 200x100 as "
                                        r"read \(turned by a quarter: an EXIF orientation\?\); its boxes cannot be"):
        convert_voc(ann, img, tmp_path / "out2", "pets")


def test_classes_the_annotations_do_not_hold_are_named_with_those_they_do(tmp_path):
    objects = [dict(cls="dog", difficult=0, x1=11, y1=21, x2=51, y2=81),
               dict(cls="cat", difficult=0, x1=1, y1=1, x2=10, y2=10)]
    ann, img = voc_folder(tmp_path, [(f"im{i}", (100, 200), objects) for i in range(5)])
    with pytest.raises(DataError, match=r"--classes Dog: no object of these classes in .*ann \(names are "
                                        r"case-sensitive\); the objects there are of: cat \(5\), dog \(5\)"):
        convert_voc(ann, img, tmp_path / "typo", "pets", VocOptions(classes=("Dog",)))
    assert not (tmp_path / "typo").exists()
    with pytest.warns(UserWarning, match=r"--classes: no object of horse in .*ann, so no box of it to learn from; "
                                         r"the objects there are of: cat \(5\), dog \(5\)"):
        _, counts = convert_voc(ann, img, tmp_path / "some", "pets", VocOptions(classes=("dog", "horse")))
    assert (counts.boxes, counts.unlisted) == (5, 5)


@pytest.mark.parametrize("problem", ["same stem", "same image", "one image", "class twice"])
def test_a_dataset_that_would_mislabel_or_not_split_is_refused(tmp_path, problem):
    box = [dict(cls="cat", difficult=0, x1=11, y1=11, x2=31, y2=31)]
    ann, img = voc_folder(tmp_path, [("a", (50, 50), box)] + ([] if problem == "one image" else [("b", (50, 50), box)]))
    expected = {"same stem": r"b\.xml and .*a\.xml would share the label file a\.txt",
                "same image": r"b\.xml: describes .*a\.jpg, as .*a\.xml does",
                "one image": r"1 image\(s\): a train and a valid list need at least 2",
                "class twice": r"--classes names cat more than once"}[problem]
    if problem == "same stem":
        (img / "b.jpg").rename(img / "a.png")
        (ann / "b.xml").write_text((ann / "b.xml").read_text().replace("b.jpg", "a.png"))
    if problem == "same image":
        (ann / "b.xml").write_text((ann / "b.xml").read_text().replace("b.jpg", "a.jpg"))
    options = VocOptions(classes=("cat", "cat")) if problem == "class twice" else VocOptions()
    with pytest.raises(DataError, match=expected):
        convert_voc(ann, img, tmp_path / "out", "pets", options)


def test_bad_annotations_are_named(tmp_path):
    ann, img = voc_folder(tmp_path, [("a", (50, 50), [dict(cls="x", difficult=0, x1=30, y1=5, x2=20, y2=9)])])
    with pytest.raises(DataError, match=r"a\.xml: object 1 \(x\) has an empty bndbox"):
        convert_voc(ann, img, tmp_path / "out")
    (ann / "a.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match="a.xml: not valid XML"):
        convert_voc(ann, img, tmp_path / "out")
    (tmp_path / "linked").mkdir()
    ann, img = voc_folder(tmp_path / "linked", [("b", (50, 50), [])])
    (img / "b.jpg").unlink()
    (img / "b.jpg").symlink_to(tmp_path / "moved" / "b.jpg")  # the original moved away
    with pytest.raises(DataError, match=rf"b\.xml: its image {img}/b\.jpg is a link to {tmp_path}/moved/b\.jpg, "
                                        r"which does not exist"):
        convert_voc(ann, img, tmp_path / "out")



@pytest.mark.parametrize("field,value,expected", [
    ("<width>100</width>", "<width>abc</width>", r"a\.xml: size/width must be a number of pixels, got 'abc'"),
    ("<width>100</width>", "<width>nan</width>", r"a\.xml: size/width must be a number of pixels, got 'nan'"),
    ("<height>200</height>", "<height>inf</height>", r"a\.xml: size/height must be a number of pixels, got 'inf'"),
    ("<width>100</width>", "<width>-650</width>", r"a\.xml: size/width must be a number of pixels, got '-650'"),
    ("<xmin>11</xmin>", "<xmin>nan</xmin>", r"a\.xml: object 1 \(dog\) has a non-numeric bndbox"),
    ("<ymax>81</ymax>", "<ymax>-inf</ymax>", r"a\.xml: object 1 \(dog\) has a non-numeric bndbox"),
])
def test_sizes_and_boxes_that_are_not_finite_numbers_are_named(tmp_path, field, value, expected):
    ann, img = voc_folder(tmp_path, [("a", (100, 200), [dict(cls="dog", difficult=0, x1=11, y1=21, x2=51, y2=81)])])
    (ann / "a.xml").write_text((ann / "a.xml").read_text().replace(field, value))
    with pytest.raises(DataError, match=expected):
        convert_voc(ann, img, tmp_path / "out")
    assert not (tmp_path / "out" / "labels").exists()


def test_a_missing_annotations_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=r"absent: no such folder of annotations"):
        convert_voc(tmp_path / "absent", tmp_path, tmp_path / "out")


def test_raccoon_dataset_converts(tmp_path):
    root = shared_path("datasets", "raccoon")
    data, counts = convert_voc(root / "annotations", root / "images", tmp_path / "raccoon", "raccoon")
    config = parse_data_config(data)
    train, valid = DetectionDataset(config.train, 1), DetectionDataset(config.valid, 1)
    assert config.names == ["raccoon"] and len(train) + len(valid) == 200 and len(valid) == 40
    sample = train[(0, (416, 416), 0)]
    assert sample.image.shape == (3, 416, 416) and len(sample.targets) >= 1
    assert not any(p.is_file() and not p.is_symlink() for p in (tmp_path / "raccoon" / "images").iterdir())


def test_the_importer_writes_into_a_filled_out_only_with_exist_ok(tmp_path, capsys):
    from data.voc2darknet import main
    ann, img = voc_folder(tmp_path, [("im0", (100, 200), [dict(cls="dog", difficult=0, x1=1, y1=1, x2=50, y2=50)]),
                                     ("im1", (100, 200), [])])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    flags = ["--annotations", str(ann), "--images", str(img)]
    assert main(flags + ["--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'out'} already holds results; choose a new or empty "
                                       f"one, or pass --exist_ok to write into it (replacing the files it shares "
                                       f"with the output)\n")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
    assert main(flags + ["--out", str(tmp_path / "out"), "--exist_ok"]) == 0
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep" and (tmp_path / "out" / "voc.data").is_file()
    for inside in (img / "out", ann / "out"):  # the source folders are only read
        flag = "--images" if inside.parent == img else "--annotations"
        assert main(flags + ["--out", str(inside)]) == 1
        assert capsys.readouterr().err == (f"error: --out {inside} is inside {flag} {inside.parent}, which an import "
                                           f"only reads; write the dataset elsewhere\n")
        assert not inside.exists()

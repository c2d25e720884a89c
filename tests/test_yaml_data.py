"""YOLOv5/v8-style dataset YAML: the reader's subset (and named errors outside it), and datasets that load to
the same images, labels and mAP as the equivalent Darknet .data."""
import textwrap

import numpy as np
import pytest

from tests.conftest import evaluate_on, random_tiny_model
from utils.data.config import DataError, DataWarning, parse_data_config
from utils.data.dataset import DetectionDataset
from utils.data.synthetic import write_dataset
from utils.data.yaml_config import YamlError, parse_yaml


def write(tmp_path, text, name="data.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("yaml")
    return write_dataset(root / "set", train=4, valid=8, size=96, seed=5)


def test_the_subset_reads_lists_mappings_quotes_comments_and_blocks(tmp_path):
    path = write(tmp_path, """\
        # a YOLOv5 dataset
        ---
        path: ../d  # root
        train: [images/a, 'images/b c',   # a list that goes on
                "images/d\\"e"]
        val: 'x # not a comment'
        test:
        download: |
          import os  # kept as text, never used
          print("it's")
        names:
          0: person
          1: 'bi#cycle'
        other:
          - one
          - "two"
        plain: [men's, "x, y"]  # an apostrophe inside a plain value opens nothing
        """)
    values = {key: value.data for key, value in parse_yaml(path).items()}
    assert [item.data for item in values["train"]] == ["images/a", "images/b c", 'images/d"e']
    assert values["path"] == "../d" and values["val"] == "x # not a comment" and values["test"] is None
    assert values["download"].startswith("import os")
    assert {k: v.data for k, v in values["names"].items()} == {"0": "person", "1": "bi#cycle"}
    assert [item.data for item in values["other"]] == ["one", "two"]
    assert [item.data for item in values["plain"]] == ["men's", "x, y"]


@pytest.mark.parametrize("text,problem", [
    ("train: a\n\tval: b\n", r":2: a tab indents this line"),
    ("train: &x a\n", r":1: anchors \(&\) are outside the YAML subset"),
    ("names: {0: a}\n", r":1: inline mappings \(\{\.\.\.\}\) are outside"),
    ("train: 'a\n", r":1: cannot read the quoted value"),
    ("names: [a, b\nval: c\n", r":1: the inline list opened here has no closing"),
    ("names: [a, [b]]\n", r":1: nested lists or mappings inside an inline list"),
    ("names:\n  0:\n    x: y\n", r":3: deeper nesting is outside"),
    ("names:\n  - a\n  b: c\n", r":3: expected a list item"),
    ("train: a\ntrain: b\n", r":2: key 'train' repeats line 1"),
    ("train: a\n  val: b\n", r":2: unexpected indentation"),
    ("just text\n", r":1: expected 'key: value'"),
    ('train: "a\\q"\n', r":1: unknown escape"),
])
def test_yaml_outside_the_subset_is_named_with_file_and_line(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(YamlError, match=rf"data\.yaml{problem}"):
        parse_yaml(path)


def test_folder_sources_load_the_same_images_and_labels_as_the_data_file(shapes, tmp_path):
    root = shapes.parent
    path = write(tmp_path, f"""\
        path: {root}
        train: images/train
        val: images/valid
        nc: 4
        names: [circle, rectangle, triangle, cross]
        """)
    darknet, yolo = parse_data_config(shapes), parse_data_config(path)
    assert (yolo.classes, yolo.names, yolo.test) == (darknet.classes, darknet.names, None)
    for split in ("train", "valid"):
        ours, theirs = DetectionDataset(getattr(yolo, split), 4), DetectionDataset(getattr(darknet, split), 4)
        assert [p.resolve() for p in ours.images] == [p.resolve() for p in theirs.images]
        for a, b in zip(ours.labels, theirs.labels):
            np.testing.assert_array_equal(a, b)


def test_list_files_lists_of_sources_mapped_names_and_relative_roots(shapes, tmp_path):
    root = shapes.parent
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "set").symlink_to(root)
    path = write(tmp_path / "cfg", """\
        train: [set/images/train, set/valid.txt]
        val: ../set/valid.txt
        test: set/images/valid
        names:
          2: triangle
          0: circle
          3: cross
          1: rectangle
        """)
    config = parse_data_config(path)
    assert config.names == ["circle", "rectangle", "triangle", "cross"]
    assert len(DetectionDataset(config.train, 4)) == 4 + 8  # the folder, then the list
    assert len(DetectionDataset(config.valid, 4)) == 8  # '../set' did not exist beside the YAML: 'set' did
    assert len(DetectionDataset(config.test, 4)) == 8
    path.write_text(path.read_text().replace("test: set/images/valid", "test: ../test/images"))
    assert parse_data_config(path).test is None  # a split an export names but left out is no error


def test_a_relative_root_in_both_places_warns_and_a_missing_source_is_named_absolutely(shapes, tmp_path,
                                                                                       monkeypatch):
    (tmp_path / "export" / "images").mkdir(parents=True)
    path = write(tmp_path / "export", """\
        path: .
        train: images/train
        val: images/valid
        names: [circle, rectangle, triangle, cross]
        """)
    for folder in ("images/train", "images/valid"):
        (tmp_path / "export" / folder).symlink_to(shapes.parent / folder)
    monkeypatch.chdir(tmp_path / "export")
    assert len(DetectionDataset(parse_data_config(path).train, 4)) == 4  # '.' is the YAML's folder here
    monkeypatch.chdir(tmp_path)
    with pytest.warns(DataWarning, match=r"data\.yaml:1: path: \. is read from the working directory \(.*\), "
                                         r"not from beside the \.yaml file"), \
            pytest.raises(DataError, match=rf"data\.yaml:2: train: images/train does not exist \(looked for "
                                           rf"{tmp_path}/images/train\)"):
        parse_data_config(path)


@pytest.mark.parametrize("body,problem", [
    ("val: v\nnames: [a]\n", r"missing 'train:'"),
    ("train: t\nval: v\n", r"missing 'names:'"),
    ("train: t\nval: v\nnc: 3\nnames: [a, b]\n", r":3: nc=3 but names lists 2 classes"),
    ("train: t\nval: v\nnc: two\n", r":3: nc must be a positive integer"),
    ("train: t\nval: v\nnames:\n  0: a\n  2: b\n", r":4: names: the class indices must run 0 \.\. 1 without gaps"),
    ("train: t\nval: nowhere\nnames: [a]\n", r":2: val: nowhere does not exist"),
    ("train: t\nval: v\nnames: [a, '']\n", r":3: names: every class needs a non-empty name"),
])
def test_dataset_yaml_errors_name_the_key_and_line(tmp_path, body, problem):
    (tmp_path / "t").mkdir()
    (tmp_path / "v").mkdir()
    path = write(tmp_path, body)
    with pytest.raises(YamlError, match=problem):
        parse_data_config(path)


def test_a_name_given_twice_warns(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.warns(DataWarning, match=r":3: names: 'a' names classes 0 and 2; two classes of one name cannot be "
                                         r"told apart in the detections"):
        assert parse_data_config(write(tmp_path, "train: t\nval: t\nnames: [a, b, a]\n")).names == ["a", "b", "a"]


def test_only_nc_gives_numbered_names_and_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "t").mkdir()
    config = parse_data_config(write(tmp_path, "train: t\nval: t\nnc: 2\n", name="d.yml"))
    assert config.names == ["class_0", "class_1"]
    with pytest.raises(DataError, match="t: the folder holds no images"):
        DetectionDataset(config.train, 2)


def test_map_on_the_yaml_equals_map_on_the_data_file(shapes, tmp_path):
    path = write(tmp_path, f"path: {shapes.parent}\ntrain: images/train\nval: images/valid\n"
                           "names: [circle, rectangle, triangle, cross]\n")
    model = random_tiny_model(4)
    records, darknet = evaluate_on(model, shapes)
    yolo_records, yolo = evaluate_on(model, path)
    assert darknet.map50 > 0.01  # a random model that finds something, so equality means something
    assert (yolo.map50, yolo.map) == (darknet.map50, darknet.map)
    for a, b in zip(records, yolo_records):
        np.testing.assert_array_equal(a.detections, b.detections)
        np.testing.assert_array_equal(a.truth, b.truth)

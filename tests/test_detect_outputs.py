"""detect.py never writes over its inputs or earlier results, and same-named inputs get outputs of their own."""
import json
import os

import cv2
import numpy as np
import pytest

import detect
from tests.conftest import random_tiny_model
from utils.darknet.checkpoint import save_model

pytestmark = pytest.mark.filterwarnings("ignore::utils.darknet.cfg.CfgWarning")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pth"
    save_model(random_tiny_model(4, seed=0), path, ["circle", "rectangle", "triangle", "cross"])
    return path


def write_image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    return path


def run(weights, source, output, *flags):
    return detect.main(["--source", str(source), "--weights_path", str(weights), "--img_size", "64",
                        "--conf_thres", "0.28", "--output", str(output), *flags])


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def at(text, folder):
    return text.replace("{P}", str(folder))


@pytest.fixture
def photos(tmp_path):
    """P/a.jpg and P/sub/a.jpg: a folder whose outputs, written into itself, would replace its images."""
    write_image(tmp_path / "P" / "a.jpg", 1)
    write_image(tmp_path / "P" / "sub" / "a.jpg", 2)
    return tmp_path / "P"


@pytest.mark.parametrize("case", [
    ("{P}", "{P}", ["--recursive"], "is the input {P}"),
    ("{P}", "{P}/sub", ["--recursive"], "is inside the input folder {P}"),
    ("{P}", "{P}/new", [], "is inside the input folder {P}"),
    ("{P}/*/*.jpg", "{P}", [], "is the input {P}"),
    ("{P}/sub/*.jpg", "{P}", [], "contains the input {P}/sub"),
    ("{P}/sub/a.jpg", "{P}", [], "contains the input {P}/sub/a.jpg"),
    ("{P}/../list.txt", "{P}/out", [], "is inside the input folder {P}"),
    ("{P}", "{P}/../link", [], "is the input {P}"),
])
def test_an_output_on_in_or_around_an_input_is_refused(weights, photos, capsys, case):
    source, output, flags, problem = case
    (photos.parent / "list.txt").write_text(f"{photos}\n")
    (photos.parent / "link").symlink_to(photos)  # the same folder by another name
    before = snapshot(photos)
    assert run(weights, at(source, photos), at(output, photos), *flags) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and at(problem, photos) in errors[0] and "choose an --output outside" in errors[0]
    assert snapshot(photos) == before


def test_an_output_holding_the_model_files_is_refused(weights, photos, tmp_path, capsys):
    out = tmp_path / "out"
    names = out / "labels" / "a.txt"  # where a.jpg's labels would go
    names.parent.mkdir(parents=True)
    names.write_text("circle\nrectangle\ntriangle\ncross\n")
    assert run(weights, photos / "a.jpg", out, "--class_path", str(names), "--exist_ok") == 1
    assert f"contains the input {names}" in capsys.readouterr().err
    assert names.read_text() == "circle\nrectangle\ntriangle\ncross\n"


def test_without_output_each_run_claims_the_next_folder_and_a_failed_one_gives_it_back(weights, photos, tmp_path,
                                                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--source", str(photos), "--weights_path", str(weights), "--img_size", "64"]
    assert detect.main(["--source", str(tmp_path), "--recursive", *flags[2:]]) == 1  # runs/ would be an input
    assert "the default output folder runs/detect/expN would lie inside the input folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert detect.main([*flags, "--classes", "7"]) == 1  # refused after the folder was claimed
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "a.jpg").write_text("not an image")
    capsys.readouterr()
    assert detect.main(["--source", str(tmp_path / "unreadable"), *flags[2:]]) == 1  # nothing could be read
    assert "images/frames ->" not in capsys.readouterr().out  # no summary naming the folder that goes
    assert list((tmp_path / "runs" / "detect").iterdir()) == []
    for number in (1, 2):
        assert detect.main(flags) == 0
        assert (tmp_path / "runs" / "detect" / f"exp{number}" / "detections.json").is_file()


def test_an_output_holding_results_needs_exist_ok(weights, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(weights, photos, out) == 0
    first = snapshot(out)
    assert run(weights, photos, out) == 1
    assert "already holds results" in capsys.readouterr().err and snapshot(out) == first
    assert run(weights, photos, out, "--exist_ok") == 0


def test_an_output_that_is_a_file_is_refused(weights, photos, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert run(weights, photos, tmp_path / "file") == 1
    assert "is a file, expected a folder" in capsys.readouterr().err and (tmp_path / "file").read_text() == "mine"


def test_same_named_images_in_one_folder_get_distinct_outputs(weights, tmp_path):
    write_image(tmp_path / "P" / "a.jpg", 1)
    write_image(tmp_path / "P" / "a.png", 2)
    assert run(weights, tmp_path / "P", tmp_path / "out") == 0
    records = json.loads((tmp_path / "out" / "detections.json").read_text())["images"]
    outputs = {os.path.basename(r["image"]): (r["annotated"], r["labels"]) for r in records}
    assert outputs == {"a.jpg": ("a.jpg", "labels/a.txt"), "a.png": ("a_2.jpg", "labels/a_2.txt")}
    for annotated, labels in outputs.values():
        assert (tmp_path / "out" / annotated).is_file() and (tmp_path / "out" / labels).is_file()
    first, second = (cv2.imread(str(tmp_path / "out" / name)) for name in ("a.jpg", "a_2.jpg"))
    assert not np.array_equal(first, second)  # each image's own annotation, neither written over the other


def test_same_names_in_two_listed_folders_get_distinct_outputs(weights, tmp_path):
    write_image(tmp_path / "day" / "x.jpg", 1)
    write_image(tmp_path / "night" / "x.jpg", 2)
    (tmp_path / "sources.txt").write_text("day\nnight\n")  # relative to the list's folder
    assert run(weights, tmp_path / "sources.txt", tmp_path / "out") == 0
    records = json.loads((tmp_path / "out" / "detections.json").read_text())["images"]
    assert [(r["annotated"], r["labels"]) for r in records] == [("day/x.jpg", "labels/day/x.txt"),
                                                               ("night/x.jpg", "labels/night/x.txt")]

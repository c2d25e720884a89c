"""test.py end to end: its mAP equals pycocotools on the JSON it saves; PR curves; clear errors."""
import contextlib
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from models import Darknet
from tests.conftest import REPO, randomize, stretched_dataset
from utils.darknet.cfg import read_cfg
from utils.darknet.checkpoint import save_checkpoint
from utils.darknet.cfg_edit import with_classes
from utils.data.synthetic import write_dataset

pytestmark = pytest.mark.e2e  # every test here runs a command line as a subprocess


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_dataset(root / "set", train=1, valid=6, size=96, seed=5)
    cfg = root / "tiny.cfg"
    cfg.write_text(with_classes(read_cfg(REPO / "cfg" / "yolov3-tiny.cfg"), 4).text)
    model = randomize(Darknet(cfg), seed=3, gain=0.9)
    model.save_darknet_weights(root / "tiny.weights")
    return root, data, cfg


def test_test_py_map_equals_pycocotools_on_its_own_json(random_model):
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    from pycocotools.coco import COCO
    root, data, cfg = random_model
    result = subprocess.run([sys.executable, "test.py", "--model_def", str(cfg), "--weights_path",
                             str(root / "tiny.weights"), "--data_config", str(data), "--img_size", "96",
                             "--n_cpu", "0", "--save_json", str(root / "out" / "dets.json"),
                             "--pr_curves", str(root / "out" / "pr.png")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ours = [float(v) for v in re.search(r"mAP@0.5 = ([\d.]+)\s+mAP@0.5:0.95 = ([\d.]+)", result.stdout).groups()]
    assert "COCO 101-point AP" in result.stdout and "letterboxed to 96" in result.stdout
    network, nms, total = map(float, re.search(r"speed: ([\d.]+) ms network \+ ([\d.]+) ms NMS = ([\d.]+) ms per "
                                                r"image \(96x96, batch 8, cpu;", result.stdout).groups())
    assert min(network, nms) >= 0 and total == pytest.approx(network + nms, abs=0.11)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(root / "out" / "dets_gt.json"))
        evaluator = cocoeval.COCOeval(truth, truth.loadRes(str(root / "out" / "dets.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert ours == pytest.approx([evaluator.stats[1], evaluator.stats[0]], abs=1e-3)
    assert (root / "out" / "pr.png").stat().st_size > 1000


def test_a_training_checkpoint_is_evaluated_at_the_size_it_was_trained_at(random_model, tmp_path):
    root, data, cfg = random_model
    model = Darknet(cfg)
    model.load_darknet_weights(root / "tiny.weights")
    save_checkpoint(tmp_path / "trained.pth", {"model": model.state_dict(), "cfg_text": model.cfg_text,
                                               "epoch": 0, "options": {"img_size": 64}})
    base = [sys.executable, "test.py", "--weights_path", str(tmp_path / "trained.pth"), "--data_config", str(data),
            "--n_cpu", "0"]
    runs = {name: subprocess.run(base + ["--save_json", str(tmp_path / f"{name}.json"), *flags], cwd=REPO,
                                 capture_output=True, text=True)
            for name, flags in (("own", []), ("at64", ["--img_size", "64"]), ("at96", ["--img_size", "96"]))}
    assert all(run.returncode == 0 for run in runs.values()), [run.stderr for run in runs.values()]
    assert "letterboxed to 64" in runs["own"].stdout and "letterboxed to 96" in runs["at96"].stdout
    detections = {name: (tmp_path / f"{name}.json").read_text() for name in runs}
    assert detections["own"] == detections["at64"] != detections["at96"]  # the loader ran at 64


def test_rect_batches_score_the_list_in_its_order_with_less_padding(random_model, tmp_path):
    root, _, cfg = random_model
    config = stretched_dataset(tmp_path / "set", [(96, 96), (96, 48), (48, 96), (96, 72), (64, 96), (96, 64)])
    base = [sys.executable, "test.py", "--model_def", str(cfg), "--weights_path", str(root / "tiny.weights"),
            "--data_config", str(config.path), "--img_size", "96", "--batch_size", "2", "--n_cpu", "0"]
    runs = {name: subprocess.run(base + ["--save_json", str(tmp_path / f"{name}.json"), *flags], cwd=REPO,
                                 capture_output=True, text=True)
            for name, flags in (("square", []), ("rect", ["--rect"]))}
    assert all(run.returncode == 0 for run in runs.values()), [run.stderr for run in runs.values()]
    assert "letterboxed to rectangular batches, long side 96" in runs["rect"].stdout
    assert "(rectangular batches, long side 96, batch 2, cpu;" in runs["rect"].stdout
    # the same images in the same order with the same truth; other detections, as two of the three batches
    # ran at 64x96 and 96x64
    truth = {name: json.loads((tmp_path / f"{name}_gt.json").read_text()) for name in runs}
    assert truth["rect"]["images"] == truth["square"]["images"]
    assert [(box["image_id"], box["category_id"]) for box in truth["rect"]["annotations"]] == \
        [(box["image_id"], box["category_id"]) for box in truth["square"]["annotations"]]
    np.testing.assert_allclose([box["bbox"] for box in truth["rect"]["annotations"]],  # back from other paddings
                               [box["bbox"] for box in truth["square"]["annotations"]], atol=1e-3)
    detections = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in runs}
    assert detections["rect"] and detections["rect"] != detections["square"]


def test_class_count_mismatch_is_refused(random_model, tmp_path):
    root, data, _ = random_model
    cfg = tmp_path / "eighty.cfg"
    cfg.write_text((REPO / "cfg" / "yolov3-tiny.cfg").read_text())
    Darknet(cfg).save_darknet_weights(tmp_path / "80.weights")
    result = subprocess.run([sys.executable, "test.py", "--model_def", str(cfg), "--weights_path",
                             str(tmp_path / "80.weights"), "--data_config", str(data)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "4 classes, but the model predicts 80" in result.stderr


def test_labels_never_found_stop_test_py_and_some_missing_are_a_warning(random_model, tmp_path):
    root, _, cfg = random_model
    data = write_dataset(tmp_path / "set", train=1, valid=4, size=96, seed=5)
    labels = sorted((tmp_path / "set" / "labels" / "valid").iterdir())
    command = [sys.executable, "test.py", "--model_def", str(cfg), "--weights_path", str(root / "tiny.weights"),
               "--data_config", str(data), "--img_size", "96", "--n_cpu", "0"]
    for label in labels[:3]:
        label.unlink()
    warned = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert warned.returncode == 0 and "warning: " in warned.stderr and "3 of its 4 images (75 %) have no label " \
        "file, so every detection on them would count as a false positive" in warned.stderr
    labels[3].unlink()
    stopped = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    (error,) = [line for line in stopped.stderr.splitlines() if not line.startswith("warning: ")]
    assert stopped.returncode == 1 and "mAP@0.5" not in stopped.stdout
    assert error.startswith("error: ") and "no label file was found for any of its 4 images, so every" in error


def test_ground_truth_is_clipped_to_its_image_and_skipped_images_are_counted(tmp_path, capsys):
    from tests.conftest import evaluate_on, random_tiny_model
    root = tmp_path / "set"
    write_dataset(root, train=1, valid=2, size=64)
    (root / "labels" / "valid" / "00000.txt").write_text("0 0.95 0.5 0.5 0.5\n")  # runs 0.15 past the right edge
    (root / "images" / "valid" / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        records, _ = evaluate_on(random_tiny_model(4, seed=0).eval(), root / "shapes.data", img_size=64)
    (record,) = records
    assert record.truth[0, 1:].tolist() == pytest.approx([0.7 * 64, 0.25 * 64, 64, 0.75 * 64])
    assert "evaluation: skipped 1 unreadable image(s), e.g. " in capsys.readouterr().out


def test_the_default_data_config_when_the_demo_was_never_generated_says_how_to_make_it(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "test.py"), "--weights_path", "any.pth"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: --data_config data/demo/shapes.data (the default, the demo's) does not exist yet: train.py generates "
        "it on first use, as does: python -m utils.data.synthetic --out data/demo; or name your own dataset with "
        "--data_config"]

"""detect.py: boxes map back exactly through the letterbox, odd images are handled, inputs are never touched."""
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from models import Darknet
from tests.conftest import REPO, randomize
from utils.darknet.checkpoint import save_model
from utils.inference.load import detect, preprocess
from utils.inference.nms import NmsFilter


class FixedOutput(torch.nn.Module):
    """Stands in for a model: one box at a known place in network-input pixels."""

    def __init__(self, box_cxcywh):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.box = torch.tensor(box_cxcywh)

    def forward(self, x):
        row = torch.cat([self.box, torch.tensor([0.9, 0.8, 0.1])])
        return row.expand(x.shape[0], 1, 7)


@pytest.mark.parametrize("shape,letterbox", [((300, 600), True), ((600, 300), True), ((300, 600), False)])
def test_boxes_map_back_to_original_pixels_exactly(shape, letterbox):
    image = np.zeros((*shape, 3), np.uint8)
    batch, boxes = preprocess([image], 416, letterbox)
    # the original box (60, 30)-(180, 150), carried into network pixels by the same letterbox
    net = boxes[0].to_network(torch.tensor([[60.0, 30, 180, 150]]))[0]
    model = FixedOutput([(net[0] + net[2]) / 2, (net[1] + net[3]) / 2, net[2] - net[0], net[3] - net[1]])
    dets = detect(model, batch, boxes, [shape], NmsFilter(conf_thres=0.1, iou_thres=0.5))[0]
    torch.testing.assert_close(dets[0, :4], torch.tensor([60.0, 30, 180, 150]), atol=1e-3, rtol=0)
    assert dets[0, 5].item() == 0 and dets[0, 4].item() == pytest.approx(0.72)


def test_a_box_wholly_in_the_letterbox_padding_is_dropped():
    batch, boxes = preprocess([np.zeros((300, 600, 3), np.uint8)], 416)  # padded above and below: 104 px each
    for centre_y, found in ((50.0, 0), (208.0, 1)):
        model = FixedOutput([208.0, centre_y, 40.0, 20.0])
        assert len(detect(model, batch, boxes, [(300, 600)], NmsFilter(conf_thres=0.1))[0]) == found


def test_preprocess_gives_rgb_in_0_1_in_channels_last_memory():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    batch, _ = preprocess(images, 64)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)  # what the prepared model runs in: no copy
    expected = np.stack([image[:, :, ::-1].transpose(2, 0, 1) for image in images]).astype(np.float32) / 255
    np.testing.assert_array_equal(batch.numpy(), expected)


@pytest.fixture
def model_files(tmp_path):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text((REPO / "cfg" / "yolov3-tiny.cfg").read_text())
    model = randomize(Darknet(cfg), seed=2, gain=0.9)
    model.save_darknet_weights(tmp_path / "tiny.weights")
    names = tmp_path / "coco.names"
    names.write_text("\n".join(f"class{i}" for i in range(80)))
    return cfg, tmp_path / "tiny.weights", names


@pytest.mark.e2e
def test_detect_end_to_end_on_a_folder_of_odd_images(model_files, tmp_path):
    cfg, weights, names = model_files
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "colour.jpg"), rng.integers(0, 255, (120, 200, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "grey.png"), rng.integers(0, 255, (90, 90), dtype=np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 255, (64, 80, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "sub" / "deep16.png"), rng.integers(0, 65535, (70, 50, 3), dtype=np.uint16))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "detect.py", "--image_folder", str(folder), "--recursive",
                             "--model_def", str(cfg), "--weights_path", str(weights), "--class_path", str(names),
                             "--conf_thres", "0.05", "--img_size", "128", "--output", str(out)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "skipping" in result.stderr and "notes.txt" in result.stderr and "broken.jpg" in result.stderr
    for name in ("colour", "grey", "rgba", "sub/deep16"):
        annotated = cv2.imread(str(out / f"{name}.jpg"))
        assert annotated is not None and annotated.shape[2] == 3
        assert (out / "labels" / f"{name}.txt").is_file()
    runs = json.loads((out / "detections.json").read_text())
    assert len(runs["images"]) == 4 and runs["skipped"] == [str(folder / "broken.jpg")]
    for record in runs["images"]:
        for det in record["detections"]:
            x1, y1, x2, y2 = det["box_xyxy"]
            assert 0 <= x1 <= x2 <= record["width"] and 0 <= y1 <= y2 <= record["height"]
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


@pytest.mark.e2e
def test_detect_half_finds_the_same_boxes_within_a_pixel(model_files, tmp_path):
    cfg, weights, names = model_files
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (100, 140, 3), dtype=np.uint8))
    best = []
    for flags in ([], ["--half"]):
        out = tmp_path / f"out{len(flags)}"
        result = subprocess.run([sys.executable, "detect.py", "--source", str(folder), "--model_def", str(cfg),
                                 "--weights_path", str(weights), "--class_path", str(names), "--conf_thres", "0.05",
                                 "--img_size", "128", "--output", str(out), *flags],
                                cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        records = json.loads((out / "detections.json").read_text())["images"]
        best.append([r["detections"][0]["box_xyxy"] + [r["detections"][0]["score"]] for r in records])
    np.testing.assert_allclose(best[1], best[0], atol=1.0)


@pytest.mark.e2e
def test_detect_on_a_video_writes_an_annotated_video_and_labels_per_frame(model_files, tmp_path):
    cfg, weights, names = model_files
    clip = tmp_path / "clip.avi"
    video = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    rng = np.random.default_rng(1)
    for _ in range(4):
        video.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    video.release()
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "detect.py", "--source", str(clip), "--model_def", str(cfg),
                             "--weights_path", str(weights), "--class_path", str(names), "--conf_thres", "0.05",
                             "--img_size", "64", "--batch_size", "3", "--output", str(out)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    annotated = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = 0
    while annotated.read()[0]:
        frames += 1
    assert frames == 4 and annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(5)
    assert sorted(p.name for p in (out / "labels" / "clip").iterdir()) == [f"{i:06d}.txt" for i in range(4)]
    records = json.loads((out / "detections.json").read_text())["images"]
    assert [r["frame"] for r in records] == [0, 1, 2, 3] and {r["width"] for r in records} == {96}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.e2e
def test_detect_refuses_to_write_into_the_input_folder(model_files, tmp_path):
    cfg, weights, names = model_files
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    result = subprocess.run([sys.executable, "detect.py", "--image_folder", str(tmp_path / "a.jpg"),
                             "--model_def", str(cfg), "--weights_path", str(weights), "--output", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "contains the input" in result.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no folder can be made")
def test_an_output_folder_that_cannot_be_made_fails_before_the_model_is_read(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "junk.pth").write_text("not a model")
    result = subprocess.run([sys.executable, "detect.py", "--source", str(tmp_path / "a.jpg"), "--weights_path",
                             str(tmp_path / "junk.pth"), "--output", "/proc/no_such_run"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: --output /proc/no_such_run: cannot make the folder: No such file or "
                                     "directory")


@pytest.mark.e2e
def test_detect_without_a_model_says_how_to_make_one(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "detect.py")], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "no trained model found" in result.stderr and "bash scripts/demo.sh" in result.stderr


@pytest.mark.e2e
def test_detect_without_weights_path_names_the_newest_model_it_took(tmp_path):
    model = Darknet(REPO / "cfg" / "yolov3-tiny.cfg")
    for run, age in (("old", 100), ("new", 0)):
        (tmp_path / "runs" / "train" / run).mkdir(parents=True)
        save_model(model, tmp_path / "runs" / "train" / run / "best.pth", None)
        os.utime(tmp_path / "runs" / "train" / run / "best.pth", (time.time() - age, time.time() - age))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    result = subprocess.run([sys.executable, str(REPO / "detect.py"), "--source", "a.jpg", "--img_size", "64"],
                            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == ("model: runs/train/new/best.pth, the newest runs/*/*/best.pth "
                                             "(--weights_path names another)")

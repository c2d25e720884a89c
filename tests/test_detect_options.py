"""detect.py's detection options (--classes, --agnostic_nms, --max_det, --save_crop, --nosave, drawing flags,
--view), the live-stream path through the whole pipeline, and a clean stop on Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

import detect
from tests.conftest import REPO, random_tiny_model
from utils.darknet.checkpoint import save_model
from utils.inference.load import detect as detect_boxes, load_model, preprocess
from utils.inference.nms import NmsFilter
from utils.inference.pipeline import DetectSettings, detect_inputs
from utils.inference.sources import Input
from utils.inference.visualize import DrawStyle, draw_detections
from utils.inference.writer import DetectionWriter

NAMES = ["circle", "rectangle", "triangle", "cross"]
pytestmark = pytest.mark.filterwarnings("ignore::utils.darknet.cfg.CfgWarning")

CONF = "0.28"  # the random model below keeps ~18 boxes per noise image here, of three classes, some overlapping


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random 4-class yolov3-tiny as a .pth with names, and three noise images of different sizes."""
    root = tmp_path_factory.mktemp("options")
    save_model(random_tiny_model(4, seed=0), root / "model.pth", NAMES)
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(96, 128), (128, 96), (80, 80)]):
        (root / "images").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    return root


def run_detect(setup, out, *flags):
    """detect.py in this process (quicker than a subprocess per option): the exit code and detections.json."""
    code = detect.main(["--source", str(setup / "images"), "--weights_path", str(setup / "model.pth"),
                        "--img_size", "128", "--conf_thres", CONF, "--output", str(out), *map(str, flags)])
    return code, json.loads((out / "detections.json").read_text()) if code == 0 else None


@pytest.fixture(scope="module")
def baseline(setup, tmp_path_factory):
    code, result = run_detect(setup, tmp_path_factory.mktemp("baseline") / "out")
    assert code == 0
    return result


def per_image(result):
    return {r["image"]: r["detections"] for r in result["images"]}


def boxes_of(detections):
    return torch.tensor([d["box_xyxy"] for d in detections]).reshape(-1, 4)


@pytest.mark.e2e
def test_classes_keeps_exactly_the_unfiltered_detections_of_those_classes(setup, baseline, tmp_path):
    classes = {d["class"] for dets in per_image(baseline).values() for d in dets}
    assert {0, 2} & classes and classes - {0, 2}  # the filter has something to keep and something to drop
    code, result = run_detect(setup, tmp_path / "out", "--classes", 0, 2)
    assert code == 0 and result["classes"] == [0, 2]
    for image, dets in per_image(baseline).items():
        assert per_image(result)[image] == [d for d in dets if d["class"] in (0, 2)]


@pytest.mark.e2e
def test_agnostic_nms_suppresses_across_classes(setup, baseline, tmp_path):
    """detect.py's boxes are NMS's across classes (boxes clipped to the image after NMS may overlap more, so
    the JSON is compared with the library's agnostic result rather than checked for overlaps)."""
    code, result = run_detect(setup, tmp_path / "out", "--agnostic_nms")
    assert code == 0 and result["agnostic_nms"] is True
    loaded = load_model(setup / "model.pth")
    for record in result["images"]:
        image = cv2.imread(record["image"])
        batch, letterboxes = preprocess([image], 128)
        rule = NmsFilter(conf_thres=float(CONF), agnostic=True)
        expected = detect_boxes(loaded.model, batch, letterboxes, [image.shape[:2]], rule)[0]
        torch.testing.assert_close(boxes_of(record["detections"]), expected[:, :4], atol=0.01, rtol=0)
        assert len(record["detections"]) < len(per_image(baseline)[record["image"]])


@pytest.mark.e2e
def test_max_det_keeps_the_best(setup, baseline, tmp_path):
    code, result = run_detect(setup, tmp_path / "out", "--max_det", 3)
    assert code == 0
    for image, dets in per_image(baseline).items():
        assert len(dets) > 3 and per_image(result)[image] == dets[:3]


@pytest.mark.e2e
def test_save_crop_writes_each_detection_in_its_class_folder(setup, baseline, tmp_path):
    code, result = run_detect(setup, tmp_path / "out", "--save_crop")
    assert code == 0
    crops = sorted((tmp_path / "out" / "crops").rglob("*.jpg"))
    detections = [d for r in result["images"] for d in r["detections"]]
    assert len(crops) == len(detections) > 0
    source = {r["image"]: cv2.imread(r["image"]) for r in result["images"]}
    for record in result["images"]:
        for k, det in enumerate(record["detections"]):
            name = os.path.splitext(os.path.basename(record["image"]))[0]
            assert det["crop"] == f"crops/{det['name']}/{name}_{k}.jpg"
            crop = cv2.imread(str(tmp_path / "out" / det["crop"]))
            x1, y1, x2, y2 = det["box_xyxy"]
            height, width = source[record["image"]].shape[:2]
            expected = (min(height, np.ceil(y2)) - max(0, np.floor(y1)), min(width, np.ceil(x2)) - max(0, np.floor(x1)))
            # the JSON's boxes are rounded to 2 decimals, so a pixel edge may fall either way
            assert abs(crop.shape[0] - expected[0]) <= 1 and abs(crop.shape[1] - expected[1]) <= 1


@pytest.mark.e2e
def test_nosave_writes_labels_and_json_only(setup, baseline, tmp_path):
    code, result = run_detect(setup, tmp_path / "out", "--nosave")
    assert code == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["detections.json", "labels/im0.txt", "labels/im1.txt", "labels/im2.txt"]
    assert [r["detections"] for r in result["images"]] == [r["detections"] for r in baseline["images"]]
    assert all("annotated" not in r for r in result["images"])


@pytest.mark.e2e
def test_drawing_flags_reach_the_annotated_images(setup, tmp_path):
    runs = {}
    for flags in ([], ["--hide_labels"], ["--hide_conf"], ["--line_thickness", 4]):
        out = tmp_path / "-".join(map(str, flags or ["plain"]))
        assert run_detect(setup, out, *flags)[0] == 0
        runs[tuple(flags)] = cv2.imread(str(out / "im0.jpg")).astype(int)
    different = [not np.array_equal(runs[()], image) for flags, image in runs.items() if flags]
    assert all(different)


def box_image(style, score=0.87):
    image = np.zeros((200, 300, 3), np.uint8)
    return draw_detections(image, np.array([[100, 80, 200, 160, score, 1]]), NAMES, style)


def test_line_thickness_is_the_width_of_the_box_lines():
    widths = []
    for thickness in (1, 3, 7):
        row = box_image(DrawStyle(line_thickness=thickness, hide_labels=True))[120, :150].max(1)
        widths.append(int((row > 127).sum()))  # solid pixels; anti-aliasing adds a faint one each side
        assert thickness <= widths[-1] <= thickness + 2  # OpenCV rounds thick anti-aliased lines up
    assert widths == sorted(set(widths))


def test_hide_labels_and_hide_conf():
    def label_width(image):
        above = image[:78].any(2)  # the label sits above the box's top edge (y = 80)
        columns = np.flatnonzero(above.any(0))
        return 0 if len(columns) == 0 else columns[-1] - columns[0] + 1
    full, no_conf = label_width(box_image(DrawStyle())), label_width(box_image(DrawStyle(hide_conf=True)))
    assert full > no_conf > 0 and label_width(box_image(DrawStyle(hide_labels=True))) == 0


@pytest.mark.e2e
def test_view_without_a_display_says_so_in_one_line_and_detects(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    code, result = run_detect(setup, tmp_path / "out", "--view")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("--view")]
    assert code == 0 and len(result["images"]) == 3
    assert notes == ["--view: no display (DISPLAY and WAYLAND_DISPLAY are unset); detecting without showing frames"]


@pytest.mark.e2e
def test_the_viewer_shows_every_frame_and_a_stop_key_ends_the_run_cleanly(setup, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append((title, image.shape)))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q") if len(shown) == 2 else -1)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    monkeypatch.setenv("DISPLAY", ":0")
    code, result = run_detect(setup, tmp_path / "out", "--view", "--nosave")
    assert code == 0 and result["stopped"] == "a stop key in the viewer"
    assert [title for title, _ in shown] == [str(setup / "images" / f"im{i}.png") for i in (0, 1)]
    assert len(result["images"]) == 2  # the frames detected until the key, each written completely


def make_clip(path, frames, size_wh=(64, 48), fps=8):
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size_wh)
    rng = np.random.default_rng(3)
    for _ in range(frames):
        video.write(rng.integers(0, 255, (size_wh[1], size_wh[0], 3), dtype=np.uint8))
    video.release()
    return path


def test_a_stream_through_the_whole_pipeline(setup, tmp_path):
    """A generated clip read as a stream: the annotated .mp4 holds the frames detected, labels are named by the
    stream's own frame numbers, and the JSON records each frame."""
    clip = make_clip(tmp_path / "clip.avi", 30)
    loaded = load_model(setup / "model.pth")
    writer = DetectionWriter(tmp_path / "out", loaded.names)
    run = detect_inputs(loaded.model, [Input("stream", str(clip), "clip", "rtsp://camera/clip")], writer,
                        DetectSettings(img_size=64, conf_thres=0.28))
    writer.finish({})
    frames = [r["frame"] for r in writer.records]
    assert frames == sorted(frames) and frames[-1] == 29 and run.dropped == 30 - len(frames) and run.stopped is None
    assert sorted(p.stem for p in (tmp_path / "out" / "labels" / "clip").iterdir()) == [f"{i:06d}" for i in frames]
    annotated = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    assert {r["image"] for r in writer.records} == {"rtsp://camera/clip"}


@pytest.mark.e2e
def test_ctrl_c_stops_cleanly_with_the_video_closed_and_the_json_written(setup, tmp_path):
    frames = 3000  # long enough that, on a loaded machine, the signal cannot come only after the last frame
    clip = make_clip(tmp_path / "long.avi", frames)
    out = tmp_path / "out"
    # as started from a terminal: a shell's background job (how CI may run) passes Ctrl-C on as ignored
    process = subprocess.Popen([sys.executable, "detect.py", "--source", str(clip), "--weights_path",
                                str(setup / "model.pth"), "--img_size", "64", "--output", str(out)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "labels" / "long" / "000003.txt").exists() and time.monotonic() < deadline \
            and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "error: interrupted"
    assert "stopped by Ctrl-C" in stdout
    result = json.loads((out / "detections.json").read_text())
    done = len(result["images"])
    assert result["stopped"] == "Ctrl-C" and 4 <= done < frames
    video = cv2.VideoCapture(str(out / "long.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == done and video.read()[0]
    assert not [p for p in out.rglob(".*")]  # no temporary file left behind

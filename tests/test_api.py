"""The Python API (models.Detector) and the torch.hub entries, used only through what users see: the same boxes
as detect.py's label files, from a numpy image, a path or a list; named errors for what is not an image."""
import importlib.util
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from models import Darknet, DetectSettings, Detections, Detector
from tests.conftest import REPO, random_tiny_model
from utils.darknet.checkpoint import save_checkpoint, save_model
from utils.errors import UserError

TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"

pytestmark = pytest.mark.filterwarnings("ignore::utils.darknet.cfg.CfgWarning")

NAMES = ["circle", "rectangle", "triangle", "cross"]
SETTINGS = DetectSettings(conf_thres=0.28, img_size=128)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random 4-class yolov3-tiny as .pth (with names) and as .weights, and two noise images."""
    root = tmp_path_factory.mktemp("api")
    model = random_tiny_model(4, seed=0)
    save_model(model, root / "model.pth", NAMES)
    model.save_darknet_weights(root / "model.weights")
    (root / "shapes.names").write_text("\n".join(NAMES) + "\n")
    rng = np.random.default_rng(0)
    for name, shape in (("wide.jpg", (96, 160)), ("tall.png", (150, 90))):
        (root / "images").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "images" / name), rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    return root


def labels_in_pixels(path, image_shape):
    """A detect.py label file (class cx cy w h score, normalised) as (xyxy pixels, scores, classes)."""
    rows = np.loadtxt(path, ndmin=2)
    height, width = image_shape
    cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), rows[:, 5], rows[:, 0].astype(int)


@pytest.mark.e2e
def test_the_detector_gives_detect_pys_boxes_from_an_array_and_from_a_path(files, tmp_path):
    subprocess.run([sys.executable, "detect.py", "--source", str(files / "images"), "--weights_path",
                    str(files / "model.pth"), "--conf_thres", "0.28", "--img_size", "128", "--output",
                    str(tmp_path / "out")], cwd=REPO, check=True, capture_output=True)
    detector = Detector(files / "model.pth", settings=SETTINGS, device="cpu")
    for name in ("wide.jpg", "tall.png"):
        image = cv2.imread(str(files / "images" / name))
        boxes, scores, classes = labels_in_pixels(tmp_path / "out" / "labels" / f"{name[:-4]}.txt", image.shape[:2])
        from_array, from_path = detector(image), detector(files / "images" / name)
        assert isinstance(from_array, Detections) and len(from_array) == len(boxes) > 0
        assert from_path.source == str(files / "images" / name) and from_array.source is None
        for result in (from_array, from_path):
            np.testing.assert_allclose(result.boxes, boxes, atol=0.01)
            np.testing.assert_allclose(result.scores, scores, atol=1e-4)
            assert result.classes.tolist() == classes.tolist() and result.names == [NAMES[c] for c in classes]
            assert result.image_shape == image.shape[:2] and result.boxes.dtype == np.float32


def test_a_list_is_batched_and_gives_each_image_its_own_result(files):
    detector = Detector(files / "model.pth", settings=DetectSettings(conf_thres=0.28, img_size=128, batch_size=2))
    images = [files / "images" / "wide.jpg", cv2.imread(str(files / "images" / "tall.png")),
              str(files / "images" / "wide.jpg")]
    results = detector(images)
    assert isinstance(results, list) and len(results) == 3
    for image, result in zip(images, results):
        alone = detector(image)
        np.testing.assert_allclose(result.boxes, alone.boxes, atol=1e-3)
        assert result.classes.tolist() == alone.classes.tolist()
    stacked = detector(np.stack([cv2.imread(str(files / "images" / "wide.jpg"))] * 2))  # an NxHxWx3 array
    assert len(stacked) == 2 and stacked[0].classes.tolist() == results[0].classes.tolist()
    assert detector.train() is detector and not detector.training and not detector.model.training
    np.testing.assert_allclose(detector(images[0]).boxes, results[0].boxes, atol=1e-3)  # train() changes nothing


def test_grey_and_bgra_arrays_and_settings_changes(files):
    detector = Detector(files / "model.pth", settings=SETTINGS)
    image = cv2.imread(str(files / "images" / "wide.jpg"))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    np.testing.assert_allclose(detector(grey).boxes, detector(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)).boxes)
    np.testing.assert_allclose(detector(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)).boxes, detector(image).boxes)
    detector.settings = DetectSettings(conf_thres=0.28, img_size=128, classes=(2,), max_det=2)
    assert set(detector(image).classes.tolist()) <= {2} and len(detector(image)) <= 2


def test_a_training_checkpoint_runs_at_the_size_it_was_trained_at_unless_told_otherwise(files, tmp_path):
    model = random_tiny_model(4, seed=0)
    save_checkpoint(tmp_path / "trained.pth", {"model": model.state_dict(), "cfg_text": model.cfg_text,
                                               "names": NAMES, "epoch": 0, "options": {"img_size": 128}})
    trained = Detector(tmp_path / "trained.pth", settings=DetectSettings(conf_thres=0.28))
    assert trained.settings.img_size == 128 and Detector(files / "model.pth").settings.img_size == 416
    image = cv2.imread(str(files / "images" / "wide.jpg"))
    np.testing.assert_array_equal(trained(image).boxes, Detector(files / "model.pth", settings=SETTINGS)(image).boxes)
    trained.settings = DetectSettings(img_size=64)
    assert trained.settings.img_size == 64
    run = subprocess.run([sys.executable, "detect.py", "--source", str(files / "images"), "--weights_path",
                          str(tmp_path / "trained.pth"), "--output", str(tmp_path / "out")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "input 128)" in run.stdout and json.loads((tmp_path / "out" / "detections.json").read_text())[
        "img_size"] == 128


def test_what_is_not_an_image_is_a_named_error(files, tmp_path):
    detector = Detector(files / "model.pth", settings=SETTINGS)
    with pytest.raises(UserError, match=r"image 1: expected an HxWx3 BGR uint8 array .* got shape \(3, 64, 64\) "
                                        r"float32"):
        detector([np.zeros((64, 64, 3), np.uint8), np.zeros((3, 64, 64), np.float32)])
    with pytest.raises(UserError, match=r"absent\.jpg: cannot read image: No such file or directory"):
        detector(tmp_path / "absent.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(UserError, match=r"text\.jpg: OpenCV cannot read it as an image"):
        detector(str(tmp_path / "text.jpg"))
    with pytest.raises(UserError, match="image 0: expected a file path or a numpy BGR array, got int"):
        detector([3])
    with pytest.raises(UserError, match="names: 2 class names for a model with 4 classes"):
        Detector(files / "model.pth", names=["a", "b"])
    for names, got in (([0, 1, 2, 3], "0"), (["a", "b", " ", "d"], "' '"), (4, "4")):
        with pytest.raises(UserError, match=rf"names: expected a \.names file or a list of class names \(non-empty "
                                            rf"strings\), got {got}$"):
            Detector(files / "model.pth", names=names)
    for neither in (None, 5, object()):
        with pytest.raises(UserError, match="expected an image .* or a list of them, got "):
            detector(neither)
    with pytest.raises(UserError, match=r"got encoded bytes: decode them with cv2\.imdecode"):
        detector((files / "images" / "wide.jpg").read_bytes())
    with pytest.raises(UserError, match=r"images: is a folder, expected an image$"):
        detector(files / "images")
    with pytest.raises(UserError, match=r"^image 1: the path is empty$"):
        detector([files / "images" / "wide.jpg", ""])
    with pytest.raises(UserError, match=r"got a torch\.Tensor of shape \(64, 64, 3\): pass HxWx3 BGR uint8 arrays"):
        detector(torch.zeros(64, 64, 3, dtype=torch.uint8))


@pytest.mark.parametrize("changes,problem", [
    (dict(img_size=100), "img_size: expected a multiple of 32 in 32 .. 8192, got 100"),
    (dict(img_size=99999968), "img_size: expected a multiple of 32 in 32 .. 8192, got 99999968"),
    (dict(batch_size=0), "batch_size: expected an integer of at least 1, got 0"),
    (dict(conf_thres=2), r"conf_thres: expected a number in \[0, 1\], got 2"),
    (dict(iou_thres=-1), r"iou_thres: expected a number in \[0, 1\], got -1"),
    (dict(max_det=0), "max_det: expected an integer of at least 1, got 0"),
    (dict(max_det=True), "max_det: expected an integer of at least 1, got True"),  # bool is an int to Python
    (dict(batch_size=True), "batch_size: expected an integer of at least 1, got True"),
    (dict(conf_thres=False), r"conf_thres: expected a number in \[0, 1\], got False"),
    (dict(classes=(-1,)), r"classes: expected a sequence of class indices"),
    (dict(classes=0), r"classes: expected a sequence of class indices \(integers from 0\), got 0"),
    (dict(classes="01"), r"classes: expected a sequence of class indices \(integers from 0\), got '01'"),
    (dict(augment="no"), "augment: expected True or False, got 'no'"),
    (dict(letterbox=0), "letterbox: expected True or False, got 0"),
    (dict(letterbox=np.array([True])), "letterbox: expected True or False, got array"),
    (dict(agnostic=None), "agnostic: expected True or False, got None"),
    (dict(multi_label=1.0), "multi_label: expected True or False, got 1.0"),
])
def test_settings_out_of_range_are_refused_when_made(changes, problem):
    with pytest.raises(UserError, match=problem):
        DetectSettings(**changes)


def test_classes_take_any_sequence_of_indices():
    assert DetectSettings(classes=np.array([0, 2])).classes == (0, 2) == DetectSettings(classes=range(0, 3, 2)).classes
    assert DetectSettings(classes=[1]).classes == (1,)


def test_settings_the_model_cannot_meet_are_refused_when_given(files):
    detector = Detector(files / "model.pth", settings=SETTINGS)
    with pytest.raises(UserError, match=r"classes: 9 is not a class of this model, which has 4 \(0\.\.3\)"):
        detector.settings = DetectSettings(classes=(0, 9))
    with pytest.raises(UserError, match="settings: expected a DetectSettings, got dict"):
        detector.settings = {"img_size": 96}
    assert detector.settings is SETTINGS


def test_detector_options_are_checked_and_named_as_keywords(files, monkeypatch):
    with pytest.raises(UserError, match="half: expected True or False, got 'yes'"):
        Detector(files / "model.pth", device="cpu", half="yes")
    with pytest.raises(UserError, match="device='tpu': expected cpu, cuda, cuda:N or GPU indices"):
        Detector(files / "model.pth", device="tpu")
    with pytest.raises(UserError, match="weights: expected a .pth or .weights path, or a Darknet, got int"):
        Detector(123)
    with pytest.raises(UserError, match="cfg: a built Darknet has its own cfg; cfg goes with a .weights path"):
        Detector(random_tiny_model(4), cfg="cfg/yolov3-tiny.cfg")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"device='cuda:0': CUDA is not available .*; use device='cpu'"):
        Detector(files / "model.pth", device="cuda:0")


def hub_module():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hub_has_an_entry_for_each_shipped_cfg():
    module = hub_module()
    entries = sorted(name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_"))
    assert entries == sorted(p.stem.replace("-", "_") for p in (REPO / "cfg").glob("*.cfg"))
    assert "res2net_yolov3" in entries and "yolov3_tiny" in entries


def test_torch_hub_load_on_the_local_clone(files):
    image = cv2.imread(str(files / "images" / "wide.jpg"))
    direct = Detector(files / "model.pth", settings=SETTINGS)(image)
    from_weights = torch.hub.load(str(REPO), "yolov3_tiny", source="local", weights=str(files / "model.weights"),
                                  names=str(files / "shapes.names"), device="cpu")  # 4 classes, from the names
    from_pth = torch.hub.load(str(REPO), "yolov3_tiny", source="local", pretrained=True,
                              weights=str(files / "model.pth"))
    for detector in (from_weights, from_pth):
        assert isinstance(detector, Detector) and isinstance(detector, torch.nn.Module)
        detector.settings = SETTINGS
        result = detector(image)
        np.testing.assert_allclose(result.boxes, direct.boxes, atol=1e-3)
        assert result.names == direct.names
    untrained = torch.hub.load(str(REPO), "res2net_yolov3_tiny", source="local", classes=3, device="cpu",
                               settings=DetectSettings(conf_thres=0.5, img_size=96))
    assert untrained.model.num_classes == 3 and untrained.names == ["0", "1", "2"]
    assert untrained.settings.img_size == 96 and untrained.settings.conf_thres == 0.5
    with pytest.raises(UserError, match=r"yolov3_tiny: classes='4': expected a class count, an integer of at least 1"):
        torch.hub.load(str(REPO), "yolov3_tiny", source="local", classes="4")
    positional = hub_module().yolov3_tiny(False, str(files / "model.pth"), None, "cpu")  # the order of old
    assert positional.model.num_classes == 4
    with pytest.raises(UserError, match=r"yolov3_tiny: weights=123: expected the path of a \.pth or \.weights file"):
        torch.hub.load(str(REPO), "yolov3_tiny", source="local", weights=123)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        hub_module().yolov3_tiny(colour="red")
    with pytest.raises(UserError, match="res2net_yolov3: pretrained=True needs weights=.* downloads nothing"):
        torch.hub.load(str(REPO), "res2net_yolov3", source="local", pretrained=True)
    with pytest.raises(UserError, match=r"model\.pth: the checkpoint has 4 classes, not classes=80"):
        torch.hub.load(str(REPO), "yolov3_tiny", source="local", weights=str(files / "model.pth"), classes=80)
    with pytest.raises(UserError, match=r"model\.weights: the file ends inside .* it fits this cfg made for 4 classes "
                                        r"instead of 80: pass classes=4 \(or names= its 4 class names\)$"):
        torch.hub.load(str(REPO), "yolov3_tiny", source="local", weights=str(files / "model.weights"))
    with pytest.raises(UserError, match=r"model\.weights: a \.weights file needs its cfg \(--model_def; cfg= in "
                                        r"Python\)"):
        Detector(files / "model.weights")


def test_a_checkpoints_own_cfg_loads_without_repeating_its_training_warnings(tmp_path):
    import warnings
    from models import Darknet
    from utils.darknet.cfg import CfgWarning
    from utils.darknet.checkpoint import model_from_file
    with pytest.warns(CfgWarning, match="batch=64"):  # Darknet's training keys, reported when it is read
        model = Darknet(REPO / "cfg" / "yolov3-tiny.cfg")
    save_model(model, tmp_path / "m.pth", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, _ = model_from_file(tmp_path / "m.pth")
    assert loaded.num_classes == 80
    with pytest.warns(CfgWarning, match="batch=64"):  # a cfg named beside it is the user's: it is checked
        model_from_file(tmp_path / "m.pth", REPO / "cfg" / "yolov3-tiny.cfg")


@pytest.mark.parametrize("call,problem", [
    (lambda tmp: Darknet(123), r"cfg: expected a \.cfg path or a Cfg, got int"),
    (lambda tmp: Darknet("[net]\nwidth=32\n"), r"cfg: this is cfg text, not a path; build a Cfg of it with parse_cfg"),
    (lambda tmp: Detector(tmp / "m.weights", 123), r"cfg: expected a \.cfg path or a Cfg, got int"),
    (lambda tmp: Darknet(TINY_CFG).load_darknet_weights(tmp / "m.weights", cutoff=1.5),
     r"cutoff: expected a layer count, an integer, got 1\.5"),
    (lambda tmp: Darknet(TINY_CFG).save_darknet_weights(tmp), r": is a folder, expected a file name"),
])
def test_the_model_api_names_a_wrong_argument(tmp_path, call, problem):
    random_tiny_model(80).save_darknet_weights(tmp_path / "m.weights")
    with pytest.raises(UserError, match=problem):
        call(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.weights"]

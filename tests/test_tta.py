"""Test-time augmentation: each pass's boxes land back on the input's own pixels, and test.py, detect.py and the
API run it on request."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from models import DetectSettings, Detector
from tests.conftest import REPO, random_tiny_model
from utils.darknet.checkpoint import save_model
from utils.inference.tta import TTA_PASSES, AugmentedInference, shrunk

pytestmark = pytest.mark.filterwarnings("ignore::utils.darknet.cfg.CfgWarning")


class BrightestPixel(nn.Module):
    """A stand-in detector: one row per image, a 10x6 box centred on its brightest pixel (input pixels)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        width = batch.shape[-1]
        flat = batch.sum(1).flatten(1).argmax(1)
        cx, cy = (flat % width).float() + 0.5, (flat // width).float() + 0.5
        size = torch.tensor([10.0, 6.0]).expand(len(cx), 2)
        return torch.cat([torch.stack([cx, cy], 1), size, torch.ones_like(cx)[:, None]], 1)[:, None]


def test_every_pass_maps_its_box_back_onto_the_same_spot():
    batch = torch.zeros(2, 3, 128, 192)
    batch[0, :, 40, 150] = 100.0  # brighter than the grey padding, however the resize spreads it
    batch[1, :, 100, 13] = 100.0
    rows = AugmentedInference(BrightestPixel())(batch)
    assert rows.shape == (2, len(TTA_PASSES), 5)
    for image, (x, y) in enumerate([(150.5, 40.5), (13.5, 100.5)]):
        for cx, cy, w, h, _ in rows[image].tolist():
            assert abs(cx - x) < 2 and abs(cy - y) < 2  # within the pixel a shrunk image rounds to
        np.testing.assert_allclose(rows[image, :, 2:4].numpy(), [[10 / scale, 6 / scale] for scale, _ in TTA_PASSES],
                                   rtol=1e-6)


def test_a_shrunk_batch_keeps_the_image_top_left_and_pads_to_the_stride():
    batch = torch.rand(1, 3, 64, 128)
    small = shrunk(batch, 0.67)
    assert small.shape == (1, 3, 64, 96)  # a 42 x 85 image, padded to 64 x 96
    assert torch.all(small[..., 42:, :] == 0.447) and torch.all(small[..., 85:] == 0.447)
    assert not torch.any(small[..., :42, :85] == 0.447)
    assert shrunk(batch, 1.0) is batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    save_model(random_tiny_model(4, seed=0), root / "model.pth", ["a", "b", "c", "d"],
               trained={"options": {"img_size": 96}})
    rng = np.random.default_rng(1)
    (root / "images").mkdir()
    for name in ("wide.jpg", "tall.jpg"):
        cv2.imwrite(str(root / "images" / name), rng.integers(0, 255, (80, 120, 3) if name == "wide.jpg"
                                                              else (120, 70, 3), dtype=np.uint8))
    return root


def test_the_api_and_detect_py_give_the_same_augmented_boxes(trained, tmp_path):
    plain = Detector(trained / "model.pth", settings=DetectSettings(conf_thres=0.2))
    augmented = Detector(trained / "model.pth", settings=DetectSettings(conf_thres=0.2, augment=True))
    image = cv2.imread(str(trained / "images" / "wide.jpg"))
    assert len(augmented(image)) > 0 and not np.array_equal(augmented(image).boxes, plain(image).boxes)
    run = subprocess.run([sys.executable, "detect.py", "--source", str(trained / "images"), "--weights_path",
                          str(trained / "model.pth"), "--conf_thres", "0.2", "--augment", "--output",
                          str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert record["augment"] is True
    listed = [d for r in record["images"] if r["image"].endswith("wide.jpg") for d in r["detections"]]
    np.testing.assert_allclose([d["box_xyxy"] for d in listed], augmented(image).boxes, atol=0.01)


def test_test_py_scores_the_augmented_detections(trained, tmp_path):
    from utils.data.synthetic import write_dataset
    data = write_dataset(tmp_path / "set", train=1, valid=4, size=96, seed=3)
    run = subprocess.run([sys.executable, "test.py", "--weights_path", str(trained / "model.pth"), "--data_config",
                          str(data), "--n_cpu", "0", "--augment"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "letterboxed to 96, test-time augmented" in run.stdout and "mAP@0.5 = " in run.stdout

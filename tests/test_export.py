"""Exports: ONNX at any batch and size, ONNX with NMS inside equal to the repo's NMS, TorchScript."""
import copy

import pytest
import torch

from models import Darknet
from tests.conftest import REPO, randomize
from utils.conversion.export import NmsOptions, export_onnx, export_torchscript
from utils.inference.nms import non_max_suppression

SHAPES = [(1, 3, 256, 256), (2, 3, 192, 320)]


@pytest.fixture(scope="module")
def model():
    return randomize(Darknet(REPO / "cfg" / "yolov3-tiny.cfg"), seed=1, gain=0.9).eval()


def test_onnx_takes_any_batch_and_size(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    export_onnx(model, tmp_path / "m.onnx", 256)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    for shape in SHAPES:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("max_det", [7, 300])
def test_onnx_with_nms_gives_the_repos_final_boxes(model, tmp_path, max_det):
    ort = pytest.importorskip("onnxruntime")
    options = NmsOptions(conf_thres=0.3, iou_thres=0.45, max_det=max_det)
    export_onnx(model, tmp_path / "nms.onnx", 256, nms_options=options)
    session = ort.InferenceSession(str(tmp_path / "nms.onnx"))
    assert "NonMaxSuppression" in {node.op_type for node in __import__("onnx").load(tmp_path / "nms.onnx").graph.node}
    for shape in SHAPES:
        x = torch.rand(*shape)
        rows = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            expected = non_max_suppression(model(x), options.conf_thres, options.iou_thres, max_det=max_det)
        for image, boxes in enumerate(expected):
            got = rows[rows[:, 0] == image, 1:]
            assert len(boxes) > 0 and got.shape == boxes.shape
            torch.testing.assert_close(got, boxes, atol=1e-3, rtol=1e-4)


def test_torchscript_loads_with_torch_alone_and_takes_any_size(model, tmp_path):
    source = copy.deepcopy(model)
    export_torchscript(source, tmp_path / "m.pt", 256)  # exports the inference path: fused, channels-last
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    for shape in SHAPES:
        x = torch.rand(*shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)

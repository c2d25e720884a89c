"""convert.py's export flags: --onnx [--nms --conf_thres --iou_thres --max_det], --torchscript, the traced size
(the cfg's [net], or the size a checkpoint was trained at), and the errors of flags that need another."""
import subprocess
import sys

import pytest
import torch

from models import Darknet
from tests.conftest import REPO, randomize
from utils.conversion.export import ONNX_OPSET
from utils.darknet.cfg import parse_cfg
from utils.darknet.checkpoint import CheckpointError, model_from_file, save_model
from utils.inference.nms import non_max_suppression

pytestmark = [pytest.mark.e2e,  # every test here runs a command line as a subprocess
              pytest.mark.filterwarnings("ignore::utils.darknet.cfg.CfgWarning")]


def convert(*args):
    return subprocess.run([sys.executable, "convert.py", *map(str, args)], cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """yolov3-tiny with a 160x96 [net] (what the exports trace at by default), random weights, as a .pth."""
    text = (REPO / "cfg" / "yolov3-tiny.cfg").read_text().replace("width=416", "width=160").replace("height=416",
                                                                                                 "height=96")
    model = randomize(Darknet(parse_cfg(text, "tiny-160x96.cfg")), seed=3, gain=0.9).eval()
    path = tmp_path_factory.mktemp("export") / "model.pth"
    save_model(model, path)
    return path, model


def test_onnx_with_nms_from_the_command_line(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, model = checkpoint
    out = tmp_path / "m.onnx"
    result = convert(path, "--onnx", out, "--nms", "--conf_thres", "0.3", "--max_det", "20")
    assert result.returncode == 0, result.stderr
    assert f"ONNX opset {ONNX_OPSET}" in result.stdout and "traced at 96x160" in result.stdout
    assert "after NMS at conf 0.3, IoU 0.45, at most 20 per image" in result.stdout
    session = ort.InferenceSession(str(out))
    x = torch.rand(2, 3, 128, 192)  # another batch and size than the traced example
    rows = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        expected = non_max_suppression(model(x), 0.3, 0.45, max_det=20)
    for image, boxes in enumerate(expected):
        assert len(boxes) > 0
        torch.testing.assert_close(rows[rows[:, 0] == image, 1:], boxes, atol=1e-3, rtol=1e-4)


def test_onnx_and_torchscript_in_one_call(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, model = checkpoint
    result = convert(path, "--onnx", tmp_path / "m.onnx", "--torchscript", tmp_path / "m.pt", "--img_size", "64")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("traced at 64x64") == 2 and "TorchScript (torch.jit.load)" in result.stdout
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        expected = model(x)
        traced = torch.jit.load(str(tmp_path / "m.pt"))(x)
    raw = torch.from_numpy(ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0])
    torch.testing.assert_close(traced, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(raw, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(CheckpointError, match=r"m\.pt: a TorchScript export \(convert\.py --torchscript\), which "
                                              r"runs with torch\.jit\.load; .* the \.pth or \.weights it was"):
        model_from_file(tmp_path / "m.pt")


def test_the_traced_example_of_a_trained_checkpoint_is_at_its_trained_size(checkpoint, tmp_path):
    _, model = checkpoint
    trained = tmp_path / "trained.pth"
    save_model(model, trained, trained={"options": {"img_size": 64}})
    result = convert(trained, "--torchscript", tmp_path / "m.pt")
    assert result.returncode == 0, result.stderr
    assert "traced at 64x64" in result.stdout
    result = convert(trained, "--torchscript", tmp_path / "n.pt", "--img_size", "128")
    assert "traced at 128x128" in result.stdout


@pytest.mark.parametrize("flags,message", [
    (["--onnx", "{T}/a.onnx", "--conf_thres", "0.3"], "--conf_thres sets the NMS step of an ONNX export; add --nms"),
    (["--onnx", "{T}/same", "--torchscript", "{T}/same"], "--torchscript {T}/same and --onnx {T}/same are the same "
                                                            "file: the second would replace the first"),
    (["--torchscript", "{T}/a.pt", "--nms"], "--nms ends an ONNX graph; add --onnx OUT.onnx"),
    (["--onnx", "{T}/exists.onnx"], "--onnx {T}/exists.onnx: the file exists; choose another name or pass --force"),
    (["--onnx", "{T}/exists.onnx/m.onnx"], "--onnx {T}/exists.onnx/m.onnx: {T}/exists.onnx is a file, not a folder"),
    (["--torchscript", "{T}"], "--torchscript {T}: is a folder, expected a file name"),
    (["--torchscript", "{T}/a.onnx"], "--torchscript {T}/a.onnx: .onnx names an ONNX model; give the TorchScript "
                                      "file a name such as model.pt"),
    (["--onnx", "{T}/a.pt"], "--onnx {T}/a.pt: expected a name ending in .onnx"),
    (["{T}/out.pth", "--onnx", "{T}/a.onnx"], "an export writes only its --onnx / --torchscript file"),
    (["--onnx", "{T}/a.onnx", "--nms", "--max_det", "0"], "--max_det: expected an integer in 1 .. inf, got 0"),
    (["--onnx", "{T}/a.onnx", "--img_size", "100"], "--img_size: expected an integer in 32 .. 8192, a multiple of 32"),
])
def test_export_flag_errors(checkpoint, tmp_path, flags, message):
    (tmp_path / "exists.onnx").write_bytes(b"mine")
    result = convert(checkpoint[0], *(f.replace("{T}", str(tmp_path)) for f in flags))
    message = message.replace("{T}", str(tmp_path))
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "exists.onnx").read_bytes() == b"mine" and not (tmp_path / "a.onnx").exists()


def test_onnx_without_the_onnx_package_is_one_error_line_and_writes_nothing(checkpoint, tmp_path):
    # sys.modules['onnx'] = None: Python's own spelling of "this package is not installed"
    script = ("import runpy, sys; sys.modules['onnx'] = None; sys.argv = ['convert.py'] + sys.argv[1:]; "
              "runpy.run_path('convert.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script, str(checkpoint[0]), "--onnx", str(tmp_path / "m.onnx"),
                             "--torchscript", str(tmp_path / "m.pt")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == ("error: --onnx needs the onnx package, which is not installed: pip "
                                              "install onnx (TorchScript, --torchscript, needs nothing more)")
    assert list(tmp_path.iterdir()) == []

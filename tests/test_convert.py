"""convert.py: both directions, backbones, the plain-Darknet expansion of Res2Net cfgs, ONNX, and errors."""
import struct
import subprocess
import sys

import pytest
import torch

from models import Darknet
from tests.conftest import REPO, randomize
from utils.conversion.native import darknet_native_cfg
from utils.darknet.cfg import parse_cfg, read_cfg
from utils.darknet.checkpoint import model_from_file, save_checkpoint, save_model
from utils.errors import UserError
from utils.inference.load import load_model

PLAIN_TYPES = {"convolutional", "route", "shortcut", "upsample", "maxpool", "yolo"}


def convert(*args, check=True):
    result = subprocess.run([sys.executable, "convert.py", *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def tiny_weights(tmp_path):
    cfg = REPO / "cfg" / "res2net-yolov3-tiny.cfg"
    model = randomize(Darknet(cfg), seed=8, gain=0.9)
    path = tmp_path / "tiny.weights"
    model.save_darknet_weights(path)
    data = bytearray(path.read_bytes())
    data[:20] = struct.pack("<3iq", 0, 2, 5, 123456789)  # as if Darknet had written it
    path.write_bytes(bytes(data))
    return cfg, path


@pytest.mark.e2e
def test_weights_to_pth_and_back_is_byte_identical(tiny_weights, tmp_path):
    cfg, weights = tiny_weights
    convert("--model_def", cfg, weights, tmp_path / "m.pth")
    state = torch.load(tmp_path / "m.pth", weights_only=True)
    assert int(state["model"]["seen"]) == 123456789 and "[res2net]" in state["cfg_text"]
    convert(tmp_path / "m.pth", tmp_path / "back.weights")  # the .pth carries its cfg
    assert (tmp_path / "back.weights").read_bytes() == weights.read_bytes()
    loaded = load_model(tmp_path / "m.pth")  # what test.py and detect.py use
    assert loaded.model.num_classes == 80 and loaded.names[0] == "0"


@pytest.mark.e2e
def test_backbone_cutoff_by_flag_and_by_name(tiny_weights, tmp_path):
    cfg, weights = tiny_weights
    convert("--model_def", cfg, weights, tmp_path / "tiny.conv.11")
    convert("--model_def", cfg, weights, tmp_path / "cut.weights", "--cutoff", "11")
    assert (tmp_path / "tiny.conv.11").read_bytes() == (tmp_path / "cut.weights").read_bytes()
    convert(weights, "--cutoff", "11", "--model_def", cfg, tmp_path / "mixed.weights")  # files between the flags
    assert (tmp_path / "mixed.weights").read_bytes() == (tmp_path / "cut.weights").read_bytes()
    model = Darknet(cfg)
    expected = 20 + 4 * sum(t.numel() for layer in list(model.layers)[:11] for t in layer.darknet_tensors())
    assert (tmp_path / "cut.weights").stat().st_size == expected
    result = convert("--model_def", cfg, weights, tmp_path / "x.pth", "--cutoff", "11", check=False)
    assert result.returncode == 1 and "--cutoff writes a Darknet .weights file" in result.stderr
    for name, flags, message in [("z.conv.5", ["--cutoff", "7"], "the name says 5 layers (<net>.conv.N is read as "
                                  "layers 0..N-1, as train.py reads it), --cutoff 7; name it z.conv.7"),
                                 ("z.conv.0", [], "a backbone of 0 layers holds no weights")]:
        refused = convert("--model_def", cfg, weights, tmp_path / name, *flags, check=False)
        assert refused.returncode == 1 and message in refused.stderr and not (tmp_path / name).exists()
    for flags in ([], ["--model_def", cfg]):
        headless = convert(*flags, tmp_path / "tiny.conv.11", tmp_path / "t.pth", check=False)
        assert headless.returncode == 1 and headless.stderr.splitlines()[-1] == (
            f"error: {tmp_path / 'tiny.conv.11'}: a backbone (layers 0..10, by its name) holds no detection heads; "
            f"start a training from it: train.py --pretrained_weights {tmp_path / 'tiny.conv.11'}")
    backbone = tmp_path / "tiny.conv.11"
    convert("--model_def", cfg, backbone, tmp_path / "shorter.conv.4")  # a partial of a partial, as Darknet's
    convert("--model_def", cfg, weights, tmp_path / "direct.weights", "--cutoff", "4")
    assert (tmp_path / "shorter.conv.4").read_bytes() == (tmp_path / "direct.weights").read_bytes()
    for flags, message in [(["--model_def", cfg, backbone, tmp_path / "y.conv.12"], "and the output asks for layers "
                            "0..11; a backbone is cut to fewer layers (--cutoff N or a <net>.conv.N name, N <= 11)"),
                           (["--model_def", cfg, backbone, tmp_path / "all.weights"], "the output asks for all the "
                            "cfg's layers"),
                           ([backbone, tmp_path / "y.conv.3"], "a .weights file needs its cfg (--model_def)")]:
        refused = convert(*flags, check=False)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        assert not flags[-1].exists()


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["res2net-yolov3-tiny", "res2net-triangle-yolov3-tiny", "res2net-yolov3",
                                  "res2net-triangle-yolov3"])
def test_darknet_native_expansion_is_equivalent(name, tmp_path):
    cfg = REPO / "cfg" / f"{name}.cfg"
    convert("--model_def", cfg, "--darknet_native", tmp_path / "native.cfg")
    compact = randomize(Darknet(cfg), seed=2, gain=0.9).eval()
    compact.save_darknet_weights(tmp_path / "m.weights")
    native = Darknet(tmp_path / "native.cfg").eval()
    assert {b.name for b in native.blocks} <= PLAIN_TYPES
    native.load_darknet_weights(tmp_path / "m.weights")  # refuses any length mismatch
    native.save_darknet_weights(tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == (tmp_path / "m.weights").read_bytes()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(native(x), compact(x), atol=1e-5, rtol=1e-5)


@pytest.mark.e2e
def test_darknet_native_takes_a_pths_own_cfg_and_refuses_a_conversion_it_would_not_do(tmp_path):
    cfg = REPO / "cfg" / "res2net-yolov3-tiny.cfg"
    convert("--model_def", cfg, "--darknet_native", tmp_path / "from_cfg.cfg")
    save_model(Darknet(cfg), tmp_path / "m.pth")
    result = convert(tmp_path / "m.pth", "--darknet_native", tmp_path / "from_pth.cfg")
    assert f"{tmp_path / 'm.pth'}'s cfg with its blocks expanded" in result.stdout
    from_pth, from_cfg = ((tmp_path / f"{name}.cfg").read_text().splitlines() for name in ("from_pth", "from_cfg"))
    assert from_pth[0].startswith("# m.pth with [res2net] expanded") and from_pth[1:] == from_cfg[1:]
    Darknet(cfg).save_darknet_weights(tmp_path / "m.weights")
    for args, message in [((tmp_path / "m.pth", tmp_path / "o.weights"), "--darknet_native writes only its cfg"),
                          (("--model_def", cfg, tmp_path / "m.weights"), "--darknet_native reads no weights"),
                          ((tmp_path / "m.pth", "--onnx", tmp_path / "m.onnx"), "--onnx belongs to another conversion"),
                          (("--model_def", cfg, "--cutoff", "3"), "--cutoff belongs to another conversion")]:
        refused = convert(*args, "--darknet_native", tmp_path / "n.cfg", check=False)
        assert refused.returncode == 1 and message in refused.stderr and not (tmp_path / "n.cfg").exists()
    nms = convert(tmp_path / "m.pth", "--nms", check=False)  # the NMS step ends an ONNX graph, not TorchScript
    assert nms.returncode == 1 and "add --onnx OUT.onnx" in nms.stderr and "torchscript" not in nms.stderr
    for name, suffix in (("n.pth", ".pth"), ("n.txt", ".txt")):
        named = convert(tmp_path / "m.pth", "--darknet_native", tmp_path / name, check=False)
        assert named.returncode == 1 and f"writes a cfg; name it .cfg, not {suffix}" in named.stderr


def test_darknet_native_refuses_what_darknet_cannot_express(write_cfg):
    stage = write_cfg("[convolutional]\nfilters=16\nsize=1\n\n[res2net]\nplanes=8\nstride=2\nstype=stage\n")
    with pytest.raises(ValueError, match="stype=stage has a 3x3 average pool"):
        darknet_native_cfg(read_cfg(stage))
    first = write_cfg("[triangle]\nplanes=16\n", name="first.cfg")
    with pytest.raises(ValueError, match="a block as the first layer cannot be expanded"):
        darknet_native_cfg(read_cfg(first))


@pytest.mark.e2e
def test_onnx_export_matches_pytorch(tiny_weights, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    cfg, weights = tiny_weights
    for fuse in ([], ["--fuse"]):
        out = tmp_path / f"m{len(fuse)}.onnx"
        convert("--model_def", cfg, weights, "--onnx", out, "--img_size", "96", *fuse)
        session = ort.InferenceSession(str(out))
        x = torch.rand(3, 3, 96, 96)  # another batch size than the export's: the batch axis is dynamic
        model = Darknet(cfg).eval()
        model.load_darknet_weights(weights)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape == (3, 3 * (9 + 36), 85)
        assert abs(got - expected).max() < 1e-3


@pytest.mark.e2e
def test_errors(tiny_weights, tmp_path):
    cfg, weights = tiny_weights
    wrong = convert("--model_def", REPO / "cfg" / "yolov3-tiny.cfg", weights, tmp_path / "x.pth", check=False)
    assert wrong.returncode == 1 and "floats" in wrong.stderr and "layer" in wrong.stderr
    unknown = convert("--model_def", cfg, weights, tmp_path / "x.bin", check=False)
    assert unknown.returncode == 1 and "unknown output extension '.bin'" in unknown.stderr
    existing = tmp_path / "exists.pth"
    existing.write_bytes(b"mine")
    refused = convert("--model_def", cfg, weights, existing, check=False)
    assert refused.returncode == 1 and f"output {existing}: the file exists; choose another name or pass --force" \
        in refused.stderr
    assert existing.read_bytes() == b"mine"
    convert("--model_def", cfg, weights, existing, "--force")
    assert torch.load(existing, weights_only=True)["model"]
    before, own_cfg = existing.read_bytes(), tmp_path / "own.cfg"
    own_cfg.write_text(cfg.read_text())
    for into_input in ([existing, existing, "--force"],
                       ["--model_def", own_cfg, "--darknet_native", own_cfg, "--force"]):
        refused = convert(*into_input, check=False)
        assert refused.returncode == 1 and "is the input" in refused.stderr and "never an input" in refused.stderr
    assert existing.read_bytes() == before and own_cfg.read_text() == cfg.read_text()
    missing = convert("--model_def", cfg, tmp_path / "absent.weights", tmp_path / "y.pth", check=False)
    assert missing.returncode == 1 and "absent.weights: cannot read weights file: No such file" in missing.stderr


def test_class_names_stored_in_a_pth_must_fit_the_model(tiny_weights, tmp_path):
    cfg, weights = tiny_weights
    (tmp_path / "three.names").write_text("a\nb\nc\n")
    refused = convert("--model_def", cfg, weights, tmp_path / "m.pth", "--class_path", tmp_path / "three.names",
                      check=False)
    assert refused.returncode == 1 and not (tmp_path / "m.pth").exists()
    assert refused.stderr.splitlines()[-1] == (f"error: {tmp_path / 'three.names'}: 3 class names for a model "
                                               f"with 80 classes")
    (tmp_path / "coco.names").write_text("".join(f"class{i}\n" for i in range(80)))
    convert("--model_def", cfg, weights, tmp_path / "m.pth", "--class_path", tmp_path / "coco.names")
    assert torch.load(tmp_path / "m.pth", weights_only=True)["names"][79] == "class79"


def test_a_pth_converted_to_a_pth_keeps_its_class_names_and_the_size_it_was_trained_at(tiny_weights, tmp_path):
    cfg, weights = tiny_weights
    model = model_from_file(weights, cfg)[0]
    names = [f"class{i}" for i in range(80)]
    save_checkpoint(tmp_path / "last.pth", {"model": model.state_dict(), "ema": {"model": model.state_dict()},
                                            "cfg_text": model.cfg_text, "names": names, "epoch": 3,
                                            "options": {"img_size": 160, "epochs": 5}})
    convert(tmp_path / "last.pth", tmp_path / "slim.pth")
    slim = torch.load(tmp_path / "slim.pth", weights_only=True)
    assert slim["names"] == names and slim["options"] == {"img_size": 160} and "ema" not in slim
    assert load_model(tmp_path / "slim.pth").input_size(None) == 160


def test_a_model_of_other_than_colour_inputs_is_refused_for_inference(tmp_path):
    grey = Darknet(parse_cfg((REPO / "cfg" / "yolov3-tiny.cfg").read_text().replace("channels=3", "channels=1"),
                             "grey.cfg"))
    save_model(grey, tmp_path / "grey.pth")
    with pytest.raises(UserError, match=r"grey\.pth \(its cfg\): \[net\] channels=1, but inference reads "
                                        r"colour images \(3 channels\); set channels=3"):
        load_model(tmp_path / "grey.pth")

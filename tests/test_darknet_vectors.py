"""Our forward pass and weights I/O against the real Darknet program's dumps (../shared/darknet-vectors)."""
import json

import numpy as np
import pytest
import torch

from models import Darknet
from tests.conftest import REPO, shared_path

CASES = ["yolov3-tiny", "yolov3", "yolov3-spp"]


def load_case(case):
    folder = shared_path("darknet-vectors", case)
    index = json.loads((folder / "index.json").read_text())
    model = Darknet(folder / "model.cfg")
    model.load_darknet_weights(folder / "model.weights")
    x = torch.from_numpy(np.fromfile(folder / "input.f32", dtype="<f4").reshape(index["input"]["shape"]))
    return folder, index, model.eval(), x


def assert_close_to_darknet(ours, theirs, what):
    tolerance = 1e-4 * np.maximum(1.0, np.abs(theirs))
    error = np.abs(ours - theirs)
    worst = np.unravel_index(np.argmax(error - tolerance), error.shape)
    assert np.all(error <= tolerance), f"{what}: |ours - darknet| = {error[worst]:.3g} at {worst}"


@pytest.mark.parametrize("case", CASES)
def test_every_yolo_input_and_output_matches_darknet(case):
    folder, index, model, x = load_case(case)
    with torch.no_grad():
        heads = model.forward_heads(x)
    yolo_indices = [i for i, layer in enumerate(model.layers) if layer in model.yolo_layers]
    assert yolo_indices == [y["layer_index"] for y in index["yolo"]]
    for meta, head, yolo in zip(index["yolo"], heads, model.yolo_layers):
        shape = meta["shape_chw"]
        raw_ref = np.fromfile(folder / meta["input_file"], dtype="<f4").reshape(shape)
        out_ref = np.fromfile(folder / meta["output_file"], dtype="<f4").reshape(shape)
        assert list(head.shape[1:]) == shape
        assert_close_to_darknet(head[0].numpy(), raw_ref, f"{case} layer {meta['layer_index']} input")
        assert_close_to_darknet(yolo.activate(head)[0].numpy(), out_ref, f"{case} layer {meta['layer_index']} output")
        assert list(yolo.mask) == meta["mask"]
        assert yolo.all_anchors.flatten().tolist() == meta["anchors"]


@pytest.mark.parametrize("case", CASES)
def test_every_layer_shape_and_mean_match_darknet(case):
    """Per-layer (C, H, W) and output mean against Darknet's per-layer stats: finds the first divergence."""
    _, index, model, x = load_case(case)
    assert len(model.layers) == index["net"]["n_layers"]
    outputs = {}
    hooks = [layer.register_forward_hook(lambda m, args, out, i=i: outputs.__setitem__(i, out))
             for i, layer in enumerate(model.layers)]
    with torch.no_grad():
        heads = model.forward_heads(x)
    for hook in hooks:
        hook.remove()
    for yolo, head in zip(model.yolo_layers, heads):  # forward_heads skips activating heads nobody reads
        outputs.setdefault(list(model.layers).index(yolo), yolo.activate(head))
    for entry in index["layers"]:
        out = outputs[entry["index"]][0]
        assert tuple(out.shape) == (entry["out_c"], entry["out_h"], entry["out_w"]), f"layer {entry['index']}"
        mean = entry["stats"]["mean"]
        assert abs(out.double().mean().item() - mean) <= 1e-4 * max(1.0, abs(mean)), f"layer {entry['index']}"


def test_weights_header_is_read_as_darknet_read_it():
    folder, index, model, _ = load_case("yolov3")
    expected = index["weights_header"]
    header = model.weights_header
    assert (header.major, header.minor, header.revision, header.seen) == (
        expected["major"], expected["minor"], expected["revision"], index["darknet_seen_after_load"])
    assert header.size == expected["header_bytes"]


@pytest.mark.parametrize("case", CASES)
def test_decoded_boxes_follow_darknet_get_yolo_box(case):
    """Spec §4 / Darknet's get_yolo_box: bx = (x + out0) / W ... in input pixels, anchor-major order."""
    folder, index, model, x = load_case(case)
    with torch.no_grad():
        detections = model(x)[0].numpy()
    net_h, net_w = x.shape[2:]
    offset = 0
    for meta in index["yolo"]:
        c, h, w = meta["shape_chw"]
        out = np.fromfile(folder / meta["output_file"], dtype="<f4").reshape(len(meta["mask"]), -1, h, w)
        for a, anchor_index in enumerate(meta["mask"]):
            anchor_w, anchor_h = meta["anchors"][2 * anchor_index], meta["anchors"][2 * anchor_index + 1]
            cols, rows = np.meshgrid(np.arange(w), np.arange(h))
            expected = np.stack([
                (cols + out[a, 0]) / w * net_w,
                (rows + out[a, 1]) / h * net_h,
                np.exp(out[a, 2]) * anchor_w,
                np.exp(out[a, 3]) * anchor_h,
                *out[a, 4:],
            ], -1).reshape(h * w, -1)
            ours = detections[offset + a * h * w: offset + (a + 1) * h * w]
            assert_close_to_darknet(ours, expected, f"{case} layer {meta['layer_index']} anchor {a}")
        offset += len(meta["mask"]) * h * w
    assert offset == detections.shape[0]


@pytest.mark.parametrize("case", CASES)
def test_load_then_save_is_byte_identical(case, tmp_path):
    folder, _, model, _ = load_case(case)
    out = tmp_path / "out.weights"
    model.save_darknet_weights(out)
    assert out.read_bytes() == (folder / "model.weights").read_bytes()


def test_file_written_by_darknet_round_trips_with_its_header(tmp_path):
    folder = shared_path("darknet-vectors", "yolov3-tiny")
    index = json.loads((folder / "index.json").read_text())
    model = Darknet(folder / "model.cfg")
    header = model.load_darknet_weights(folder / "darknet_saved.weights")
    saved = index["darknet_saved_header"]
    assert (header.major, header.minor, header.revision, header.seen) == (
        saved["major"], saved["minor"], saved["revision"], saved["seen"])
    out = tmp_path / "again.weights"
    model.save_darknet_weights(out)
    assert out.read_bytes() == (folder / "darknet_saved.weights").read_bytes()


FILTERS_FREE_KEYS = ("size", "stride", "pad", "batch_normalize", "activation", "layers", "from", "mask", "anchors",
                     "num", "groups", "group_id")


@pytest.mark.parametrize("case", CASES)
def test_shipped_cfg_has_darknets_topology(case):
    """cfg/<case>.cfg is the full-size network whose reduced copy Darknet parsed: same layers, same wiring."""
    reduced = Darknet(shared_path("darknet-vectors", case, "model.cfg"))
    ours = Darknet(REPO / "cfg" / f"{case}.cfg")
    assert [b.name for b in ours.blocks] == [b.name for b in reduced.blocks]
    for mine, theirs in zip(ours.blocks, reduced.blocks):
        for key in FILTERS_FREE_KEYS:
            if key in theirs.values:
                assert mine[key] == theirs[key], f"{mine.where(key)}: {key}"
    for mine, theirs in zip(ours.layers, reduced.layers):
        assert mine.sources == theirs.sources

"""Model behaviour: output layout and decoding (spec §4), Darknet layer semantics, fuse, summary."""
import copy
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from models import Darknet
from utils.darknet.model import ForwardError
from tests.cfgs import conv, head
from tests.conftest import REPO, randomize
from utils.darknet.checkpoint import save_model

HEAD = """
[convolutional]
filters={filters}
size=1
activation={activation}

[yolo]
mask=1,2
anchors=4,6, 10,14, 20,30
classes=2
num=3
{extra}
"""


def head_model(write_cfg, extra="", activation="linear"):
    model = Darknet(write_cfg(HEAD.format(filters=14, activation=activation, extra=extra))).eval()
    return randomize(model, seed=7)


def test_eval_output_order_and_decode_formula(write_cfg):
    model = head_model(write_cfg)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        raw = model.forward_heads(x)[0]
        out = model(x)
    batch, _, height, width = raw.shape
    assert out.shape == (2, 2 * height * width, 7)
    anchors = [(10, 14), (20, 30)]  # mask 1,2
    stride_y, stride_x = 64 / height, 96 / width
    for b, a, row, col in [(0, 0, 0, 0), (1, 1, 5, 7), (0, 1, height - 1, width - 1)]:
        t = raw[b, a * 7:(a + 1) * 7, row, col]
        n = a * height * width + row * width + col
        expected = [(col + torch.sigmoid(t[0])) * stride_x, (row + torch.sigmoid(t[1])) * stride_y,
                    torch.exp(t[2]) * anchors[a][0], torch.exp(t[3]) * anchors[a][1], *torch.sigmoid(t[4:])]
        torch.testing.assert_close(out[b, n], torch.stack(expected))


def test_scale_x_y_is_applied_as_darknet_does(write_cfg):
    model = head_model(write_cfg, extra="scale_x_y=1.2")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        raw = model.forward_heads(x)[0]
        out = model(x)
    t = raw[0, 0:7, 2, 3]
    expected_x = (3 + torch.sigmoid(t[0]) * 1.2 - 0.1) * 1.0
    torch.testing.assert_close(out[0, 2 * 32 + 3, 0], expected_x)
    activated = model.yolo_layers[0].activate(raw)
    torch.testing.assert_close(activated[0, 1, 2, 3], torch.sigmoid(t[1]) * 1.2 - 0.1)
    torch.testing.assert_close(activated[0, 2, 2, 3], t[2])  # w, h stay raw, as in Darknet's output


def test_new_coords_decoding(write_cfg):
    model = head_model(write_cfg, extra="scale_x_y=2.0\nnew_coords=1", activation="logistic")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        raw = model.forward_heads(x)[0]
        out = model(x)
    t = raw[0, 7:14, 4, 5]  # anchor 1
    n = 16 * 16 + 4 * 16 + 5
    expected = torch.stack([5 + t[0] * 2 - 0.5, 4 + t[1] * 2 - 0.5, (t[2] * 2) ** 2 * 20, (t[3] * 2) ** 2 * 30,
                            *t[4:]])
    torch.testing.assert_close(out[0, n], expected)


def test_train_mode_returns_raw_heads(write_cfg):
    model = head_model(write_cfg).train()
    heads = model(torch.rand(2, 3, 32, 32))
    assert isinstance(heads, list) and heads[0].shape == (2, 14, 32, 32)


def test_maxpool_size_2_stride_1_keeps_size_like_darknet(write_cfg):
    model = Darknet(write_cfg("[maxpool]\nsize=2\nstride=1\n"))
    x = torch.randn(1, 2, 5, 5)
    out = model.layers[0](x)
    assert out.shape == x.shape
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=-np.inf)
    expected = np.maximum.reduce([padded[..., :5, :5], padded[..., 1:, :5], padded[..., :5, 1:], padded[..., 1:, 1:]])
    assert np.array_equal(out.numpy(), expected)


def test_maxpool_spp_and_stride_2_shapes(write_cfg):
    model = Darknet(write_cfg("[maxpool]\nsize=5\nstride=1\n\n[maxpool]\nsize=2\nstride=2\n"))
    x = torch.randn(1, 2, 13, 13)
    spp = model.layers[0](x)
    assert spp.shape == x.shape
    assert spp[0, 0, 0, 0] == x[0, 0, :3, :3].max()  # window starts at -2: -inf padding never wins
    assert model.layers[1](x).shape[-1] == 7  # (13 + 1 - 2) // 2 + 1, Darknet's formula


@pytest.mark.parametrize("size,stride,padding", [(2, 2, -1), (2, 1, -1), (3, 2, -1), (5, 1, -1), (3, 2, 0),
                                                 (1, 2, -1), (2, 2, 2), (4, 3, -1)])
@pytest.mark.parametrize("side", [7, 8, 13, 16])
def test_maxpool_skips_padding_only_where_no_window_reads_it(write_cfg, size, stride, padding, side):
    """The output is Darknet's, padded or not: each window's max over its cells inside the map."""
    model = Darknet(write_cfg(f"[maxpool]\nsize={size}\nstride={stride}\npadding={padding}\n"))
    x = torch.randn(1, 2, side, side + 1)
    total = size - 1 if padding < 0 else padding
    before = total // 2
    padded = torch.nn.functional.pad(x, (before, total - before, before, total - before), value=float("-inf"))
    expected = torch.nn.functional.max_pool2d(padded, size, stride)
    assert torch.equal(model.layers[0](x), expected)
    # channels-last without grad: the inference path (window_max), which must agree bit for bit
    assert torch.equal(model.layers[0](x.contiguous(memory_format=torch.channels_last)), expected)


@pytest.mark.parametrize("size,stride", [(2, (2, 2)), (2, (1, 1)), (3, (1, 2)), (2, (3, 1)), (5, (1, 1)),
                                         (13, (1, 1)), (4, (4, 2))])
def test_window_max_is_max_pool2d_exactly(size, stride):
    from utils.darknet.layers.pool import window_max
    x = torch.randn(3, 6, 17, 14, generator=torch.Generator().manual_seed(size)).contiguous(
        memory_format=torch.channels_last)
    x[0, 0, :4, :4] = float("-inf")  # padding cells
    out = window_max(x, size, stride)
    assert torch.equal(out, torch.nn.functional.max_pool2d(x, size, stride))
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("size,stride", [(2, (2, 2)), (2, (1, 1)), (3, (2, 2)), (5, (1, 1)), (3, (1, 2))])
@pytest.mark.parametrize("ties", [False, True])
def test_training_pool_of_an_nchw_map_matches_max_pool2d_and_its_gradient(size, stride, ties):
    from utils.darknet.layers.pool import ChannelsLastMaxPool
    g = torch.Generator().manual_seed(size)
    x = torch.randn(2, 5, 15, 12, generator=g)
    if ties:  # few distinct values: which of the equal cells gets the gradient must match too
        x = x.mul(1.5).round()
    grad = torch.randn(torch.nn.functional.max_pool2d(x, size, stride).shape, generator=g)
    outputs, gradients = [], []
    for pool in (lambda t: torch.nn.functional.max_pool2d(t, size, stride),
                 lambda t: ChannelsLastMaxPool.apply(t, size, stride)):
        leaf = x.clone().requires_grad_()
        out = pool(leaf)
        out.backward(grad)
        outputs.append(out)
        gradients.append(leaf.grad)
    assert torch.equal(outputs[0], outputs[1]) and outputs[1].is_contiguous()
    assert torch.equal(gradients[0], gradients[1]) and gradients[1].is_contiguous()


def test_maxpool_layer_takes_the_channels_last_pool_only_for_an_nchw_map_in_training(write_cfg, monkeypatch):
    from utils.darknet.layers import pool
    calls = []
    monkeypatch.setattr(pool.ChannelsLastMaxPool, "apply", lambda *args: calls.append(args[0].shape) or args[0])
    layer = Darknet(write_cfg("[maxpool]\nsize=2\nstride=2\n")).layers[0]
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    layer(x)
    layer(x.contiguous(memory_format=torch.channels_last))
    with torch.no_grad():
        layer(x)
    assert calls == [x.shape]
    # a trace (TorchScript, ONNX) keeps aten's max_pool2d, in training and at inference in channels-last
    for example in (x, x.detach().contiguous(memory_format=torch.channels_last)):
        traced = torch.jit.trace(layer, example)
        assert "aten::max_pool2d" in {node.kind() for node in traced.graph.nodes()}
    assert calls == [x.shape]


def test_route_groups_take_the_group_id_slice_of_each_input(write_cfg):
    model = Darknet(write_cfg("""
        [convolutional]
        filters=8
        size=1
        [convolutional]
        filters=4
        size=1
        [route]
        layers=-2,-1
        groups=2
        group_id=1
        """))
    assert model.layers[2].out_channels == 6
    a, b = torch.randn(1, 8, 4, 4), torch.randn(1, 4, 4, 4)
    assert torch.equal(model.layers[2]([a, b]), torch.cat([a[:, 4:], b[:, 2:]], 1))


def test_an_empty_batch_gives_no_detections_and_other_inputs_than_a_4d_tensor_are_named(write_cfg):
    model = head_model(write_cfg)
    for prepared in (False, True):
        if prepared:
            model.prepare_inference()
        assert model(torch.zeros(0, 3, 64, 64)).shape == (0, *model(torch.zeros(1, 3, 64, 64)).shape[1:])
        for wrong, got in ((torch.zeros(3, 64, 64), "shape (3, 64, 64)"), (np.zeros((1, 3, 64, 64)), "ndarray")):
            with pytest.raises(ForwardError, match=rf"the network takes a 4D tensor \(batch, 3, height, width\), "
                                                   rf"got {re.escape(got)}"):
                model(wrong)


def test_a_size_mismatch_says_why_at_this_input_size(write_cfg):
    model = Darknet(write_cfg(conv(filters=4, size=1) + """
        [maxpool]
        size=2
        stride=2
        [upsample]
        stride=2
        [route]
        layers=-1,-3
        """))
    with pytest.raises(ForwardError, match=r"layer 3 \[route\]: Sizes of tensors must match .*; the input is 31x32, "
                                           r"which the network's halvings cannot keep aligned: use multiples of 32"):
        model(torch.zeros(1, 3, 31, 32))
    for shape in ((1, 5, 32, 32), (1, 5, 31, 32)):  # another mistake than a size mismatch: no such hint
        with pytest.raises(ForwardError) as other:
            model(torch.zeros(shape))
        assert "channels" in str(other.value) and "the input is" not in str(other.value)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 8, 32, 32)
    thirds = Darknet(write_cfg(conv(filters=4, size=1) + "[maxpool]\nsize=3\nstride=3\n\n[upsample]\n"
                                                         "stride=3\n\n[route]\nlayers=-1,-3\n"))
    with pytest.raises(ForwardError, match=r"layer 3 \[route\]: Sizes of tensors must match .*; at the input 64x64 a "
                                           r"stride or pool of the cfg does not divide the map evenly"):
        thirds(torch.zeros(1, 3, 64, 64))  # a multiple of 32, not of 3: 66 against 64
    scales = Darknet(write_cfg(conv(filters=4, size=1) + "[maxpool]\nsize=2\nstride=2\n\n[route]\nlayers=-1,-2\n"))
    with pytest.raises(ForwardError) as every_size:  # a cfg mistake at any input: no advice about the input
        scales(torch.zeros(1, 3, 64, 64))
    message = str(every_size.value)
    assert "Sizes of tensors must match" in message and "the input" not in message
    assert message.endswith("; its inputs (channels x height x width): layer 1 4x32x32, layer 0 4x64x64")


def test_shortcut_with_fewer_channels_adds_to_the_leading_ones(write_cfg):
    model = Darknet(write_cfg("""
        [convolutional]
        filters=2
        size=1
        [convolutional]
        filters=5
        size=1
        [shortcut]
        from=-2
        activation=leaky
        """))
    prev, other = torch.randn(1, 5, 3, 3), torch.randn(1, 2, 3, 3)
    out = model.layers[2]([prev, other])
    expected = prev.clone()
    expected[:, :2] += other
    torch.testing.assert_close(out, torch.nn.functional.leaky_relu(expected, 0.1))


def test_upsample_is_nearest_neighbour(write_cfg):
    model = Darknet(write_cfg("[upsample]\nstride=2\n"))
    x = torch.arange(4.0).view(1, 1, 2, 2)
    assert model.layers[0](x)[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


@pytest.mark.parametrize("name,value,expected", [
    ("leaky", -2.0, -0.2), ("hard_mish", -1.0, -0.5), ("hard_mish", -3.0, 0.0), ("hard_mish", 2.0, 2.0),
    ("mish", 1.0, 1.0 * math.tanh(math.log1p(math.e))), ("swish", 1.0, 1 / (1 + math.exp(-1))),
    ("relu6", 7.0, 6.0), ("logistic", 0.0, 0.5),
])
def test_activations_follow_darknet(write_cfg, name, value, expected):
    model = Darknet(write_cfg(f"[convolutional]\nfilters=1\nsize=1\nactivation={name}\n"))
    act = model.layers[0].act
    assert act(torch.tensor([value])).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("cfg", ["res2net-yolov3-tiny", "res2net-triangle-yolov3-tiny", "yolov3-tiny",
                                 "yolov4-tiny"])
def test_fuse_keeps_outputs(cfg):
    model = randomize(Darknet(REPO / "cfg" / f"{cfg}.cfg"), seed=3, gain=0.9).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        after = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_prepare_inference_keeps_outputs_and_raw_heads():
    model = randomize(Darknet(REPO / "cfg" / "res2net-yolov3-tiny.cfg"), seed=4, gain=0.9).eval()
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        before, heads_before = model(x), model.forward_heads(x)
        model.prepare_inference()
        after, heads_after = model(x), model.forward_heads(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    for yolo, a, b in zip(model.yolo_layers, heads_after, heads_before):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(yolo.activate(a), yolo.activate(b), atol=1e-4, rtol=1e-4)


def _without_packing(model):
    from utils.darknet.layers import convolutions
    plain = copy.deepcopy(model)
    for conv in convolutions(plain):
        conv.packed = None
    return plain


def test_packed_weights_change_no_output_bit_and_follow_weight_changes(tmp_path):
    model = randomize(Darknet(REPO / "cfg" / "res2net-yolov3-tiny.cfg"), seed=6, gain=0.9).prepare_inference()
    x = torch.rand(2, 3, 96, 64)
    with torch.inference_mode():
        packed = model(x)
        assert torch.equal(packed, _without_packing(model)(x))
    conv = model.layers[0]
    assert conv.packed is not None and conv.packed.tensor is not None  # the first batch made the blocked copy
    with torch.no_grad():
        conv.conv.weight.mul_(0.5)  # written in place: the blocked copy must be remade
    with torch.inference_mode():
        changed = model(x)
        assert not torch.equal(changed, packed) and torch.equal(changed, _without_packing(model)(x))
    torch.save(copy.deepcopy(model), tmp_path / "model.pt")  # oneDNN tensors are neither copied nor saved


@pytest.mark.parametrize("shape,activation", [((3, (1, 2), 1, 4, 1), "leaky"), ((3, 1, 2, 1, 2), "relu"),
                                              ((5, 2, 2, 2, 1), "logistic"), ((1, 1, 0, 1, 1), "linear"),
                                              ((3, 1, 1, 8, 1), "mish")])
def test_packed_conv_matches_the_ordinary_one_for_strides_groups_dilations_and_activations(shape, activation):
    from utils.darknet.layers.base import ACTIVATIONS
    from utils.darknet.layers.conv import Convolutional, ConvShape
    conv = Convolutional(8, 16, ConvShape(*shape), None, ACTIVATIONS[activation]).eval()
    conv.to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 19, 17, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        ordinary = conv(x)
        conv.prepack()
        assert torch.equal(conv(x), ordinary) and conv.packed.tensor is not None


def test_packed_model_still_differentiates_outside_no_grad():
    model = randomize(Darknet(REPO / "cfg" / "yolov3-tiny.cfg"), seed=6, gain=0.9).prepare_inference()
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()  # autograd needs the ordinary conv: oneDNN's op has no backward
    assert x.grad is not None and model.layers[0].conv.weight.grad is not None


def test_half_precision_inference_stays_close_and_decodes_in_float32():
    model = randomize(Darknet(REPO / "cfg" / "res2net-yolov3-tiny.cfg"), seed=4, gain=0.9).eval()
    full = copy.deepcopy(model).prepare_inference()
    half = model.prepare_inference(half=True)
    x = torch.rand(2, 3, 96, 64)
    with torch.inference_mode():
        reference, out = full(x), half(x)
        heads = half.forward_heads(x)
    assert half.half_dtype == torch.bfloat16 and all(h.dtype == torch.bfloat16 for h in heads)
    assert out.dtype == torch.float32 and all(b.dtype == torch.float32 for y in half.yolo_layers for b in y.buffers())
    assert (out[..., :4] - reference[..., :4]).abs().max() < 1.0  # pixels
    assert (out[..., 4:] - reference[..., 4:]).abs().max() < 0.01


def _loss_and_gradients(model, x, targets):
    """The YOLO loss of ``x``, and the gradients of a smooth function of the heads (the loss's own jump
    wherever a prediction crosses ignore_thresh)."""
    from utils.training.loss import YOLOLoss
    model.zero_grad(set_to_none=True)
    heads = model(x)
    loss = YOLOLoss(model.yolo_layers)(heads, targets, tuple(x.shape[-2:])).total
    weights = torch.Generator().manual_seed(2)
    sum((h * torch.randn(h.shape, generator=weights, dtype=h.dtype)).sum() for h in heads).backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("cfg", ["res2net-yolov3-tiny", "yolov3-tiny"])
def test_prepare_training_keeps_the_loss_gradients_and_weights_file(cfg, tmp_path):
    plain = randomize(Darknet(REPO / "cfg" / f"{cfg}.cfg"), seed=5, gain=0.9).train()
    prepared = copy.deepcopy(plain).prepare_training()
    assert prepared.training and prepared.layers[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain.save_darknet_weights(tmp_path / "plain.weights")
    prepared.save_darknet_weights(tmp_path / "prepared.weights")
    assert (tmp_path / "prepared.weights").read_bytes() == (tmp_path / "plain.weights").read_bytes()
    x = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 7, 0.3, 0.6, 0.2, 0.2]])
    torch.testing.assert_close(_loss_and_gradients(prepared, x, targets)[0], _loss_and_gradients(plain, x, targets)[0],
                               atol=1e-4, rtol=1e-5)
    # Gradients in float64: in float32 rounding can move a max-pool's argmax between near-equal values, and
    # with it part of a gradient, in either layout.
    loss_plain, grads_plain = _loss_and_gradients(plain.double(), x.double(), targets)
    loss_prepared, grads_prepared = _loss_and_gradients(prepared.double(), x.double(), targets)
    assert prepared.layers[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(loss_prepared, loss_plain, atol=1e-10, rtol=1e-12)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_prepared[name], grad, atol=1e-10, rtol=1e-9, msg=name)

EXPECTED_HEADS = {  # cfg: yolo layer indices, anchors per head
    "yolov3": [82, 94, 106], "yolov3-spp": [89, 101, 113], "yolov3-tiny": [16, 23], "yolov4": [139, 150, 161],
    "yolov4-tiny": [30, 37], "res2net-yolov3": [36, 48, 60], "res2net-triangle-yolov3": [34, 44, 54],
    "res2net-yolov3-tiny": [14, 21], "res2net-triangle-yolov3-tiny": [14, 21],
}


@pytest.mark.parametrize("cfg", sorted(EXPECTED_HEADS))
def test_shipped_cfgs_build_and_run(cfg):
    model = Darknet(REPO / "cfg" / f"{cfg}.cfg").eval()
    heads = [i for i, layer in enumerate(model.layers) if layer in model.yolo_layers]
    assert heads == EXPECTED_HEADS[cfg]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    cells = sum(y.num_anchors * (64 // s) ** 2 for y, s in zip(model.yolo_layers, strides_of(model)))
    assert out.shape == (1, cells, 85)
    assert torch.isfinite(out).all()


def strides_of(model):
    with torch.no_grad():
        return [64 // h.shape[-1] for h in model.forward_heads(torch.zeros(1, 3, 64, 64))]


def test_yolov4_keeps_darknets_head_settings():
    model = Darknet(REPO / "cfg" / "yolov4.cfg")
    assert [y.scale_x_y for y in model.yolo_layers] == [1.2, 1.1, 1.05]
    assert all(y.loss.iou_loss == "ciou" for y in model.yolo_layers)
    assert sum(p.numel() for p in model.parameters()) == 64_363_101  # the published yolov4 figure


def test_summary_counts_params_and_darknet_flops(write_cfg):
    model = Darknet(write_cfg(conv(8, 3, 2) + "[maxpool]\nsize=2\nstride=2\n\n" + head(2, "1,1,2,2", "0,1")))
    from utils.darknet.summary import summarize
    rows = summarize(model, (64, 64))
    assert [r.output_shape for r in rows] == [(8, 32, 32), (8, 16, 16), (14, 16, 16), (14, 16, 16)]
    assert rows[0].flops == 2 * (3 * 3 * 3 * 8) * 32 * 32
    assert rows[2].flops == 2 * (8 * 14) * 16 * 16
    assert rows[1].flops == 2 * 2 * 8 * 16 * 16  # Darknet counts maxpool as size^2 * c * out_h * out_w
    assert rows[0].params == 3 * 3 * 3 * 8 + 2 * 8
    text = model.summary((64, 64))
    total = (2 * 216 * 1024 + 2 * 2 * 8 * 256 + 2 * 112 * 256) / 1e9
    assert f"{total:.3f} BFLOPs" in text and f"{216 + 16 + 112 + 14:,} parameters" in text


@pytest.mark.e2e
def test_summary_command_line():
    result = subprocess.run([sys.executable, "models.py", "--summary", "cfg/res2net-yolov3.cfg", "--img_size", "416"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    assert "61 layers, 46,474,966 parameters" in result.stdout
    bad = subprocess.run([sys.executable, "models.py", "--summary", "cfg/absent.cfg"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "cannot read cfg file" in bad.stderr


@pytest.mark.e2e
def test_summary_of_a_pth_and_with_a_backbone_file(tmp_path):
    model = randomize(Darknet(REPO / "cfg" / "yolov3-tiny.cfg"), seed=1)
    save_model(model, tmp_path / "m.pth")
    model.save_darknet_weights(tmp_path / "tiny.conv.8", cutoff=8)

    def summary(*args):
        return subprocess.run([sys.executable, "models.py", "--summary", *map(str, args)], cwd=REPO,
                              capture_output=True, text=True)
    own = summary(tmp_path / "m.pth")
    assert own.returncode == 0 and f"loaded {tmp_path / 'm.pth'} (its own cfg)" in own.stdout
    assert f"Total: 24 layers, {sum(p.numel() for p in model.parameters()):,} parameters" in own.stdout
    save_model(model, tmp_path / "trained.pth", trained={"options": {"img_size": 128}})
    assert "at 128x128 (width x height)" in summary(tmp_path / "trained.pth").stdout  # the size it runs at
    backbone = summary(REPO / "cfg" / "yolov3-tiny.cfg", "--weights", tmp_path / "tiny.conv.8")
    assert backbone.returncode == 0 and f"loaded {tmp_path / 'tiny.conv.8'}: version" in backbone.stdout
    both = summary(tmp_path / "m.pth", "--weights", tmp_path / "tiny.conv.8")
    assert both.returncode == 1 and "carries its own weights; drop one" in both.stderr
    weights_alone = summary(tmp_path / "tiny.conv.8")
    assert weights_alone.returncode == 1 and "expected a Darknet .cfg or a .pth; a Darknet weights file goes with " \
        "its cfg: --summary CFG --weights" in weights_alone.stderr

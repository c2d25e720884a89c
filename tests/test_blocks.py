"""[res2net] and [triangle] held to ../shared/spec/res2net-yolov3.md §2-3, independently of
utils/darknet/layers/res2net.py.

The weights are written by hand in the spec's stream order, and the expected output is computed by a
functional forward written from the spec's steps, so neither the tensor order nor the block's wiring
is checked against itself.
"""
import re
import struct
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import Darknet
from utils.darknet.cfg import CfgError


def spec_conv_bn(rng, cin, cout, k, stream):
    """Append one conv+BN in the spec's order: BN bias, weight, mean, var, then the conv weight."""
    p = {
        "beta": rng.normal(0, 0.1, cout), "gamma": rng.uniform(0.5, 1.5, cout),
        "mean": rng.normal(0, 0.1, cout), "var": rng.uniform(0.5, 2.0, cout),
        "w": rng.normal(0, 1 / np.sqrt(cin * k * k), (cout, cin, k, k)),
    }
    stream += [p["beta"], p["gamma"], p["mean"], p["var"], p["w"].ravel()]
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in p.items()}


def apply_conv_bn(x, p, stride=1, pad=0, leaky=True):
    y = F.conv2d(x, p["w"], stride=stride, padding=pad)
    y = (y - p["mean"].view(1, -1, 1, 1)) / torch.sqrt(p["var"].view(1, -1, 1, 1) + 1e-5)
    y = y * p["gamma"].view(1, -1, 1, 1) + p["beta"].view(1, -1, 1, 1)
    return F.leaky_relu(y, 0.1) if leaky else y


class Block(NamedTuple):
    kind: str
    inplanes: int
    planes: int
    scale: int
    base_width: int
    stride: int
    stype: str


def spec_block(block: Block, seed=0):
    """Returns (stream of floats in spec order, spec forward function, output channels)."""
    kind, inplanes, planes, scale, base_width, stride, stype = block
    rng = np.random.default_rng(seed)
    width = planes * base_width // 64
    nums = 1 if scale == 1 else scale - 1
    stream = []
    conv1 = spec_conv_bn(rng, inplanes, width * scale, 1, stream)
    branches = [spec_conv_bn(rng, width, width, 3, stream) for _ in range(nums)]
    conv3 = downsample = None
    if kind == "res2net":
        conv3 = spec_conv_bn(rng, width * scale, planes * 2, 1, stream)
        if stride != 1 or inplanes != planes * 2:
            downsample = spec_conv_bn(rng, inplanes, planes * 2, 1, stream)

    def forward(x):
        groups = torch.split(apply_conv_bn(x, conv1), width, 1)
        outs, sp = [], None
        for i in range(nums):
            sp = groups[i] if i == 0 or stype == "stage" else sp + groups[i]
            sp = apply_conv_bn(sp, branches[i], stride, 1)
            outs.append(sp)
        if scale != 1:
            outs.append(F.avg_pool2d(groups[-1], 3, stride, 1) if stype == "stage" else groups[-1])
        out = torch.cat(outs, 1)
        if kind == "triangle":
            return out
        residual = x if downsample is None else apply_conv_bn(x, downsample, stride, 0, leaky=False)
        return apply_conv_bn(out, conv3, leaky=False) + residual

    out_channels = planes * 2 if kind == "res2net" else width * scale
    return np.concatenate(stream).astype("<f4"), forward, out_channels


CASES = [
    Block("res2net", 16, 8, 4, 26, 1, "normal"),   # keeps channels: no downsample
    Block("res2net", 8, 8, 4, 26, 1, "normal"),    # 8 -> 16 channels: downsample
    Block("res2net", 16, 8, 3, 32, 2, "stage"),    # stride 2: downsample and avg-pooled last group
    Block("res2net", 16, 8, 1, 64, 1, "normal"),   # scale 1: one branch, nothing left untouched
    Block("res2net", 20, 10, 5, 40, 1, "normal"),  # scale 5: four inner convs (the seed's range(3) would give three)
    Block("triangle", 12, 16, 4, 16, 1, "normal"),
    Block("triangle", 12, 16, 2, 32, 2, "stage"),
    Block("triangle", 12, 16, 1, 16, 1, "normal"),
]


@pytest.mark.parametrize("block", CASES, ids=lambda b: "-".join(map(str, b)))
def test_block_loads_spec_stream_and_computes_spec_forward(write_cfg, tmp_path, block):
    kind, inplanes, planes, scale, base_width, stride, stype = block
    cfg = write_cfg(f"""
        [net]
        width=16
        height=16
        channels={inplanes}

        [{kind}]
        inplanes={inplanes}
        planes={planes}
        scale={scale}
        base_width={base_width}
        stride={stride}
        stype={stype}
        """, net=False)
    floats, spec_forward, out_channels = spec_block(block)
    weights = tmp_path / "block.weights"
    weights.write_bytes(struct.pack("<3iq", 0, 2, 0, 0) + floats.tobytes())

    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights)  # refuses any length mismatch, so the counts agree too
    assert model.layers[0].out_channels == out_channels
    x = torch.rand(2, inplanes, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.layers[0](x)
        expected = spec_forward(x)
    assert ours.shape == expected.shape == (2, out_channels, 16 // stride, 16 // stride)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_defaults_match_the_spec_table(write_cfg):
    model = Darknet(write_cfg("""
        [convolutional]
        filters=64
        size=1
        [res2net]
        planes=32
        [triangle]
        planes=64
        """))
    res2net, triangle = model.layers[1], model.layers[2]
    assert res2net.split.widths == [32 * 26 // 64] * 4 and res2net.split.branch_filters == [32 * 26 // 64] * 3
    assert triangle.split.widths == [64 * 16 // 64] * 4
    assert res2net.downsample is None and triangle.out_channels == 64


@pytest.mark.parametrize("cfg,layers,params", [
    ("cfg/res2net-yolov3.cfg", 61, 46_474_966),
    ("cfg/res2net-triangle-yolov3.cfg", 55, 40_193_494),
])
def test_full_cfgs_have_the_spec_layer_and_parameter_counts(cfg, layers, params):
    model = Darknet(cfg)
    assert len(model.layers) == layers
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.img_size == (608, 608)
    assert [y.mask for y in model.yolo_layers] == [(6, 7, 8), (3, 4, 5), (0, 1, 2)]
    assert all(y.num_outputs == 85 for y in model.yolo_layers)


def test_res2net_backbone_taps_are_the_last_blocks_at_strides_8_and_16():
    model = Darknet("cfg/res2net-yolov3.cfg")
    routes = [layer for layer in model.layers if type(layer).__name__ == "Route" and len(layer.sources) == 2]
    taps = [layer.sources[1] for layer in routes]
    assert taps == [23, 14]
    for tap, following in zip(taps, (24, 15)):
        assert type(model.layers[tap]).__name__ == "Res2Net"
        assert model.layers[following].conv.stride == (2, 2)


def test_stride_without_stage_is_refused(write_cfg):
    with pytest.raises(CfgError, match="stride != 1 needs stype=stage"):
        Darknet(write_cfg("[res2net]\nplanes=8\nstride=2\n"))


def test_zero_width_is_refused(write_cfg):
    with pytest.raises(CfgError, match=r"floor\(2\*16/64\) is 0"):
        Darknet(write_cfg("[triangle]\nplanes=2\n"))


def test_pruned_widths_build_unequal_groups(write_cfg):
    model = Darknet(write_cfg("""
        [convolutional]
        filters=16
        size=1
        [res2net]
        planes=8
        widths=3,5,2,4
        branch_filters=5,2,6
        filters=16
        [triangle]
        planes=16
        scale=3
        stype=stage
        widths=4,1,7
        branch_filters=3,2
        """))
    res2net, triangle = model.layers[1], model.layers[2]
    assert res2net.split.conv1.conv.out_channels == 14 and res2net.split.out_channels == 5 + 2 + 6 + 4
    assert [c.conv.in_channels for c in res2net.split.convs] == [3, 5, 2]
    assert res2net.downsample is None and res2net.out_channels == 16
    assert triangle.out_channels == 3 + 2 + 7
    with torch.no_grad():
        out = triangle(res2net(model.layers[0](torch.rand(1, 3, 16, 16))))
    assert out.shape == (1, 12, 16, 16)


@pytest.mark.parametrize("keys,message", [
    ("widths=3,5,2", "widths needs 4 positive values"),
    ("widths=3,5,2,4\nbranch_filters=5,2", "branch_filters needs 3 positive values"),
    ("widths=3,5,2,4\nbranch_filters=4,2,6", "branch 0 outputs 4 channels but is added to group 1 of 5"),
    ("downsample=0\nfilters=12", "downsample=0 needs stride 1 and inplanes (16) == filters (12)"),
])
def test_pruned_keys_are_validated(write_cfg, keys, message):
    with pytest.raises(CfgError, match=re.escape(message)):
        Darknet(write_cfg(f"[convolutional]\nfilters=16\nsize=1\n[res2net]\nplanes=8\n{keys}\n"))

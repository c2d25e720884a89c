"""Deformable convolution (deform=1|2 on [convolutional]) against a direct reference: explicit bilinear
sampling, tap by tap, as the CUDA kernels of detectron2 and mmcv compute it."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from models import Darknet
from tests.cfgs import conv
from tests.conftest import randomize
from utils.darknet.cfg import CfgError
from utils.darknet.layers.deform import DeformConv2d
from utils.darknet.summary import summarize


def bilinear(image: torch.Tensor, y: float, x: float) -> float:
    """Zero outside the image; each of the four neighbours counts only if it lies inside."""
    height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    value = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * float(image[yy, xx])
    return value


def reference(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, conv: DeformConv2d) -> torch.Tensor:
    weight, bias, deform_groups = conv.weight, conv.bias, conv.deform_groups
    n, c, _, _ = x.shape
    out_c, c_per_group, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    taps = kh * kw
    out = torch.zeros(n, out_c, ho, wo, dtype=torch.float64)
    for b in range(n):
        for o in range(out_c):
            first = o // (out_c // conv.groups) * c_per_group
            for i in range(ho):
                for j in range(wo):
                    total = float(bias[o]) if bias is not None else 0.0
                    for ci in range(c_per_group):
                        channel = first + ci
                        g = channel // (c // deform_groups)
                        for ki in range(kh):
                            for kj in range(kw):
                                k = ki * kw + kj
                                dy = float(offset[b, g * 2 * taps + 2 * k, i, j])
                                dx = float(offset[b, g * 2 * taps + 2 * k + 1, i, j])
                                y = i * conv.stride[0] - conv.padding[0] + ki * conv.dilation[0] + dy
                                xx = j * conv.stride[1] - conv.padding[1] + kj * conv.dilation[1] + dx
                                m = float(mask[b, g * taps + k, i, j]) if mask is not None else 1.0
                                total += float(weight[o, ci, ki, kj]) * m * bilinear(x[b, channel], y, xx)
                    out[b, o, i, j] = total
    return out.float()


@pytest.mark.parametrize("modulated,stride,dilation,groups,deform_groups", [
    (False, 1, 1, 1, 1), (True, 1, 1, 1, 2), (False, 2, 1, 2, 2), (True, 2, 2, 1, 1)])
def test_deformable_conv_equals_explicit_bilinear_sampling(modulated, stride, dilation, groups, deform_groups):
    torch.manual_seed(0)
    plain = nn.Conv2d(4, 6, 3, stride, dilation, dilation, groups, bias=True)
    conv = DeformConv2d(plain, modulated, deform_groups)
    with torch.no_grad():
        conv.offset.weight.normal_(0, 0.6)  # offsets of a few pixels, many reaching past the border
        conv.offset.bias.normal_(0, 1.0)
    x = torch.rand(2, 4, 7, 6)
    with torch.no_grad():
        predicted = conv.offset(x)
        shifts = 2 * deform_groups * 9
        mask = torch.sigmoid(predicted[:, shifts:]) if modulated else None
        expected = reference(x, predicted[:, :shifts], mask, conv)
        got = conv(x)
    assert predicted[:, :shifts].abs().max() > 2
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_zero_offsets_give_the_plain_conv_and_gradients_reach_the_offsets():
    torch.manual_seed(1)
    plain = nn.Conv2d(8, 5, 3, 2, 1, bias=False)
    x = torch.rand(2, 8, 11, 9, requires_grad=True)
    v1, v2 = DeformConv2d(plain, False, 2), DeformConv2d(plain, True, 2)
    expected = plain(x)
    torch.testing.assert_close(v1(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v2(x), 0.5 * expected, atol=1e-5, rtol=1e-5)  # detectron2's start: masks at 0.5
    v1(x).square().sum().backward()
    assert v1.offset.weight.grad.abs().sum() > 0 and v1.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def deform_cfg(deform: int, groups: int) -> str:
    """A ReLU conv, then a stride-2 one with ``deform=`` and ``deform_groups=``."""
    return conv(8, activation="relu") + conv(8, stride=2, activation="relu",
                                             extra=f"deform={deform}\ndeform_groups={groups}")


def test_deformable_cfg_layer_weights_order_and_checks(write_cfg, tmp_path):
    model = randomize(Darknet(write_cfg(deform_cfg(2, 2))), seed=3).eval()
    layer = model.layers[1]
    assert layer.deformable and layer.conv.modulated and layer.conv.offset.out_channels == 3 * 2 * 9
    assert "dcn2" in layer.describe() and not layer.prunable and layer.reads_whole_input
    model.save_darknet_weights(tmp_path / "dcn.weights")
    floats = torch.from_numpy(np.fromfile(tmp_path / "dcn.weights", "<f4", offset=20))
    bn = layer.bn
    order = [layer.conv.offset.bias, layer.conv.offset.weight, bn.bias, bn.weight, bn.running_mean, bn.running_var,
             layer.conv.weight]
    first = sum(t.numel() for t in model.layers[0].darknet_tensors())
    torch.testing.assert_close(floats[first:], torch.cat([t.detach().flatten() for t in order]))
    again = Darknet(model.cfg).eval()
    again.load_darknet_weights(tmp_path / "dcn.weights")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
        before = model(x)
        model.fuse()
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    with pytest.raises(CfgError, match=r"layer 1 \[convolutional\]: deform_groups=3 must divide the 8 input channels"):
        Darknet(write_cfg(deform_cfg(1, 3)))
    with pytest.raises(CfgError, match="key 'deform' must be one of 0, 1, 2"):
        Darknet(write_cfg(deform_cfg(3, 1)))
    with pytest.raises(CfgError, match="deform_groups= needs deform=1 or 2"):
        Darknet(write_cfg(deform_cfg(0, 2)))


def test_a_deformable_conv_counts_its_offset_conv_flops(write_cfg):
    plain = Darknet(write_cfg(deform_cfg(0, 1), "plain.cfg"))
    deformable = Darknet(write_cfg(deform_cfg(1, 1), "dcn.cfg"))
    plain_flops = summarize(plain.eval(), (16, 16))[1].flops
    assert summarize(deformable.eval(), (16, 16))[1].flops == plain_flops * (8 + 18) // 8  # 18 offset filters

"""convert.py --import_imagenet: small reference networks written here in plain PyTorch, with the sources'
structure and key names (torchvision's resnet.py, pretrainedmodels' senet.py, IBN-Net's resnet_ibn.py, the
Res2Net reference res2net.py), imported onto the tiny cfgs; the features after every stage must agree."""
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convert
from models import Darknet
from tests.conftest import REPO, randomize
from utils.conversion.imagenet import IMAGENET_MEAN, IMAGENET_STD
from utils.darknet.checkpoint import load_pretrained
from utils.darknet.model import layer_of

STEM, PLANES, BLOCKS = 32, (32, 64, 128, 256), (1, 2, 2, 1)  # the tiny cfgs' backbone


def downsample(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


class BasicBlock(nn.Module):  # torchvision
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, **_):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample(inplanes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class IBN(nn.Module):  # IBN-Net
    def __init__(self, planes):
        super().__init__()
        self.half = int(planes * 0.5)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        first, second = torch.split(x, self.half, 1)
        return torch.cat((self.IN(first.contiguous()), self.BN(second.contiguous())), 1)


class Bottleneck(nn.Module):  # torchvision (stride in the 3x3), or IBN-Net's Bottleneck_IBN with ibn=True
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, groups=1, base_width=64, ibn=False):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = IBN(width) if ibn else nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample(inplanes, planes * 4, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class SEModule(nn.Module):  # pretrainedmodels senet.py
    def __init__(self, channels, reduction):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, padding=0)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, padding=0)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(self.avg_pool(x)))))


class SEResNetBottleneck(nn.Module):  # stride in conv1 (Caffe)
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, reduction=4, **_):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(planes * 4, reduction)
        self.downsample = downsample(inplanes, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se_module(self.bn3(self.conv3(out)))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottle2neck(nn.Module):  # the Res2Net reference
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, base_width=26, scale=4, **options):
        super().__init__()
        stype = options.get("stype", "normal")
        width = int(planes * base_width / 64.0)
        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = 1 if scale == 1 else scale - 1
        self.pool = nn.AvgPool2d(3, stride, 1) if stype == "stage" else None
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(self.nums))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(self.nums))
        self.conv3 = nn.Conv2d(width * scale, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample(inplanes, planes * 4, stride)
        self.width, self.scale, self.stype = width, scale, stype

    def forward(self, x):
        spx = torch.split(F.relu(self.bn1(self.conv1(x))), self.width, 1)
        outs = []
        for i in range(self.nums):
            sp = spx[i] if i == 0 or self.stype == "stage" else sp + spx[i]
            sp = F.relu(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        outs.append(self.pool(spx[self.nums]) if self.stype == "stage" else spx[self.nums])
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision's layout (conv1, bn1, maxpool, layer1..4, fc); ``caffe_stem`` gives pretrainedmodels' layer0."""

    def __init__(self, block, caffe_stem=False, **block_options):
        super().__init__()
        if caffe_stem:
            self.layer0 = nn.Sequential(OrderedDict([
                ("conv1", nn.Conv2d(3, STEM, 7, 2, 3, bias=False)), ("bn1", nn.BatchNorm2d(STEM)),
                ("relu1", nn.ReLU(inplace=True)), ("pool", nn.MaxPool2d(3, 2, ceil_mode=True))]))
        else:
            self.conv1 = nn.Conv2d(3, STEM, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(STEM)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes, stages = STEM, []
        for stage, (planes, count) in enumerate(zip(PLANES, BLOCKS)):
            blocks = []
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                extra = {"stype": "stage" if i == 0 else "normal"} if block is Bottle2neck else {}
                options = {k: v for k, v in block_options.items() if k != "ibn_stages"}
                if "ibn_stages" in block_options:
                    options["ibn"] = stage in block_options["ibn_stages"]
                blocks.append(block(inplanes, planes, stride, **options, **extra))
                inplanes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(inplanes, 10)

    def stages(self, x):
        if hasattr(self, "layer0"):
            x = self.layer0(x)
        else:
            x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        outputs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outputs.append(x)
        return outputs


CASES = {
    "resnet18-yolov3-tiny": dict(block=BasicBlock),
    "resnet50-yolov3-tiny": dict(block=Bottleneck),
    "resnext50-yolov3-tiny": dict(block=Bottleneck, groups=4, base_width=16),
    "se-resnet50-yolov3-tiny": dict(block=SEResNetBottleneck, caffe_stem=True, reduction=4),
    "resnet50-ibn-a-yolov3-tiny": dict(block=Bottleneck, ibn_stages=(0, 1, 2)),
    "res2net50-yolov3-tiny": dict(block=Bottle2neck),
    "resnet50-dcn-yolov3-tiny": dict(block=Bottleneck),  # offsets start at 0: the plain ResNet's features
    "resnet50-fpn-yolov3-tiny": dict(block=Bottleneck),
}


def reference(name: str, seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    net = randomize(ResNet(**CASES[name]), seed=seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return net.eval()


def layer_outputs(model: Darknet, x: torch.Tensor) -> list[torch.Tensor]:
    outputs = [None] * len(model.layers)
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out))
             for i, layer in enumerate(model.layers)]
    try:
        model.forward_heads(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


NO_NORMALIZATION = ["--input_mean", "0", "0", "0", "--input_std", "1", "1", "1"]


def import_into(name: str, tmp_path, net: nn.Module, *extra: str) -> tuple[Darknet, int]:
    """The tiny cfg with ``net``'s weights imported through convert.py (a .pth backbone, loaded as train.py
    --pretrained_weights loads it), and the number of backbone layers."""
    torch.save({"state_dict": net.state_dict()}, tmp_path / "imagenet.pth")  # nested, as training scripts save
    out = tmp_path / "backbone.pth"
    cfg = REPO / "cfg" / f"{name}.cfg"
    assert convert.main(["--import_imagenet", str(tmp_path / "imagenet.pth"), "--model_def", str(cfg), str(out),
                         *extra]) == 0
    model = Darknet(cfg).eval()
    load_pretrained(model, out)
    state = torch.load(out, weights_only=True)
    layers = {layer_of(key) for key in state["model"]} - {None}
    return model, max(layers) + 1  # the backbone ends with a conv, whose tensors the file holds


@pytest.mark.parametrize("name", list(CASES))
def test_features_after_every_stage_equal_the_reference(name, tmp_path):
    net = reference(name)
    model, backbone_layers = import_into(name, tmp_path, net, *NO_NORMALIZATION)
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        expected = net.stages(x)
        outputs = layer_outputs(model, x)[:backbone_layers + 1]  # the last conv may be followed by its [shortcut]
    for stage, want in enumerate(expected, start=1):
        index = max(i for i, out in enumerate(outputs) if out is not None and out.shape == want.shape)
        torch.testing.assert_close(outputs[index], want, atol=2e-4, rtol=1e-4, msg=f"stage {stage}, layer {index}")
    assert index >= backbone_layers - 1  # the backbone file holds every conv of the last stage


def test_imagenet_normalisation_is_folded_into_the_first_conv(tmp_path):
    net = reference("resnet50-yolov3-tiny", seed=3)
    model, _ = import_into("resnet50-yolov3-tiny", tmp_path, net)
    x = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.relu(net.bn1(net.conv1((x - mean) / std)))
        got = model.layers[0](x)
    # the 7x7/2 conv's zero padding now pads black instead of the mean colour: outputs 2 from the edge agree
    torch.testing.assert_close(got[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=1e-4, rtol=1e-4)
    assert (got - expected).abs().max() > 1e-3  # and at the edge they do not, as stated


@pytest.mark.e2e
def test_weights_backbone_names_its_cutoff_and_trains_from_it(tmp_path):
    net = reference("se-resnet50-yolov3-tiny")
    torch.save(net.state_dict(), tmp_path / "se.pth")
    cfg = REPO / "cfg" / "se-resnet50-yolov3-tiny.cfg"
    result = convert_cli("--import_imagenet", tmp_path / "se.pth", "--model_def", cfg, tmp_path / "se.conv.9")
    assert result.returncode == 1 and ("the name says 9 layers (<net>.conv.N is read as layers 0..N-1, as train.py "
                                      "reads it), the backbone has 57; name it se.conv.57") in result.stderr
    result = convert_cli("--import_imagenet", tmp_path / "se.pth", "--model_def", cfg, tmp_path / "se.conv.57")
    assert result.returncode == 0, result.stderr
    assert "left out: fc.weight, fc.bias" in result.stdout and "--pretrained_weights" in result.stdout
    model = Darknet(cfg)
    assert "layers 0..56" in load_pretrained(model, tmp_path / "se.conv.57")
    torch.testing.assert_close(model.layers[3].conv.weight, net.layer1[0].conv2.weight)


def convert_cli(*args):
    return subprocess.run([sys.executable, "convert.py", *map(str, args)], cwd=REPO, capture_output=True, text=True)


def test_a_checkpoint_that_does_not_fit_is_refused_with_the_first_tensor_that_disagrees(tmp_path, capsys):
    torch.save(reference("resnet18-yolov3-tiny").state_dict(), tmp_path / "r18.pth")
    cfg = str(REPO / "cfg" / "resnet50-yolov3-tiny.cfg")
    assert convert.main(["--import_imagenet", str(tmp_path / "r18.pth"), "--model_def", cfg,
                         str(tmp_path / "out.weights")]) == 1
    err = capsys.readouterr().err
    assert "checkpoint tensor 'layer1.0.conv1.weight' has shape (32, 32, 3, 3)" in err
    assert "layer 2 [convolutional]" in err and "needs (32, 32, 1, 1)" in err
    assert not (tmp_path / "out.weights").exists()
    net = reference("resnet50-yolov3-tiny")
    state = net.state_dict()
    state["layer2.0.bn2.running_var"] = torch.ones(7)
    torch.save(state, tmp_path / "bad.pth")
    assert convert.main(["--import_imagenet", str(tmp_path / "bad.pth"), "--model_def", cfg,
                         str(tmp_path / "out.weights")]) == 1
    assert "'layer2.0.bn2.running_var' has shape (7,)" in capsys.readouterr().err
    for junk in (b"not a checkpoint", b"hello\n"):  # the second failed inside torch's unpickler with a KeyError
        (tmp_path / "junk.pth").write_bytes(junk)
        assert convert.main(["--import_imagenet", str(tmp_path / "junk.pth"), "--model_def", cfg,
                             str(tmp_path / "out.weights")]) == 1
        assert "junk.pth: not a readable checkpoint" in capsys.readouterr().err

"""Write the ImageNet-backbone detector cfgs (cfg/resnet*-yolov3*.cfg and relatives) from their definitions.

    python -m scripts.make_backbone_cfgs            # (re)writes every cfg below into cfg/
    python -m scripts.make_backbone_cfgs --check    # fails if a committed cfg differs from what this writes

Each backbone is laid out as its reference implementation orders its convs (conv1, conv2, conv3, [SE], the
projection shortcut), so ``convert.py --import_imagenet`` can match a checkpoint's tensors in order:

- torchvision ResNet / ResNeXt: stem 7x7/2 conv + 3x3/2 max pool, stride in the 3x3 conv (ResNet v1.5);
- SE-ResNet (Hu et al.; the Caffe models as pretrainedmodels' senet.py ports them): stride in the first 1x1
  (stride_in_1x1, MSRA/Caffe), ceil-mode stem max pool, SE after conv3's BN (reduction 16);
- IBN-Net's resnet50_ibn_a: IBN-a after conv1 of every block in stages 1-3, stride in the 3x3;
- Res2Net (res2net50_26w_4s): [res2net] blocks, 26w x 4s, conv3 to planes*4 (``filters=``), ReLU after the
  residual (``residual_activation=relu``), the first block of each stage ``stype=stage``;
- detectron2's deformable ResNet (DEFORM_ON_PER_STAGE False, True, True, True; v1; 1 deformable group).

Heads: YOLOv3's, on the last three stages (strides 8, 16, 32); the FPN cfgs put a [yolo] on each of P3-P7.
``-tiny`` variants keep the block types with one or two blocks per stage and narrow widths, for tests and demos.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from utils.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]
CLASSES = 80
YOLOV3_ANCHORS = "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326"

NET = """[net]
# Testing: batch=1, subdivisions=1
batch=64
subdivisions=16
width=416
height=416
channels=3
momentum=0.9
decay=0.0005
angle=0
saturation=1.5
exposure=1.5
hue=.1
learning_rate=0.001
burn_in=1000
max_batches=500200
policy=steps
steps=400000,450000
scales=.1,.1
"""


@dataclass(frozen=True)
class Backbone:
    """One ImageNet backbone: a stem, then four stages of ``blocks[i]`` residual blocks."""

    block: str  # basic | bottleneck | res2net
    blocks: tuple[int, int, int, int]
    stem: int = 64
    planes: tuple[int, int, int, int] = (64, 128, 256, 512)
    groups: int = 1  # ResNeXt cardinality
    base_width: int = 64  # bottleneck width per group at planes=64 (ResNeXt's 4 for 32x4d; Res2Net's 26)
    scale: int = 4  # Res2Net
    stride_in_1x1: bool = False
    se_reduction: int = 0  # 0: no SE
    ibn_stages: tuple[int, ...] = ()
    deform_stages: tuple[int, ...] = ()
    ceil_mode_pool: bool = False  # Caffe's stem max pool (pretrainedmodels' SENets)

    @property
    def expansion(self) -> int:
        return 1 if self.block == "basic" else 4


@dataclass
class CfgWriter:
    """Sections as text, and the Darknet index of the next layer."""

    parts: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, name: str, comment: str = "", **options) -> int:
        lines = ([f"# {comment}"] if comment else []) + [f"[{name}]"]
        lines += [f"{key}={value}" for key, value in options.items()]
        self.parts.append("\n".join(lines) + "\n")
        self.count += 1
        return self.count - 1

    def conv(self, filters: int, size: int, stride: int = 1, activation: str = "relu", bn: bool = True,
             **extra) -> int:
        options = {"batch_normalize": 1} if bn else {}
        options.update(filters=filters, size=size, stride=stride, pad=1, **extra, activation=activation)
        return self.add("convolutional", **options)

    def text(self, header: str) -> str:
        return header + NET + "\n" + "\n".join(self.parts)


def stem(out: CfgWriter, net: Backbone) -> None:
    out.parts.append("# stem: conv1 7x7/2, BN, ReLU; 3x3/2 max pool\n")
    out.conv(net.stem, 7, 2)
    # Darknet pads a max pool by `padding` in total, size-1 = 2 by default: torch's padding=1 on each side.
    # padding=1 puts it all after the input, which is Caffe's ceil_mode pooling without padding.
    out.add("maxpool", size=3, stride=2, **({"padding": 1} if net.ceil_mode_pool else {}))


def residual(out: CfgWriter, block_input: int, branch_end: int, channels: int, stride: int, in_channels: int) -> int:
    """The shortcut: the identity, or a projection (1x1 conv with stride, BN) routed from the block input."""
    if stride == 1 and in_channels == channels:
        return out.add("shortcut", **{"from": block_input - out.count, "activation": "relu"})
    out.add("route", layers=block_input - out.count)
    out.conv(channels, 1, stride, activation="linear")
    return out.add("shortcut", **{"from": branch_end - out.count, "activation": "relu"})


def squeeze_excitation(out: CfgWriter, channels: int, reduction: int) -> int:
    scaled = out.count - 1
    out.add("avgpool")
    out.conv(channels // reduction, 1, bn=False, activation="relu")
    out.conv(channels, 1, bn=False, activation="logistic")
    return out.add("scale_channels", **{"from": scaled - out.count})


def bottleneck(out: CfgWriter, net: Backbone, stage: int, stride: int, in_channels: int) -> int:
    planes = net.planes[stage]
    width = planes * net.base_width // 64 * net.groups
    block_input = out.count - 1
    first = {"normalize": "ibn"} if stage in net.ibn_stages else {}
    second = {"deform": 1} if stage in net.deform_stages else {}
    if net.groups > 1:
        second["groups"] = net.groups
    out.conv(width, 1, stride if net.stride_in_1x1 else 1, **first)
    out.conv(width, 3, 1 if net.stride_in_1x1 else stride, **second)
    branch_end = out.conv(planes * 4, 1, activation="linear")
    if net.se_reduction:
        branch_end = squeeze_excitation(out, planes * 4, net.se_reduction)
    return residual(out, block_input, branch_end, planes * 4, stride, in_channels)


def basic(out: CfgWriter, net: Backbone, stage: int, stride: int, in_channels: int) -> int:
    planes = net.planes[stage]
    block_input = out.count - 1
    out.conv(planes, 3, stride)
    branch_end = out.conv(planes, 3, activation="linear")
    return residual(out, block_input, branch_end, planes, stride, in_channels)


def res2net(out: CfgWriter, net: Backbone, stage: int, stride: int, first: bool) -> int:
    planes = net.planes[stage]
    return out.add("res2net", planes=planes, filters=planes * 4, scale=net.scale, base_width=net.base_width,
                   stride=stride, stype="stage" if first else "normal", activation="relu",
                   residual_activation="relu")


def backbone(out: CfgWriter, net: Backbone) -> list[int]:
    """Stem and stages; the index of each stage's last layer (C2 .. C5)."""
    stem(out, net)
    channels, ends = net.stem, []
    for stage, count in enumerate(net.blocks):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            comment = f"stage {stage + 1} (C{stage + 2}, stride {4 * 2 ** stage}): block {i + 1} of {count}"
            out.parts.append(f"# {comment}\n")
            if net.block == "res2net":
                end = res2net(out, net, stage, stride, i == 0)
            elif net.block == "basic":
                end = basic(out, net, stage, stride, channels)
            else:
                end = bottleneck(out, net, stage, stride, channels)
            channels = net.planes[stage] * net.expansion
        ends.append(end)
    return ends


def yolo(out: CfgWriter, mask: range, anchors: str, num: int) -> int:
    return out.add("yolo", mask=",".join(map(str, mask)), anchors=anchors, classes=CLASSES, num=num, jitter=".3",
                   ignore_thresh=".7", truth_thresh=1, random=1)


def yolov3_heads(out: CfgWriter, taps: list[int], widths: tuple[int, int, int], pairs: int) -> None:
    """YOLOv3's three heads: stride 32 first (mask 6,7,8), each fed by the one above, upsampled, and its tap."""
    for level, (tap, width) in enumerate(zip(reversed(taps), widths)):
        if level:
            out.add("route", layers=-4)
            out.conv(width, 1, activation="leaky")
            out.add("upsample", stride=2)
            out.add("route", layers=f"-1, {tap}")
        out.parts.append(f"# head {level + 1}: stride {32 // 2 ** level}\n")
        for _ in range(pairs):
            out.conv(width, 1, activation="leaky")
            out.conv(width * 2, 3, activation="leaky")
        out.conv(width, 1, activation="leaky")
        out.conv(width * 2, 3, activation="leaky")
        out.conv(3 * (CLASSES + 5), 1, bn=False, activation="linear")
        yolo(out, range(6 - 3 * level, 9 - 3 * level), YOLOV3_ANCHORS, 9)


def retinanet_anchors() -> str:
    """RetinaNet's rule, 3 per level: area (4 * stride)^2 (32^2 at P3 ... 512^2 at P7), aspect ratios
    1:2, 1:1, 2:1 (h / w) at that area."""
    pairs = []
    for stride in (8, 16, 32, 64, 128):
        size = 4 * stride
        for ratio in (0.5, 1.0, 2.0):
            pairs.append(f"{round(size / ratio ** 0.5)},{round(size * ratio ** 0.5)}")
    return ",  ".join(pairs)


def fpn(out: CfgWriter, taps: list[int], width: int) -> list[int]:
    """FPN on C3-C5 (1x1 laterals, nearest 2x top-down sums, 3x3 outputs) and RetinaNet's P6 (3x3/2 on C5) and
    P7 (3x3/2 after a ReLU); every FPN conv has BN and no activation (detectron2's FPN with norm=BN)."""
    c3, c4, c5 = taps[-3:]
    out.parts.append("# FPN: lateral 1x1 on C5, then top-down: upsample, lateral 1x1, add\n")
    top = out.conv(width, 1, activation="linear")
    merged = [top]
    for tap in (c4, c3):
        out.add("upsample", stride=2)
        out.add("route", layers=tap)
        out.conv(width, 1, activation="linear")
        merged.append(out.add("shortcut", **{"from": -3, "activation": "linear"}))
    levels = []
    for level, source in zip((3, 4, 5), reversed(merged)):
        out.add("route", layers=source, comment=f"P{level}: 3x3 output conv")
        levels.append(out.conv(width, 3, activation="linear"))
    out.add("route", layers=c5, comment="P6: 3x3/2 on C5; P7: 3x3/2 after a ReLU (RetinaNet)")
    levels.append(out.conv(width, 3, 2, activation="linear"))
    out.add("activation", activation="relu")
    levels.append(out.conv(width, 3, 2, activation="linear"))
    return levels


def fpn_heads(out: CfgWriter, levels: list[int], width: int) -> None:
    anchors = retinanet_anchors()
    for i, level in enumerate(levels):
        out.add("route", layers=level, comment=f"head on P{i + 3} (stride {8 * 2 ** i})")
        out.conv(width, 3, activation="leaky")
        out.conv(3 * (CLASSES + 5), 1, bn=False, activation="linear")
        yolo(out, range(3 * i, 3 * i + 3), anchors, 15)


@dataclass(frozen=True)
class Detector:
    name: str
    what: str
    net: Backbone
    heads: str = "yolov3"  # yolov3 | fpn
    head_widths: tuple[int, int, int] = (512, 256, 128)
    head_pairs: int = 2
    fpn_width: int = 256

    def text(self) -> str:
        out = CfgWriter()
        taps = backbone(out, self.net)
        if self.heads == "fpn":
            fpn_heads(out, fpn(out, taps, self.fpn_width), self.fpn_width)
        else:
            yolov3_heads(out, taps[1:], self.head_widths, self.head_pairs)
        header = (f"# {self.name}: {self.what}\n# Written by scripts/make_backbone_cfgs.py; regenerate rather than "
                  f"edit. ImageNet weights: convert.py --import_imagenet.\n\n")
        return out.text(header)


R50 = Backbone("bottleneck", (3, 4, 6, 3))
TINY = dict(stem=32, planes=(32, 64, 128, 256), blocks=(1, 2, 2, 1))
TINY_HEADS = dict(head_widths=(256, 128, 64), head_pairs=0)

DETECTORS = [
    Detector("resnet18-yolov3", "torchvision ResNet-18 (basic blocks) + YOLOv3 heads",
             Backbone("basic", (2, 2, 2, 2))),
    Detector("resnet50-yolov3", "torchvision ResNet-50 (v1.5: stride in the 3x3) + YOLOv3 heads", R50),
    Detector("resnet101-yolov3", "torchvision ResNet-101 + YOLOv3 heads", replace(R50, blocks=(3, 4, 23, 3))),
    Detector("resnext50-32x4d-yolov3", "torchvision ResNeXt-50 32x4d (grouped 3x3) + YOLOv3 heads",
             replace(R50, groups=32, base_width=4)),
    Detector("se-resnet50-yolov3", "SE-ResNet-50 (Caffe layout: stride in the first 1x1) + YOLOv3 heads",
             replace(R50, stride_in_1x1=True, se_reduction=16, ceil_mode_pool=True)),
    Detector("resnet50-ibn-a-yolov3", "IBN-Net ResNet-50-IBN-a + YOLOv3 heads", replace(R50, ibn_stages=(0, 1, 2))),
    Detector("res2net50-yolov3", "Res2Net-50 26w x 4s (the paper's ImageNet backbone) + YOLOv3 heads",
             Backbone("res2net", (3, 4, 6, 3), base_width=26)),
    Detector("resnet50-dcn-yolov3", "ResNet-50 with deformable 3x3 convs (v1) in stages 2-4 + YOLOv3 heads",
             replace(R50, deform_stages=(1, 2, 3))),
    Detector("resnet50-fpn-yolov3", "ResNet-50 + FPN P3-P7 (RetinaNet's P6/P7) + a [yolo] head per level", R50,
             heads="fpn"),
]
TINY_DETECTORS = [
    Detector("resnet18-yolov3-tiny", "resnet18-yolov3's blocks, narrow, for tests and demos",
             Backbone("basic", **TINY), **TINY_HEADS),
    Detector("resnet50-yolov3-tiny", "resnet50-yolov3's blocks, narrow, for tests and demos",
             Backbone("bottleneck", **TINY), **TINY_HEADS),
    Detector("resnext50-yolov3-tiny", "resnext50-32x4d-yolov3's blocks (4 groups of 4), narrow",
             Backbone("bottleneck", groups=4, base_width=16, **TINY), **TINY_HEADS),
    Detector("se-resnet50-yolov3-tiny", "se-resnet50-yolov3's blocks, narrow",
             Backbone("bottleneck", stride_in_1x1=True, se_reduction=4, ceil_mode_pool=True, **TINY),
             **TINY_HEADS),
    Detector("resnet50-ibn-a-yolov3-tiny", "resnet50-ibn-a-yolov3's blocks, narrow",
             Backbone("bottleneck", ibn_stages=(0, 1, 2), **TINY), **TINY_HEADS),
    Detector("res2net50-yolov3-tiny", "res2net50-yolov3's blocks, narrow",
             Backbone("res2net", base_width=26, **TINY), **TINY_HEADS),
    Detector("resnet50-dcn-yolov3-tiny", "resnet50-dcn-yolov3's blocks, narrow",
             Backbone("bottleneck", deform_stages=(1, 2, 3), **TINY), **TINY_HEADS),
    Detector("resnet50-fpn-yolov3-tiny", "resnet50-fpn-yolov3's blocks, narrow", Backbone("bottleneck", **TINY),
             heads="fpn", fpn_width=128),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed cfgs, write nothing")
    parser.add_argument("--out", default=str(REPO / "cfg"), help="folder to write into")
    args = parser.parse_args(argv)
    stale = []
    for detector in DETECTORS + TINY_DETECTORS:
        path = Path(args.out) / f"{detector.name}.cfg"
        text = detector.text()
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
            continue
        with atomic_write(path) as f:
            f.write(text.encode())
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run python -m scripts.make_backbone_cfgs): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

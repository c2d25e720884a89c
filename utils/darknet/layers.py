"""Darknet layer types as PyTorch modules, each declared once.

A layer class registered with :func:`register` carries everything the rest of the repo needs to
know about that layer type:

- ``cfg_keys``: the typed schema of its cfg section (:class:`utils.cfg.Key`);
- ``from_cfg(block, ctx)``: how it is built from a typed block, given the channels before it;
- ``out_channels``: set by the constructor;
- ``sources``: the absolute indices of the layers it reads (``None``: just the previous one);
- ``darknet_tensors()``: the tensors it owns in a ``.weights`` file, in file order.

Loading, saving, converting and pruning walk these declarations; nothing else knows a tensor order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.darknet.cfg import Block, CfgError, Key, float_list, int_list

NormLayer = Callable[[int], nn.Module]
ActivationFactory = Callable[[], nn.Module]


def batch_norm(channels: int) -> nn.BatchNorm2d:
    # eps 1e-5 equals AlexeyAB Darknet's sqrt(var + .00001) to float precision. Darknet's own rolling
    # momentum is 0.01; 0.03 lets short fine-tuning runs settle their running statistics.
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.03)


class HardMish(nn.Module):
    """Darknet's hard_mish: x for x > 0, x*x/2 + x on (-2, 0], 0 below."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


ACTIVATIONS: dict[str, ActivationFactory] = {
    "linear": nn.Identity,
    "leaky": lambda: nn.LeakyReLU(0.1, inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "hard_mish": HardMish,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": lambda: nn.GELU(approximate="tanh"),
}
ACTIVATION_KEY = tuple(ACTIVATIONS)


class DarknetLayer(nn.Module):
    """Base of every registered layer. Single-input layers take a tensor, others a list."""

    cfg_keys: ClassVar[dict[str, Key]] = {}
    out_channels: int
    sources: tuple[int, ...] | None = None

    @classmethod
    def from_cfg(cls, block: Block, ctx: BuildContext) -> DarknetLayer:
        raise NotImplementedError

    def darknet_tensors(self) -> list[torch.Tensor]:
        return []

    def describe(self) -> str:
        """A few words for the model summary: kernel and stride, sources, widths."""
        return f"from {','.join(map(str, self.sources))}" if self.sources else ""


LAYER_TYPES: dict[str, type[DarknetLayer]] = {}

BLOCK_INPUT = "input"  # in a plain expansion: the layer that feeds the expanded block


@dataclass
class PlainLayer:
    """One plain Darknet section of a block's expansion. In ``refs`` (route ``layers`` / shortcut ``from``),
    an int k is the k-th plain layer of the same expansion and BLOCK_INPUT is the block's input."""

    name: str
    options: dict[str, int | str]
    refs: tuple[int | str, ...] = ()


def register(name: str):
    def add(cls: type[DarknetLayer]) -> type[DarknetLayer]:
        LAYER_TYPES[name] = cls
        return cls
    return add


@dataclass
class BuildContext:
    """What a builder may know about the layers already built: their output channels."""

    channels: list[int]  # output channels of layers 0 .. index-1
    input_channels: int

    @property
    def previous_channels(self) -> int:
        return self.channels[-1] if self.channels else self.input_channels

    def resolve(self, block: Block, key: str, indices: Sequence[int]) -> tuple[int, ...]:
        """Darknet's layer references: negative is relative to this layer, otherwise absolute."""
        resolved = []
        for ref in indices:
            absolute = block.index + ref if ref < 0 else ref
            if not 0 <= absolute < block.index:
                raise block.error(f"{key}={ref} points to layer {absolute}; valid layers are "
                                  f"0 .. {block.index - 1}", key)
            resolved.append(absolute)
        if not resolved:
            raise block.error(f"{key} lists no layer", key)
        return tuple(resolved)


def activation_from(block: Block) -> ActivationFactory:
    return ACTIVATIONS[block["activation"]]


# ----------------------------------------------------------------------------------------------
# [convolutional]


@register("convolutional")
class Convolutional(DarknetLayer):
    """Darknet's convolutional layer: conv, then BN (the conv has no bias then) or a conv bias, then activation."""

    cfg_keys = {
        "filters": Key(int, 1),
        "size": Key(int, 1),
        "stride": Key(int, 1),
        "stride_x": Key(int, -1),
        "stride_y": Key(int, -1),
        "pad": Key(int, 0),
        "padding": Key(int, 0),
        "groups": Key(int, 1),
        "dilation": Key(int, 1),
        "batch_normalize": Key(int, 0, (0, 1)),
        "activation": Key(str, "logistic", ACTIVATION_KEY),
    }

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int | tuple[int, int] = 1,
                 padding: int = 0, groups: int = 1, dilation: int = 1, norm_layer: NormLayer | None = batch_norm,
                 activation: ActivationFactory = nn.Identity):
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                              bias=norm_layer is None)
        self.bn = norm_layer(out_channels) if norm_layer is not None else None
        self.act = activation()
        self.fused = False

    @classmethod
    def from_cfg(cls, block, ctx):
        in_channels = ctx.previous_channels
        for key in ("filters", "size", "stride", "groups", "dilation"):
            if block[key] < 1:
                raise block.error(f"{key} must be at least 1, got {block[key]}", key)
        if in_channels % block["groups"] or block["filters"] % block["groups"]:
            raise block.error(f"groups={block['groups']} must divide the {in_channels} input channels "
                              f"and the {block['filters']} filters", "groups")
        stride_y = block["stride_y"] if block["stride_y"] > 0 else block["stride"]
        stride_x = block["stride_x"] if block["stride_x"] > 0 else block["stride"]
        padding = block["size"] // 2 if block["pad"] else block["padding"]
        return cls(in_channels, block["filters"], block["size"], (stride_y, stride_x), padding, block["groups"],
                   block["dilation"], batch_norm if block["batch_normalize"] else None, activation_from(block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def darknet_tensors(self) -> list[torch.Tensor]:
        if self.fused:
            raise RuntimeError("a fused model has no BN tensors to write; save the model before fuse()")
        if self.bn is not None:
            return [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var, self.conv.weight]
        return [self.conv.bias, self.conv.weight]

    def describe(self) -> str:
        (kh, kw), (sy, sx) = self.conv.kernel_size, self.conv.stride
        stride = f"{sy}" if sy == sx else f"{sy}x{sx}"
        groups = f" g{self.conv.groups}" if self.conv.groups > 1 else ""
        return f"{kh}x{kw}/{stride}{groups}"

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BN into the conv for inference: w' = w * g / sqrt(v + eps), b' = beta - mean * g / sqrt(v + eps)."""
        if self.bn is None or self.fused:
            return
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = self.conv
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True).to(conv.weight.device, conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn, self.fused = fused, None, True


# ----------------------------------------------------------------------------------------------
# [shortcut] and [route]


@register("shortcut")
class Shortcut(DarknetLayer):
    """Sum of the previous layer and the ``from`` layers, optionally weighted (Darknet's weighted residuals).

    Inputs with fewer channels than the previous layer are added to its leading channels, as Darknet does.
    """

    cfg_keys = {
        "from": Key(int_list),
        "activation": Key(str, "linear", ACTIVATION_KEY),
        "weights_type": Key(str, "none", ("none", "per_feature", "per_channel")),
        "weights_normalization": Key(str, "none", ("none", "relu", "softmax")),
    }
    NORMALIZATION_EPS = 0.0001  # Darknet adds this to the sum of the input weights

    def __init__(self, sources: tuple[int, ...], channels: Sequence[int], activation: ActivationFactory = nn.Identity,
                 weights_type: str = "none", weights_normalization: str = "none"):
        super().__init__()
        self.sources = sources
        self.out_channels = channels[0]
        self.add_channels = tuple(min(c, channels[0]) for c in channels[1:])
        self.act = activation()
        self.weights_normalization = weights_normalization
        self.input_weights = None
        if weights_type != "none":
            per = channels[0] if weights_type == "per_channel" else 1
            self.input_weights = nn.Parameter(torch.ones(len(channels), per))

    @classmethod
    def from_cfg(cls, block, ctx):
        sources = (block.index - 1,) + ctx.resolve(block, "from", block["from"])
        channels = [ctx.channels[i] for i in sources]
        return cls(sources, channels, activation_from(block), block["weights_type"], block["weights_normalization"])

    def _normalized_weights(self) -> torch.Tensor:
        w = self.input_weights
        if self.weights_normalization == "relu":
            w = F.relu(w)
            return w / (w.sum(0, keepdim=True) + self.NORMALIZATION_EPS)
        if self.weights_normalization == "softmax":
            w = torch.exp(w - w.max(0, keepdim=True).values)
            return w / (w.sum(0, keepdim=True) + self.NORMALIZATION_EPS)
        return w

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        weights = None if self.input_weights is None else self._normalized_weights().view(len(xs), 1, -1, 1, 1)
        out = xs[0] if weights is None else xs[0] * weights[0]
        for k, (x, channels) in enumerate(zip(xs[1:], self.add_channels), start=1):
            term = x if weights is None else x * weights[k]
            if channels == self.out_channels and term.shape[1] == channels:
                out = out + term
            else:
                out = torch.cat([out[:, :channels] + term[:, :channels], out[:, channels:]], 1)
        return self.act(out)

    def darknet_tensors(self) -> list[torch.Tensor]:
        return [] if self.input_weights is None else [self.input_weights]


@register("route")
class Route(DarknetLayer):
    """Concatenation of layers; with ``groups=G group_id=i`` each input contributes its i-th of G channel slices."""

    cfg_keys = {
        "layers": Key(int_list),
        "groups": Key(int, 1),
        "group_id": Key(int, 0),
    }

    def __init__(self, sources: tuple[int, ...], channels: Sequence[int], groups: int = 1, group_id: int = 0):
        super().__init__()
        self.sources = sources
        self.groups, self.group_id = groups, group_id
        self.slices = tuple((c // groups * group_id, c // groups * (group_id + 1)) for c in channels)
        self.out_channels = sum(c // groups for c in channels)

    @classmethod
    def from_cfg(cls, block, ctx):
        sources = ctx.resolve(block, "layers", block["layers"])
        channels = [ctx.channels[i] for i in sources]
        groups, group_id = block["groups"], block["group_id"]
        if groups < 1 or not 0 <= group_id < groups:
            raise block.error(f"group_id={group_id} must lie in 0 .. groups-1 (groups={groups})", "group_id")
        for source, c in zip(sources, channels):
            if c % groups:
                raise block.error(f"layer {source} has {c} channels, not divisible by groups={groups}", "groups")
        return cls(sources, channels, groups, group_id)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if self.groups != 1:
            xs = [x[:, start:stop] for x, (start, stop) in zip(xs, self.slices)]
        return xs[0] if len(xs) == 1 else torch.cat(xs, 1)


# ----------------------------------------------------------------------------------------------
# resampling and pooling


@register("upsample")
class Upsample(DarknetLayer):
    """Nearest-neighbour upsampling by an integer stride; ``scale`` multiplies the result."""

    cfg_keys = {"stride": Key(int, 2), "scale": Key(float, 1.0)}

    def __init__(self, channels: int, stride: int = 2, scale: float = 1.0):
        super().__init__()
        self.out_channels, self.stride, self.scale = channels, stride, scale

    def describe(self) -> str:
        return f"x{self.stride}"

    @classmethod
    def from_cfg(cls, block, ctx):
        if block["stride"] < 1:
            raise block.error(f"stride must be a positive integer (Darknet's reverse upsampling is not supported), "
                              f"got {block['stride']}", "stride")
        return cls(ctx.previous_channels, block["stride"], block["scale"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return x * self.scale if self.scale != 1.0 else x


@register("maxpool")
class MaxPool(DarknetLayer):
    """Darknet's maxpool: ``padding`` is the total padding (default size-1), the window starts at -padding/2,
    and padded cells never win (they count as -inf). Output: (in + padding - size) // stride + 1."""

    cfg_keys = {
        "size": Key(int, -1),
        "stride": Key(int, 1),
        "stride_x": Key(int, -1),
        "stride_y": Key(int, -1),
        "padding": Key(int, -1),
        "maxpool_depth": Key(int, 0, (0,)),
        "antialiasing": Key(int, 0, (0,)),
    }

    def __init__(self, channels: int, size: int, stride: tuple[int, int], padding: int):
        super().__init__()
        self.out_channels, self.size, self.stride = channels, size, stride
        before = padding // 2
        self.pad = (before, padding - before, before, padding - before)

    def describe(self) -> str:
        return f"{self.size}x{self.size}/{self.stride[0]}"

    @classmethod
    def from_cfg(cls, block, ctx):
        stride = block["stride"]
        size = block["size"] if block["size"] > 0 else stride
        stride_y = block["stride_y"] if block["stride_y"] > 0 else stride
        stride_x = block["stride_x"] if block["stride_x"] > 0 else stride
        padding = block["padding"] if block["padding"] >= 0 else size - 1
        if min(size, stride_x, stride_y) < 1:
            raise block.error(f"size and stride must be positive, got size={size} stride={stride}")
        return cls(ctx.previous_channels, size, (stride_y, stride_x), padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


@register("avgpool")
class GlobalAvgPool(DarknetLayer):
    """Darknet's [avgpool]: the mean over all spatial positions, giving C x 1 x 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels

    @classmethod
    def from_cfg(cls, block, ctx):
        return cls(ctx.previous_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


@register("dropout")
class Dropout(DarknetLayer):
    """Darknet's [dropout]: identity at inference, inverted dropout (scale 1/(1-p)) in training."""

    cfg_keys = {
        "probability": Key(float, 0.5),
        "dropblock": Key(int, 0),
        "dropblock_size_rel": Key(float, 0.0),
        "dropblock_size_abs": Key(int, 0),
    }

    def __init__(self, channels: int, probability: float):
        super().__init__()
        self.out_channels = channels
        self.dropout = nn.Dropout(probability)

    @classmethod
    def from_cfg(cls, block, ctx):
        if not 0.0 <= block["probability"] < 1.0:
            raise block.error(f"probability must lie in [0, 1), got {block['probability']}", "probability")
        return cls(ctx.previous_channels, block["probability"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)


# ----------------------------------------------------------------------------------------------
# [yolo]


@register("yolo")
class YOLOLayer(DarknetLayer):
    """A detection head. Its input is the raw conv output ``(B, A*(5+classes), H, W)``, Darknet's layout.

    ``activate`` gives what Darknet's yolo layer stores as its output (logistic on x, y, objectness and
    classes; w, h raw); ``decode`` gives boxes in input pixels, ``(B, A*H*W, 5+classes)`` ordered by
    anchor, then row, then column. The loss-only keys are kept in ``loss_options``.
    """

    cfg_keys = {
        "mask": Key(int_list, None),
        "anchors": Key(float_list),
        "classes": Key(int, 20),
        "num": Key(int, 1),
        "scale_x_y": Key(float, 1.0),
        "new_coords": Key(int, 0, (0, 1)),
        "jitter": Key(float, 0.2),
        "ignore_thresh": Key(float, 0.5),
        "truth_thresh": Key(float, 1.0),
        "iou_thresh": Key(float, 1.0),
        "iou_thresh_kind": Key(str, "iou", ("iou", "giou", "diou", "ciou")),
        "iou_loss": Key(str, "mse", ("mse", "iou", "giou", "diou", "ciou")),
        "iou_normalizer": Key(float, 0.75),
        "obj_normalizer": Key(float, 1.0),
        "cls_normalizer": Key(float, 1.0),
        "delta_normalizer": Key(float, 1.0),
        "max_delta": Key(float, float("inf")),
        "label_smooth_eps": Key(float, 0.0),
        "objectness_smooth": Key(int, 0),
        "focal_loss": Key(int, 0),
        "random": Key(float, 0.0),
        "resize": Key(float, 1.0),
        "nms_kind": Key(str, "default", ("default", "greedynms", "diounms", "cornersnms")),
        "beta_nms": Key(float, 0.6),
        "max": Key(int, 200),
        "counters_per_class": Key(str, ""),
        "map": Key(str, ""),
        "track_history_size": Key(int, 5),
        "sim_thresh": Key(float, 0.8),
        "dets_for_track": Key(int, 1),
        "dets_for_show": Key(int, 1),
        "track_ciou_norm": Key(float, 0.01),
        "embedding_layer": Key(int, 0),
    }
    DECODE_KEYS = ("mask", "anchors", "classes", "num", "scale_x_y", "new_coords")

    def __init__(self, channels: int, anchors: torch.Tensor, mask: Sequence[int], num_classes: int,
                 scale_x_y: float = 1.0, new_coords: bool = False, loss_options: dict | None = None):
        super().__init__()
        self.out_channels = channels
        self.mask = tuple(mask)
        self.num_classes = num_classes
        self.num_outputs = 5 + num_classes
        self.scale_x_y, self.new_coords = scale_x_y, bool(new_coords)
        self.loss_options = dict(loss_options or {})
        self.register_buffer("all_anchors", anchors.reshape(-1, 2).float(), persistent=False)
        self.register_buffer("anchors", self.all_anchors[list(self.mask)].clone(), persistent=False)

    @classmethod
    def from_cfg(cls, block, ctx):
        anchors, num, classes = block["anchors"], block["num"], block["classes"]
        if len(anchors) % 2 or len(anchors) // 2 < num:
            raise block.error(f"anchors must hold num={num} (w,h) pairs: got {len(anchors)} values", "anchors")
        mask = block["mask"] if block["mask"] is not None else list(range(num))
        if not mask or any(not 0 <= m < num for m in mask):
            raise block.error(f"mask {mask} must index anchors 0 .. {num - 1}", "mask")
        if classes < 1:
            raise block.error(f"classes must be at least 1, got {classes}", "classes")
        expected = len(mask) * (classes + 5)
        if ctx.previous_channels != expected:
            raise block.error(f"the layer before has {ctx.previous_channels} filters; a [yolo] with {len(mask)} "
                              f"anchors and {classes} classes needs {len(mask)}*({classes}+5) = {expected}")
        loss_options = {k: v for k, v in block.values.items() if k not in cls.DECODE_KEYS}
        return cls(expected, torch.tensor(anchors[:2 * num]), mask, classes, block["scale_x_y"],
                   block["new_coords"], loss_options)

    @property
    def num_anchors(self) -> int:
        return len(self.mask)

    def describe(self) -> str:
        return f"mask {','.join(map(str, self.mask))}"

    def _split(self, raw: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = raw.shape
        return raw.view(batch, self.num_anchors, self.num_outputs, height, width)

    def _scale_xy(self, xy: torch.Tensor) -> torch.Tensor:
        if self.scale_x_y == 1.0:
            return xy
        return xy * self.scale_x_y - 0.5 * (self.scale_x_y - 1.0)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Darknet's [yolo] output tensor, same shape as ``raw``."""
        v = self._split(raw)
        if self.new_coords:  # the conv before already applied the logistic
            return torch.cat([self._scale_xy(v[:, :, :2]), v[:, :, 2:]], 2).view_as(raw)
        act = torch.sigmoid(v)
        return torch.cat([self._scale_xy(act[:, :, :2]), v[:, :, 2:4], act[:, :, 4:]], 2).view_as(raw)

    def decode(self, raw: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Boxes (cx, cy, w, h in input pixels), objectness and class scores: ``(B, A*H*W, 5+classes)``."""
        batch, _, height, width = raw.shape
        p = self._split(raw).permute(0, 1, 3, 4, 2)
        anchors = self.anchors.to(p.dtype).view(1, -1, 1, 1, 2)
        if self.new_coords:
            xy, wh, scores = self._scale_xy(p[..., :2]), (p[..., 2:4] * 2) ** 2 * anchors, p[..., 4:]
        else:
            xy, wh, scores = self._scale_xy(torch.sigmoid(p[..., :2])), torch.exp(p[..., 2:4]) * anchors, \
                torch.sigmoid(p[..., 4:])
        stride_y, stride_x = image_size[0] / height, image_size[1] / width
        grid_x = torch.arange(width, device=p.device, dtype=p.dtype).view(1, 1, 1, width)
        grid_y = torch.arange(height, device=p.device, dtype=p.dtype).view(1, 1, height, 1)
        cx = (grid_x + xy[..., 0]) * stride_x
        cy = (grid_y + xy[..., 1]) * stride_y
        boxes = torch.cat([cx.unsqueeze(-1), cy.unsqueeze(-1), wh, scores], -1)
        return boxes.view(batch, -1, self.num_outputs)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.activate(raw)


# ----------------------------------------------------------------------------------------------
# [res2net] and [triangle]


class HierarchicalSplit(nn.Module):
    """The part [res2net] and [triangle] share (spec §2, steps 1-5).

    conv1 (1x1) widens to ``sum(widths)`` channels, split into ``scale`` groups of ``widths``; each of the
    first ``nums`` groups goes through its own 3x3 conv (``branch_filters`` outputs) after adding the
    previous branch's output (unless ``stage``), and the outputs are concatenated with the last group,
    untouched (or avg-pooled for ``stage``). Unpruned blocks have every width and filter count equal.
    """

    def __init__(self, inplanes: int, widths: Sequence[int], branch_filters: Sequence[int], stride: int = 1,
                 stage: bool = False, norm_layer: NormLayer = batch_norm,
                 activation: ActivationFactory = ACTIVATIONS["leaky"]):
        super().__init__()
        self.widths, self.branch_filters = list(widths), list(branch_filters)
        self.scale, self.stage = len(self.widths), stage
        self.out_channels = sum(self.branch_filters) + (self.widths[-1] if self.scale != 1 else 0)
        self.conv1 = Convolutional(inplanes, sum(self.widths), 1, norm_layer=norm_layer, activation=activation)
        self.convs = nn.ModuleList(
            Convolutional(self.widths[i], filters, 3, stride, 1, norm_layer=norm_layer, activation=activation)
            for i, filters in enumerate(self.branch_filters))
        self.pool = nn.AvgPool2d(3, stride, 1) if stage and self.scale != 1 else None

    @property
    def uniform_width(self) -> int | None:
        """The common width of an unpruned block, None once pruning made the groups unequal."""
        sizes = set(self.widths) | set(self.branch_filters)
        return sizes.pop() if len(sizes) == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.conv1(x), self.widths, 1)
        outputs = []
        branch = groups[0]
        for i, conv in enumerate(self.convs):
            if i > 0:
                branch = groups[i] if self.stage else branch + groups[i]
            branch = conv(branch)
            outputs.append(branch)
        if self.scale != 1:
            outputs.append(self.pool(groups[-1]) if self.pool is not None else groups[-1])
        return torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]

    def darknet_tensors(self) -> list[torch.Tensor]:
        return [t for conv in (self.conv1, *self.convs) for t in conv.darknet_tensors()]

    def plain_layers(self, activation: str) -> list[PlainLayer]:
        """The same computation in plain Darknet layers, tensors in the same order: conv1; per branch a
        ``[route] groups=scale group_id=i`` slice, a ``[shortcut]`` adding the previous branch, the 3x3 conv;
        the last slice; one ``[route]`` concatenating them."""
        if self.stage:
            raise ValueError("stype=stage has a 3x3 average pool that plain Darknet layers cannot express")
        width = self.uniform_width
        if width is None:
            raise ValueError(f"unequal split widths {self.widths} (a pruned block) cannot be expressed with "
                             f"Darknet's equal [route] groups")

        def conv(filters: int, size: int) -> PlainLayer:
            return PlainLayer("convolutional", {"batch_normalize": 1, "filters": filters, "size": size,
                                                "stride": 1, "pad": 1, "activation": activation})

        layers = [conv(width * self.scale, 1)]
        outputs = []
        for i in range(len(self.convs)):
            layers.append(PlainLayer("route", {"groups": self.scale, "group_id": i}, (0,)))
            if i > 0:
                layers.append(PlainLayer("shortcut", {"activation": "linear"}, (outputs[-1],)))
            layers.append(conv(width, 3))
            outputs.append(len(layers) - 1)
        if self.scale != 1:
            layers.append(PlainLayer("route", {"groups": self.scale, "group_id": self.scale - 1}, (0,)))
            outputs.append(len(layers) - 1)
        if len(outputs) > 1:
            layers.append(PlainLayer("route", {}, tuple(outputs)))
        return layers


class _HierarchicalBlock(DarknetLayer):
    """cfg handling common to [res2net] and [triangle]."""

    split: HierarchicalSplit

    def describe(self) -> str:
        stride = self.split.convs[0].conv.stride[0]
        width = self.split.uniform_width
        return f"{self.split.scale}x{width if width else 'pruned'}/{stride}"

    @classmethod
    def _keys(cls, base_width: int) -> dict[str, Key]:
        return {
            "planes": Key(int),
            "inplanes": Key(int, -1),
            "scale": Key(int, 4),
            "base_width": Key(int, base_width),
            "stride": Key(int, 1),
            "stype": Key(str, "normal", ("normal", "stage")),
            "activation": Key(str, "leaky", ACTIVATION_KEY),
            # written by prune.py: the per-group split widths and per-branch conv filters of a pruned block
            "widths": Key(int_list, None),
            "branch_filters": Key(int_list, None),
        }

    @classmethod
    def _checked(cls, block: Block, ctx: BuildContext) -> dict:
        inplanes = ctx.previous_channels
        if block.given("inplanes") and block["inplanes"] != inplanes:
            raise block.error(f"inplanes={block['inplanes']} but the layer before outputs {inplanes} channels",
                              "inplanes")
        for key in ("planes", "scale", "base_width", "stride"):
            if block[key] < 1:
                raise block.error(f"{key} must be at least 1, got {block[key]}", key)
        scale, stage = block["scale"], block["stype"] == "stage"
        if block["stride"] != 1 and not stage and scale != 1:
            raise block.error("stride != 1 needs stype=stage: the untouched last group would keep the input size",
                              "stride")
        nums = 1 if scale == 1 else scale - 1
        width = block["planes"] * block["base_width"] // 64
        widths = block["widths"] if block["widths"] is not None else [width] * scale
        filters = block["branch_filters"] if block["branch_filters"] is not None else widths[:nums]
        if len(widths) != scale or min(widths) < 1:
            raise block.error(f"widths needs {scale} positive values (one per group, scale={scale}), got {widths}"
                              if block.given("widths") else
                              f"width = floor(planes*base_width/64) = floor({block['planes']}*{block['base_width']}/64)"
                              f" is 0; raise planes or base_width", "widths" if block.given("widths") else None)
        if len(filters) != nums or min(filters) < 1:
            raise block.error(f"branch_filters needs {nums} positive values (one per 3x3 branch), got {filters}",
                              "branch_filters")
        if not stage:
            for i in range(1, nums):
                if filters[i - 1] != widths[i]:
                    raise block.error(f"branch {i - 1} outputs {filters[i - 1]} channels but is added to group {i} "
                                      f"of {widths[i]}: they must match", "branch_filters")
        return dict(inplanes=inplanes, widths=widths, branch_filters=filters, stride=block["stride"], stage=stage,
                    activation=activation_from(block))


@register("res2net")
class Res2Net(_HierarchicalBlock):
    """The seed's Bottle2neck (expansion 2): hierarchical split, conv3 1x1 to ``planes*2``, plus the residual."""

    cfg_keys = {**_HierarchicalBlock._keys(base_width=26),
                # written by prune.py: conv3's filters, and whether the residual has its 1x1 conv
                "filters": Key(int, -1),
                "downsample": Key(int, -1, (-1, 0, 1))}
    expansion = 2

    def __init__(self, inplanes: int, out_channels: int, widths: Sequence[int], branch_filters: Sequence[int],
                 stride: int = 1, stage: bool = False, downsample: bool | None = None,
                 norm_layer: NormLayer = batch_norm, activation: ActivationFactory = ACTIVATIONS["leaky"]):
        super().__init__()
        self.out_channels = out_channels
        self.split = HierarchicalSplit(inplanes, widths, branch_filters, stride, stage, norm_layer, activation)
        self.conv3 = Convolutional(self.split.out_channels, out_channels, 1, norm_layer=norm_layer)
        if downsample is None:
            downsample = stride != 1 or inplanes != out_channels
        self.downsample = Convolutional(inplanes, out_channels, 1, stride, norm_layer=norm_layer) if downsample \
            else None

    @classmethod
    def from_cfg(cls, block, ctx):
        options = cls._checked(block, ctx)
        out_channels = block["filters"] if block["filters"] > 0 else block["planes"] * cls.expansion
        downsample = None if block["downsample"] < 0 else bool(block["downsample"])
        if downsample is False and (block["stride"] != 1 or options["inplanes"] != out_channels):
            raise block.error(f"downsample=0 needs stride 1 and inplanes ({options['inplanes']}) == filters "
                              f"({out_channels}) for the residual add", "downsample")
        return cls(out_channels=out_channels, downsample=downsample, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3(self.split(x)) + identity

    def darknet_tensors(self) -> list[torch.Tensor]:
        tensors = self.split.darknet_tensors() + self.conv3.darknet_tensors()
        if self.downsample is not None:
            tensors += self.downsample.darknet_tensors()
        return tensors

    def plain_layers(self, activation: str) -> list[PlainLayer]:
        """The split, conv3, the downsample (routed from the block input) if any, and the residual [shortcut]."""
        layers = self.split.plain_layers(activation)

        def linear_conv(size_stride: int) -> PlainLayer:
            return PlainLayer("convolutional", {"batch_normalize": 1, "filters": self.out_channels, "size": 1,
                                                "stride": size_stride, "pad": 1, "activation": "linear"})

        layers.append(linear_conv(1))
        conv3 = len(layers) - 1
        if self.downsample is None:
            layers.append(PlainLayer("shortcut", {"activation": "linear"}, (BLOCK_INPUT,)))
        else:
            layers.append(PlainLayer("route", {}, (BLOCK_INPUT,)))
            layers.append(linear_conv(self.downsample.conv.stride[0]))
            layers.append(PlainLayer("shortcut", {"activation": "linear"}, (conv3,)))
        return layers


@register("triangle")
class Triangle(_HierarchicalBlock):
    """The hierarchical split alone: no conv3, no residual. Outputs ``width*scale`` channels."""

    cfg_keys = _HierarchicalBlock._keys(base_width=16)

    def __init__(self, inplanes: int, widths: Sequence[int], branch_filters: Sequence[int], stride: int = 1,
                 stage: bool = False, norm_layer: NormLayer = batch_norm,
                 activation: ActivationFactory = ACTIVATIONS["leaky"]):
        super().__init__()
        self.split = HierarchicalSplit(inplanes, widths, branch_filters, stride, stage, norm_layer, activation)
        self.out_channels = self.split.out_channels

    @classmethod
    def from_cfg(cls, block, ctx):
        return cls(**cls._checked(block, ctx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(x)

    def darknet_tensors(self) -> list[torch.Tensor]:
        return self.split.darknet_tensors()

    def plain_layers(self, activation: str) -> list[PlainLayer]:
        return self.split.plain_layers(activation)


def fusable_convs(module: nn.Module) -> list[Convolutional]:
    return [m for m in module.modules() if isinstance(m, Convolutional)]


def conv_flops(conv: nn.Conv2d, out_height: int, out_width: int) -> int:
    """Darknet's count: 2 * weights * output positions (a multiply and an add per weight and position)."""
    return 2 * conv.weight.numel() * out_height * out_width


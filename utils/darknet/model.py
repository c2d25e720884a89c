"""The Darknet model: a network built from a Darknet cfg, reading and writing Darknet ``.weights``.

    model = Darknet("cfg/res2net-yolov3.cfg")        # or Darknet(cfg) for a parsed utils.darknet.cfg.Cfg
    model.load_darknet_weights("weights/res2net-yolov3.weights")
    model.eval()
    detections = model(images)          # (B, N, 5 + classes): cx, cy, w, h in pixels, objectness, classes
    heads = model.forward_heads(images)  # raw [yolo] inputs, (B, A*(5+classes), H, W) each
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from utils.allocator import tune_allocator
from utils.darknet.cfg import (NET_SCHEMA, SIZE_MULTIPLE, Block, Cfg, CfgError, as_cfg, type_section,
                               warn_unknown_keys)
from utils.darknet.layers import BuildContext, DarknetLayer, YOLOLayer, convolutions
from utils.darknet.layers.norm import freeze_batchnorm
from utils.darknet.registry import known_names, layer_type
from utils.darknet.summary import format_summary, summarize
from utils.darknet.weights import WeightsHeader, load_darknet_weights, save_darknet_weights
from utils.errors import UserError


class ForwardError(UserError, RuntimeError):
    """A layer that cannot run on what reaches it (spatial sizes that do not match, a map too small to pool):
    a cfg that builds but does not fit the input, named by the layer's file, line and index."""


def _mismatched_sizes(err: ForwardError) -> tuple[int, int] | None:
    """The two sizes, when maps of different spatial sizes met (torch's words for it in cat and in elementwise
    ops)."""
    found = re.search(r"Expected size (\d+) but got size (\d+)|tensor a \((\d+)\) must match the size of tensor "
                      r"b \((\d+)\)", str(err))
    return None if found is None else tuple(int(size) for size in found.groups() if size is not None)


def _why_sizes_differ(sizes: tuple[int, int] | None, height: int, width: int) -> str | None:
    """Why two maps a layer joins differ in size at this input, where the input is to blame: off the size
    multiple, or a stride that does not divide it (sizes a rounding apart, an upsampling's worth at most). None
    for a cfg that joins maps of different scales at any input."""
    if sizes is None:
        return None
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        return (f"the input is {height}x{width}, which the network's halvings cannot keep aligned: use multiples "
                f"of {SIZE_MULTIPLE} ([net] width and height, or --img_size)")
    if 4 * abs(sizes[0] - sizes[1]) < min(sizes):
        return (f"at the input {height}x{width} a stride or pool of the cfg does not divide the map evenly; try "
                f"another input size, or make the cfg's strides divide it")
    return None


def _inputs_described(sources: tuple[int, ...], kept: dict[int, torch.Tensor]) -> str:
    """The maps a layer that reads other layers was given, so a cfg's wrong reference shows which one."""
    shapes = [f"layer {j} {kept[j].shape[1]}x{kept[j].shape[2]}x{kept[j].shape[3]}" for j in sources
              if j in kept and kept[j].dim() == 4]
    return f"; its inputs (channels x height x width): {', '.join(shapes)}" if shapes else ""


@dataclass
class Network:
    """What a cfg builds: the typed [net], one typed block and one module per layer section."""

    net: Block
    blocks: list[Block]
    layers: list[DarknetLayer]


def net_options(cfg: Cfg) -> Block:
    """The cfg's [net] section, typed (input size and channels, training hyperparameters)."""
    return type_section(cfg.sections[0], NET_SCHEMA, cfg.source, -1)


def build_network(cfg: Cfg) -> Network:
    """One module per section after [net], each built by its registered type from its typed block."""
    net = net_options(cfg)
    ctx = BuildContext([], net["channels"])
    blocks, layers = [], []
    for index, section in enumerate(cfg.layers):
        kind = layer_type(section.name)
        if kind is None:
            raise CfgError(f"{cfg.source}:{section.line}: layer {index}: unknown section [{section.name}]; "
                           f"this repo builds {known_names()}")
        block = type_section(section, kind.cfg_keys, cfg.source, index)
        layer = kind.from_cfg(block, ctx)
        ctx.channels.append(layer.out_channels)
        blocks.append(block)
        layers.append(layer)
    if not layers:
        raise CfgError(f"{cfg.source}: the cfg has a [net] section but no layers")
    warn_unknown_keys(cfg.source, [net, *blocks])
    return Network(net, blocks, layers)


@dataclass(frozen=True)
class PlanStep:
    """How the forward pass runs one layer, decided once at build time."""

    layer: DarknetLayer
    sources: tuple[int, ...] | None  # None: the previous output
    keep: bool  # a later layer reads this output
    is_head: bool


def layer_of(state_key: str) -> int | None:
    """The index of the layer a state-dict key belongs to (``layers.<i>.<tensor>``); None for the network's own
    buffers (its weights-file header fields)."""
    parts = state_key.split(".", 2)
    return int(parts[1]) if parts[0] == "layers" and len(parts) > 1 else None


class Darknet(nn.Module):
    """A Darknet network. Train mode returns the raw [yolo] inputs; eval mode returns decoded detections
    (a cfg without [yolo] layers returns its last layer's output, as a backbone would)."""

    def __init__(self, cfg: str | Path | Cfg):
        super().__init__()
        self.cfg = as_cfg(cfg)
        network = build_network(self.cfg)
        self.blocks = network.blocks
        self.hyperparams = dict(network.net.values)
        self.img_size = (network.net["height"], network.net["width"])
        self.layers = nn.ModuleList(network.layers)
        self.yolo_layers: list[YOLOLayer] = [layer for layer in network.layers if layer.is_head]
        self.fused = False
        self.channels_last = False
        self.half_dtype: torch.dtype | None = None  # set by prepare_inference(half=True)
        # Version fields and images seen, as Darknet's header stores them; buffers so checkpoints keep them.
        self.register_buffer("weights_version", torch.tensor([0, 2, 0], dtype=torch.int32))
        self.register_buffer("seen", torch.tensor(0, dtype=torch.int64))
        referenced = {j for layer in network.layers for j in layer.sources or ()}
        self._plan = [PlanStep(layer, layer.sources, i in referenced, layer.is_head)
                      for i, layer in enumerate(network.layers)]
        # Darknet's stopbackward=1: the last such layer and every layer before it are not trained.
        self.stop_backward = max((b.index for b in network.blocks if b["stopbackward"]), default=-1)
        for layer in network.layers[:self.stop_backward + 1]:
            layer.requires_grad_(False)

    @property
    def cfg_text(self) -> str:
        return self.cfg.text

    @property
    def num_classes(self) -> int:
        return self.yolo_layers[0].num_classes if self.yolo_layers else 0

    @property
    def head_conv_indices(self) -> list[int]:
        """The layer index of the conv feeding each [yolo] head, in the order of ``yolo_layers``."""
        return [index - 1 for index, layer in enumerate(self.layers) if layer.is_head]

    @property
    def input_channels(self) -> int:
        return self.hyperparams["channels"]

    def train(self, mode: bool = True) -> Darknet:
        """As nn.Module.train; the layers before a stopbackward layer stay in inference mode (BN uses its
        running statistics), as Darknet builds them with train=0."""
        super().train(mode)
        for layer in list(self.layers)[:max(self.stop_backward, 0)]:
            layer.eval()
        return self

    # -- forward -------------------------------------------------------------------------------

    def _run(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the raw input of every [yolo] layer, the last layer's output)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ForwardError(f"the network takes a 4D tensor (batch, {self.input_channels}, height, width), "
                               f"got {got}")
        if self.half_dtype is not None:
            x = x.to(self.half_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kept: dict[int, torch.Tensor] = {}
        heads: list[torch.Tensor] = []
        frozen = self.stop_backward + 1
        height, width = x.shape[-2:]
        try:
            with torch.no_grad():  # stopbackward: no output up to that layer carries a gradient, routed ones too
                x = self._run_steps(x, range(frozen), kept, heads)
            x = self._run_steps(x, range(frozen, len(self._plan)), kept, heads)
        except ForwardError as err:
            why = _why_sizes_differ(_mismatched_sizes(err), height, width)
            if why is None:
                raise
            raise ForwardError(f"{str(err).rstrip('.')}; {why}") from err.__cause__
        return heads, x

    def _run_steps(self, x: torch.Tensor, indices: range, kept: dict[int, torch.Tensor],
                   heads: list[torch.Tensor]) -> torch.Tensor:
        index = indices.start
        try:
            for index in indices:
                step = self._plan[index]
                if step.is_head:
                    heads.append(x)
                    x = step.layer(x).to(x.dtype) if step.keep else x  # a half model's [yolo] is float32
                elif step.sources is None:
                    x = step.layer(x)
                else:
                    x = step.layer([kept[j] for j in step.sources])
                if step.keep:
                    kept[index] = x
        except (RuntimeError, ValueError) as err:
            inputs = _inputs_described(self._plan[index].sources or (), kept)
            raise ForwardError(f"{self.blocks[index].where()}: {str(err).splitlines()[0].rstrip('.')}{inputs}") \
                from err
        return x

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The raw input of every [yolo] layer, in cfg order: ``(B, A*(5+classes), H, W)``, Darknet's layout."""
        return self._run(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        heads, last = self._run(x)
        if not self.yolo_layers:
            return last
        if self.training:
            return heads
        return self.decode(heads, x.shape[-2:])

    def decode(self, heads: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Spec §4: ``(B, N, 5+classes)``, N over [yolo] layers, then anchor, row, column. Half-precision heads
        are decoded in float32, as a box's pixel position needs more than bfloat16's 8 bits."""
        heads = [head.float() if head.dtype in (torch.float16, torch.bfloat16) else head for head in heads]
        return torch.cat([yolo.decode(head, image_size) for yolo, head in zip(self.yolo_layers, heads)], 1)

    def freeze_batchnorm(self) -> Darknet:
        """Every BN becomes a FrozenBatchNorm2d of its current values (train.py --freeze_bn): in training the
        running statistics normalise and gamma/beta stay as they are (no update, no weight decay)."""
        freeze_batchnorm(self)
        return self

    def fuse(self) -> Darknet:
        """Fold every BN into its conv, for inference. A fused model can no longer save .weights."""
        for conv in convolutions(self):
            conv.fuse()
        self.fused = True
        return self

    def prepare_inference(self, half: bool = False) -> Darknet:
        """eval + fuse + channels-last memory + each conv on a oneDNN-blocked copy of its weight (made on the
        first batch: the conv weights' size again in memory), and malloc kept from page-faulting feature maps
        in again on every pass (:mod:`utils.allocator`, process-wide): the fastest CPU inference path
        (benchmarks/bench_speed.py); the packing changes no output bit. ``half``: the layers in float16 on CUDA
        and bfloat16 elsewhere, the [yolo] decode in float32: 1.7-2.6x faster on a CPU with bfloat16 matmul
        units (AMX), boxes within ~1 px and scores within ~0.01 (detect.py and test.py --half)."""
        tune_allocator()
        self.eval().fuse()
        self._to_channels_last()
        if half:
            self._to_half()
        else:  # oneDNN's packed op is float32
            for conv in convolutions(self):
                conv.prepack()
        return self

    def _to_half(self) -> None:
        device = next(self.parameters()).device
        self.half_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        for layer in self.layers:
            if not layer.is_head:  # anchors and grids stay exact
                layer.to(self.half_dtype)

    def prepare_training(self) -> Darknet:
        """Channels-last memory for the weights and every input (train.py --channels_last): the same arithmetic,
        summed in another order, and a training step 6-19 % shorter on CPU (oneDNN's convolutions run natively
        in it, NCHW ones reorder their maps; see the README's speed section). State dicts and .weights files are
        written in the usual layout."""
        return self._to_channels_last()

    def _to_channels_last(self) -> Darknet:
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    # -- Darknet weights -----------------------------------------------------------------------

    @property
    def weights_header(self) -> WeightsHeader:
        major, minor, revision = (int(v) for v in self.weights_version.tolist())
        return WeightsHeader(major, minor, revision, int(self.seen))

    def load_darknet_weights(self, path: str | Path, cutoff: int | None = None) -> WeightsHeader:
        """Load a Darknet .weights file; with ``cutoff`` only layers 0 .. cutoff-1 (Darknet's ``partial``)."""
        if self.fused:
            raise RuntimeError("load weights before fuse(): a fused model has no BN tensors to fill")
        header = load_darknet_weights(self.layers, path, cutoff, [b.where() for b in self.blocks])
        self.weights_version.copy_(torch.tensor([header.major, header.minor, header.revision]))
        self.seen.fill_(header.seen)
        return header

    def save_darknet_weights(self, path: str | Path, cutoff: int | None = None) -> None:
        """Write a Darknet .weights file (atomically); the header is the one loaded, else 0.2.0."""
        if self.fused:
            raise RuntimeError("cannot save .weights from a fused model: save before fuse()")
        save_darknet_weights(self.layers, path, self.weights_header, cutoff)

    # -- summary -------------------------------------------------------------------------------

    def summary(self, img_size: tuple[int, int] | None = None) -> str:
        return format_summary(self, summarize(self, img_size or self.img_size))

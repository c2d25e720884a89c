"""The Darknet model: a network built from a Darknet ``.cfg``, reading and writing Darknet ``.weights``.

    model = Darknet("cfg/res2net-yolov3.cfg")
    model.load_darknet_weights("weights/res2net-yolov3.weights")
    model.eval()
    detections = model(images)          # (B, N, 5 + classes): cx, cy, w, h in pixels, objectness, classes
    heads = model.forward_heads(images)  # raw [yolo] inputs, (B, A*(5+classes), H, W) each

"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from utils.darknet.cfg import NET_SCHEMA, Block, CfgError, read_cfg, type_section, warn_unknown_keys
from utils.darknet.weights import WeightsHeader, load_darknet_weights, save_darknet_weights
from utils.darknet.layers import LAYER_TYPES, BuildContext, DarknetLayer, YOLOLayer, fusable_convs


def build_layers(cfg_path: str | Path) -> tuple[Block, list[Block], list[DarknetLayer]]:
    """Parse a cfg and build one module per section after [net], by the layer registry."""
    path = Path(cfg_path)
    sections = read_cfg(path)
    net, unknown_net = type_section(sections[0], NET_SCHEMA, path, -1)
    for key in ("width", "height", "channels"):
        if net[key] < 1:
            raise net.error(f"{key} must be positive, got {net[key]}", key)
    unknown = [(net.where(), unknown_net)] if unknown_net else []
    ctx = BuildContext([], net["channels"])
    blocks, layers = [], []
    for index, section in enumerate(sections[1:]):
        layer_type = LAYER_TYPES.get(section.name)
        if layer_type is None:
            raise CfgError(f"{path}:{section.line}: layer {index}: unknown section [{section.name}]; "
                           f"this repo builds {', '.join(f'[{name}]' for name in LAYER_TYPES)}")
        block, extra = type_section(section, layer_type.cfg_keys, path, index)
        if extra:
            unknown.append((block.where(), extra))
        layer = layer_type.from_cfg(block, ctx)
        ctx.channels.append(layer.out_channels)
        blocks.append(block)
        layers.append(layer)
    if not layers:
        raise CfgError(f"{path}: the cfg has a [net] section but no layers")
    warn_unknown_keys(path, unknown)
    return net, blocks, layers


class Darknet(nn.Module):
    """A Darknet network. Train mode returns the raw [yolo] inputs; eval mode returns decoded detections."""

    def __init__(self, cfg_path: str | Path):
        super().__init__()
        self.cfg_path = Path(cfg_path)
        net, self.blocks, layers = build_layers(self.cfg_path)
        self.cfg_text = self.cfg_path.read_text(encoding="utf-8", errors="replace")
        self.hyperparams = dict(net.values)
        self.img_size = (net["height"], net["width"])
        self.layers = nn.ModuleList(layers)
        self.yolo_layers = [layer for layer in layers if isinstance(layer, YOLOLayer)]
        self.fused = False
        self.channels_last = False
        # Version fields and images seen, as Darknet's header stores them; buffers so checkpoints keep them.
        self.register_buffer("weights_version", torch.tensor([0, 2, 0], dtype=torch.int32))
        self.register_buffer("seen", torch.tensor(0, dtype=torch.int64))
        self._plan = self._forward_plan(layers)

    @staticmethod
    def _forward_plan(layers: list[DarknetLayer]) -> list[tuple[DarknetLayer, tuple[int, ...] | None, bool, bool]]:
        """Per layer: (module, sources, keep its output for a later layer, is a [yolo] head) — decided once here."""
        referenced = {j for layer in layers if layer.sources for j in layer.sources}
        return [(layer, layer.sources, i in referenced, isinstance(layer, YOLOLayer))
                for i, layer in enumerate(layers)]

    @property
    def num_classes(self) -> int:
        return self.yolo_layers[0].num_classes if self.yolo_layers else 0

    # -- forward -------------------------------------------------------------------------------

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The raw input of every [yolo] layer, in cfg order: ``(B, A*(5+classes), H, W)``, Darknet's layout."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kept: dict[int, torch.Tensor] = {}
        heads: list[torch.Tensor] = []
        index = 0
        try:
            for index, (layer, sources, keep, is_head) in enumerate(self._plan):
                if is_head:
                    heads.append(x)
                    x = layer(x) if keep else x
                elif sources is None:
                    x = layer(x)
                else:
                    x = layer([kept[j] for j in sources])
                if keep:
                    kept[index] = x
        except RuntimeError as err:
            raise RuntimeError(f"{self.blocks[index].where()}: {err}") from err
        return heads

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        heads = self.forward_heads(x)
        if self.training:
            return heads
        return self.decode(heads, x.shape[-2:])

    def decode(self, heads: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Spec §4: ``(B, N, 5+classes)``, N over [yolo] layers, then anchor, row, column."""
        return torch.cat([yolo.decode(head, image_size) for yolo, head in zip(self.yolo_layers, heads)], 1)

    def fuse(self) -> Darknet:
        """Fold every BN into its conv, for inference. A fused model can no longer save .weights."""
        for conv in fusable_convs(self):
            conv.fuse()
        self.fused = True
        return self

    def prepare_inference(self) -> Darknet:
        """eval + fuse + channels-last memory: the fastest CPU inference path (see benchmarks/bench_core.py)."""
        self.eval().fuse()
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
        from utils.darknet.summary import format_summary, summarize

        return format_summary(self, summarize(self, img_size or self.img_size))

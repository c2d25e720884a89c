"""The norms a [convolutional] can carry (its ``normalize`` key), and freezing every BN of a model.

- ``batch``: BatchNorm2d, Darknet's own.
- ``frozen``: detectron2's FrozenBatchNorm2d: the running statistics and the affine values are constants
  (buffers, so no optimiser sees them: no update, no weight decay, no sparsity shrinkage), in training too.
  Its state and its ``.weights`` tensors are a BatchNorm2d's, so files and checkpoints move freely between
  a frozen and a trainable cfg, and Darknet (which ignores the key) reads the same stream.
- ``ibn``: IBN-Net's IBN-a norm: InstanceNorm (affine) on the first ``int(C/2)`` channels, BN on the rest.
"""
from __future__ import annotations

import torch
from torch import nn

from utils.darknet.layers.base import batch_norm

BN_TENSORS = ("bias", "weight", "running_mean", "running_var")  # Darknet's order in a .weights file


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine values: ``(x - mean) / sqrt(var + eps) * weight + bias``,
    in training and inference alike."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = channels, eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        # kept only so the state matches a BatchNorm2d's key for key (checkpoints load either way)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @classmethod
    def of(cls, bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
        """A frozen copy of ``bn``'s current values."""
        frozen = cls(bn.num_features, bn.eps).to(bn.weight.device)
        with torch.no_grad():
            for name in (*BN_TENSORS, "num_batches_tracked"):
                getattr(frozen, name).copy_(getattr(bn, name))
        return frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def frozen_batch_norm(channels: int) -> FrozenBatchNorm2d:
    return FrozenBatchNorm2d(channels)


class InstanceBatchNorm(nn.Module):
    """IBN-a: ``IN`` (InstanceNorm2d, affine) on the first ``half = int(channels / 2)`` channels, ``BN`` on the
    rest, concatenated. The submodule names are IBN-Net's, so its checkpoints' keys match ours."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = int(channels * 0.5)
        self.IN = nn.InstanceNorm2d(self.half, eps=1e-5, affine=True)
        self.BN = batch_norm(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        instance, batch = torch.split(x, (self.half, x.shape[1] - self.half), 1)
        return torch.cat([self.IN(instance.contiguous()), self.BN(batch.contiguous())], 1)

    def darknet_tensors(self) -> list[torch.Tensor]:
        """IN bias, IN weight (first half), then the BN half as Darknet orders a BN: bias, weight, mean, var."""
        return [self.IN.bias, self.IN.weight, *(getattr(self.BN, name) for name in BN_TENSORS)]


NORMALIZERS = {"batch": batch_norm, "frozen": frozen_batch_norm, "ibn": InstanceBatchNorm}


# What a conv asks of its norm, answered here so that a conv never tells the norms apart itself. Each is a
# function, not a method, because BatchNorm2d and SyncBatchNorm are torch's classes.

def norm_tensors(norm: nn.Module) -> list[torch.Tensor]:
    """A norm's tensors in ``.weights`` order."""
    if isinstance(norm, InstanceBatchNorm):
        return norm.darknet_tensors()
    return [getattr(norm, name) for name in BN_TENSORS]


def norm_tag(norm: nn.Module | None) -> str:
    """What the layer table adds to a conv's description for its norm (only IBN-a differs from Darknet's)."""
    return " ibn" if isinstance(norm, InstanceBatchNorm) else ""


def has_constant_statistics(norm: nn.Module) -> bool:
    """Whether the norm is an affine map at inference, so a conv can fold it; InstanceNorm's statistics are
    each input's own."""
    return not isinstance(norm, InstanceBatchNorm)


@torch.no_grad()
def absorb_input_shift(norm: nn.Module, delta: torch.Tensor) -> None:
    """Make the norm's output unchanged when its input gains ``delta`` per channel: a BN's mean moves with
    it; InstanceNorm subtracts a constant shift by itself, so only IBN-a's BN half moves."""
    if isinstance(norm, InstanceBatchNorm):
        norm.BN.running_mean -= delta[norm.half:]
    else:
        norm.running_mean -= delta


def is_trainable_batch_norm(norm: nn.Module | None) -> bool:
    """A BN whose gamma is trained (BatchNorm2d, SyncBatchNorm): what sparsity and channel pruning rank by."""
    return isinstance(norm, nn.modules.batchnorm._BatchNorm)


def freeze_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm2d (and SyncBatchNorm) in ``model`` by a FrozenBatchNorm2d of its current values,
    IBN's BN half included. Returns how many were frozen. The state dict keeps its keys, so checkpoints saved
    from the frozen model load into the cfg's ordinary one."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if is_trainable_batch_norm(child)]
    for parent, name, child in targets:
        setattr(parent, name, FrozenBatchNorm2d.of(child))
    return len(targets)

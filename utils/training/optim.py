"""Optimiser, learning-rate schedule, EMA and sparsity training, driven by the cfg's [net] section."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from utils.darknet.cfg import POLICIES
from utils.darknet.layers import Convolutional
from utils.darknet.layers.norm import is_trainable_batch_norm
from utils.errors import UserError


def build_optimizer(model: nn.Module, kind: str, lr: float, momentum: float, weight_decay: float,
                    ) -> torch.optim.Optimizer:
    """Weight decay on conv (and other multi-dimensional) weights only, never on BN or biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {kind!r}; expected sgd or adam")


@dataclass
class Schedule:
    """The learning-rate factor at each optimiser step, Darknet style: a burn-in ramp ``(i/burn_in)^power``,
    then ``steps`` (the cfg's steps as fractions of max_batches, mapped onto this run's length, each
    multiplying by its scale), ``poly``, ``cosine`` (down to ``min_ratio``) or ``constant``."""

    total_steps: int
    burn_in: int
    policy: str
    step_fractions: tuple[float, ...]
    scales: tuple[float, ...]
    power: float
    min_ratio: float = 0.01  # cosine's floor: no cfg key sets it

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"learning-rate policy {self.policy!r} is not supported; use one of {', '.join(POLICIES)}")

    @classmethod
    def from_net(cls, net: dict, total_steps: int, policy: str | None = None, burn_in: int | None = None) -> Schedule:
        policy = policy or net["policy"]
        max_batches = net["max_batches"] or 0
        fractions = tuple(s / max_batches for s in net["steps"]) if max_batches else ()
        if burn_in is None:
            # The cfg's burn_in counts batches of a full Darknet run; a short run gets at most 5 % of its steps.
            burn_in = min(net["burn_in"], max(total_steps // 20, 1)) if net["burn_in"] else 0
        return cls(total_steps, burn_in, policy, fractions, tuple(net["scales"]), net["power"])

    def __call__(self, step: int) -> float:
        ramp = (step / self.burn_in) ** self.power if step < self.burn_in else 1.0
        progress = step / max(self.total_steps, 1)
        if self.policy == "steps":
            factor = math.prod(s for f, s in zip(self.step_fractions, self.scales) if progress >= f)
        elif self.policy == "poly":
            factor = max(1.0 - progress, 0.0) ** self.power
        elif self.policy == "cosine":
            factor = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        else:
            factor = 1.0
        return ramp * factor


class ModelEMA:
    """An exponential moving average of the weights; decay ramps up over the first ``tau`` updates."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.ema = copy.deepcopy(model).eval()
        for param in self.ema.parameters():
            param.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        for ema_value, value in zip(self.ema.state_dict().values(), model.state_dict().values()):
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict:
        return {"model": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["model"])
        self.updates = state["updates"]


def sparsity_bns(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BNs network slimming penalises: every trained BN (SyncBatchNorm too), those inside [res2net] and
    [triangle] included; frozen ones (FrozenBatchNorm2d, --freeze, stopbackward) keep their gammas."""
    return [m for m in model.modules() if is_trainable_batch_norm(m) and m.weight.requires_grad]


@torch.no_grad()
def shrink_gammas(bns: list[nn.modules.batchnorm._BatchNorm], amount: float) -> None:
    """The proximal step of ``s * sum |gamma|`` after an optimiser step with learning rate lr:
    |gamma| shrinks by ``amount = lr * s`` and stops at exactly 0 (what pruning looks for), where adding
    the subgradient s * sign(gamma) would oscillate around 0 and, under Adam, be normalised away."""
    for bn in bns:
        bn.weight.copy_(torch.sign(bn.weight) * (bn.weight.abs() - amount).clamp_(min=0))


@dataclass
class Sparsity:
    """Sparsity training (``--sr``): after every optimiser step each |gamma| of ``bns`` shrinks by
    ``lr * strength``."""

    bns: list[nn.modules.batchnorm._BatchNorm]
    strength: float

    @classmethod
    def of(cls, model: nn.Module, strength: float) -> Sparsity:
        """Sparsity training of ``model``'s trained BNs; refused when it has none to shrink."""
        bns = sparsity_bns(model)
        if not bns:
            raise UserError("--sr: the model has no trained BN scale (gamma) to make sparse: its convs have no "
                            "batch_normalize=1, or every BN is frozen (--freeze_bn, --freeze, normalize=frozen); "
                            "leave --sr out")
        return cls(bns, strength)

    def shrink(self, lr: float) -> None:
        shrink_gammas(self.bns, lr * self.strength)

    def budget(self, scheduler: torch.optim.lr_scheduler.LambdaLR) -> float:
        """The total shrinkage over the run's schedule: ``strength * sum(lr)`` over its steps."""
        schedule = scheduler.lr_lambdas[0]
        return self.strength * scheduler.base_lrs[0] * sum(schedule(step) for step in range(schedule.total_steps))

    def gammas(self) -> np.ndarray:
        """Every |gamma|, flattened, as the histograms plot them."""
        return torch.cat([bn.weight.detach().abs().flatten().cpu() for bn in self.bns]).numpy()


@torch.no_grad()
def init_head_biases(model) -> None:
    """Start each head at objectness near 1 % and near-uniform classes (YOLOLayer.prime_head_bias), so the
    first steps are not spent unlearning the 0.5 a zero bias gives to thousands of empty cells."""
    for index, yolo in zip(model.head_conv_indices, model.yolo_layers):
        conv: Convolutional = model.layers[index]
        if conv.conv.bias is not None:
            yolo.prime_head_bias(conv.conv.bias)


def replan_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, total_steps: int,
                    step: int | None = None) -> tuple[float, float]:
    """Lay the run's schedule over ``total_steps`` (a resumed run whose --epochs was raised), at ``step`` when
    given (the step its epochs reached in a run of as many steps per epoch as this one: another number of
    processes takes another number of steps per epoch), and set the learning rate the new plan gives there;
    returns (lr before, lr now). Only the length changes: the policy, the burn-in and the steps' fractions
    stay, so the rest of the run follows the schedule a run planned this way from the start would have."""
    schedule: Schedule = scheduler.lr_lambdas[0]  # LambdaLR repeats one Schedule for every parameter group
    before = scheduler.get_last_lr()[0]
    schedule.total_steps = total_steps
    if step is not None:
        scheduler.last_epoch = step
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base_lr * schedule(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]  # what get_last_lr reports
    return before, scheduler._last_lr[0]

"""Building a run's parts from its options and the cfg's [net] section: loaders, optimiser, schedule, state."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader

from utils.darknet.model import Darknet
from utils.data.augment import Augment
from utils.data.batching import BatchPlan, create_dataloader, evaluation_loader, multiscale_sizes
from utils.data.config import DataConfig
from utils.data.dataset import DetectionDataset
from utils.errors import UserError
from utils.training.distributed import Distributed
from utils.training.hyp import augment_values
from utils.training.optim import ModelEMA, Schedule, build_optimizer
from utils.training.options import TrainOptions
from utils.training.state import TrainState


@dataclass
class Loaders:
    train: DataLoader
    plan: BatchPlan  # the training batches; set_epoch() before each epoch
    valid: DataLoader | None  # only the main process evaluates
    valid_set: DetectionDataset  # on every process, so that every process checks it alike

    def steps_per_epoch(self, accumulation: int) -> int:
        return math.ceil(len(self.plan) / accumulation)


def build_augment(opt: TrainOptions, net: dict) -> Augment | None:
    """Training augmentation: [net]'s (hue, saturation, exposure, flip, mosaic) and the --hyp file's scale,
    translate and mosaic probability; --mosaic/--no-mosaic (probability 0.5 or 0) win over both, as every flag
    wins over [net] and --hyp, and --rect turns mosaic off. None with --no_augment."""
    if not opt.augment:
        return None
    values = augment_values(opt.hyp)
    mosaic = False if opt.rect else opt.mosaic
    if mosaic is not None:
        values.pop("mosaic", None)
    return replace(Augment.from_net(net, mosaic), **values)


def build_loaders(data: DataConfig, opt: TrainOptions, net: dict, dist: Distributed) -> Loaders:
    train_set = DetectionDataset.from_config(data, "train", build_augment(opt, net))
    sizes = multiscale_sizes(opt.img_size) if opt.multiscale_training else [opt.img_size]
    plan = BatchPlan(len(train_set), opt.batch_size, sizes, seed=opt.seed, rank=dist.rank, world_size=dist.world_size)
    valid_set = DetectionDataset.from_config(data, "valid")
    valid = evaluation_loader(valid_set, opt.batch_size, opt.img_size, opt.n_cpu) if dist.is_main else None
    return Loaders(create_dataloader(train_set, plan, opt.n_cpu), plan, valid, valid_set)


def plan_rect_batches(loaders: Loaders, dist: Distributed, img_size: int) -> str:
    """--rect: the training batches made rectangular, from the images' sizes (read in shares by the processes,
    from the --cache_images cache where there is one); says what the batches are at ``img_size``."""
    dataset = loaders.train.dataset
    loaders.plan.use_shapes(dist.shared_work(len(dataset), dataset.shapes))
    counts = Counter(loaders.plan.rect_shapes(img_size))
    pixels = sum(height * width * n for (height, width), n in counts.items())
    square = sum(max(shape) ** 2 * n for shape, n in counts.items())
    shown = ", ".join(f"{height}x{width} ({n})" for (height, width), n in sorted(counts.items()))
    return (f"--rect: {len(loaders.plan)} batches of images of like aspect ratio, height x width (batches) at "
            f"{img_size}: {shown}; {1 - pixels / square:.0%} fewer pixels than square batches; no mosaic")


def uses_grad_scaler(opt: TrainOptions, device: torch.device) -> bool:
    """--amp on CUDA autocasts to float16, whose small gradients need loss scaling; CPU autocasts to bfloat16,
    which has float32's range and needs none."""
    return opt.amp and device.type == "cuda"


def build_state(model: Darknet, opt: TrainOptions, steps_per_epoch: int, device: torch.device,
                names: list[str]) -> TrainState:
    """A fresh state for ``model`` (trained for the classes ``names``): the optimiser and schedule from
    [net], each setting overridden by its flag when given, an EMA with --ema, and an AMP scaler (inactive
    without --amp on CUDA)."""
    net = model.hyperparams
    kind = opt.optimizer or ("adam" if net["adam"] else "sgd")
    momentum = opt.momentum if opt.momentum is not None else net["momentum"]
    if kind == "adam" and not momentum < 1:
        where = "--momentum" if opt.momentum is not None else "[net] momentum"
        raise UserError(f"{where} {momentum}: Adam takes it as beta1, which must be below 1")
    optimizer = build_optimizer(model, kind, opt.lr if opt.lr is not None else net["learning_rate"], momentum,
                                opt.weight_decay if opt.weight_decay is not None else net["decay"])
    schedule = Schedule.from_net(net, steps_per_epoch * opt.epochs, opt.lr_policy, opt.burn_in)
    return TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
                      torch.amp.GradScaler("cuda", enabled=uses_grad_scaler(opt, device)),
                      ModelEMA(model) if opt.ema else None, names=list(names), options=opt.saved())

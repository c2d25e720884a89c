"""The training loop behind train.py: one process, or one per device under torchrun (DDP)."""
from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from utils.darknet.model import Darknet
from utils.darknet.cfg import parse_cfg, read_cfg
from utils.darknet.cfg_edit import with_classes
from utils.darknet.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from utils.data.dataset import Augment, DetectionDataset, create_dataloader, parse_data_config
from utils.evaluation.evaluate import collect_detections, format_results, score
from utils.fileio import atomic_write
from utils.training.loss import YOLOLoss
from utils.training.optim import ModelEMA, Schedule, build_optimizer, init_head_biases, shrink_gammas, sparsity_bns
from utils.errors import UserError

DEFAULT_DATA = "data/demo/shapes.data"
RUNTIME_OPTIONS = ("resume", "device", "n_cpu", "output")
CSV_FIELDS = ["epoch", "lr", "box", "obj", "cls", "total", "mAP50", "mAP", "img_per_s", "data_wait", "seconds"]


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a non-finite loss, ranks out of sync); the last good checkpoint is kept."""


@dataclass
class TrainOptions:
    model_def: str = "cfg/res2net-yolov3.cfg"
    data_config: str = DEFAULT_DATA
    pretrained_weights: str | None = None
    cutoff: int | None = None
    epochs: int = 100
    batch_size: int = 8
    gradient_accumulations: int = 1
    img_size: int = 416
    multiscale_training: bool = False
    n_cpu: int = 2
    checkpoint_interval: int = 1
    evaluation_interval: int = 1
    output: str | None = None
    resume: str | None = None
    device: str = ""
    seed: int = 0
    sr: bool = False
    s: float = 0.001
    freeze: int = 0
    freeze_bn: bool = False
    ema: bool = False
    amp: bool = False
    sync_bn: bool = False
    optimizer: str | None = None
    lr: float | None = None
    lr_policy: str | None = None
    burn_in: int | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    mosaic: bool | None = None
    augment: bool = True
    conf_thres: float = 0.001
    nms_thres: float = 0.5
    ap_method: str = "coco"


@dataclass
class EpochStats:
    sums: dict[str, float] = field(default_factory=lambda: {"box": 0.0, "obj": 0.0, "cls": 0.0, "total": 0.0})
    batches: int = 0
    images: int = 0
    wait: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    skipped: list[str] = field(default_factory=list)

    def add(self, components: dict[str, float], images: int, wait: float) -> None:
        for key in self.sums:
            self.sums[key] += components[key]
        self.batches += 1
        self.images += images
        self.wait += wait

    def mean(self, key: str) -> float:
        return self.sums[key] / max(self.batches, 1)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def next_run_dir(root: Path) -> Path:
    n = 1
    while (root / f"exp{n}").exists():
        n += 1
    return root / f"exp{n}"


class Trainer:
    def __init__(self, options: TrainOptions):
        self.opt = options
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0
        self.device = self._device()
        self.rows: list[dict] = []
        self.gamma_history: list[tuple[int, np.ndarray]] = []

    # -- set-up --------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        wanted = self.opt.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if wanted.startswith("cuda"):
            if not torch.cuda.is_available():
                raise TrainingError(f"--device {wanted}: CUDA is not available on this machine; use --device cpu")
            return torch.device("cuda", self.local_rank if self.world_size > 1 else torch.device(wanted).index or 0)
        return torch.device(wanted)

    def log(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message)

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _prepare_run(self) -> tuple[Path, dict | None]:
        checkpoint = None
        if self.opt.resume:
            resume = Path(self.opt.resume)
            resume = resume / "last.pth" if resume.is_dir() else resume
            checkpoint = load_checkpoint(resume)
            run_dir = Path(self.opt.output) if self.opt.output else resume.parent
            # The same run goes on: its options come from the checkpoint; only where it runs may change.
            keep = {name: getattr(self.opt, name) for name in RUNTIME_OPTIONS}
            self.opt = TrainOptions(**{**asdict(TrainOptions()), **checkpoint["options"], **keep})
        else:
            run_dir = Path(self.opt.output) if self.opt.output else next_run_dir(Path("runs/train"))
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self._barrier()
        return run_dir, checkpoint

    def _ensure_demo_data(self) -> None:
        if self.opt.data_config == DEFAULT_DATA and not Path(DEFAULT_DATA).exists():
            if self.is_main:
                from utils.data.synthetic import write_dataset
                self.log(f"{DEFAULT_DATA} is missing: generating the synthetic shapes dataset (seed 0) ...")
                write_dataset(Path(DEFAULT_DATA).parent)
            self._barrier()

    def _build_model(self, run_dir: Path, classes: int, checkpoint: dict | None) -> Darknet:
        cfg_path = run_dir / "model.cfg"
        if checkpoint is not None:
            cfg = parse_cfg(checkpoint["cfg_text"], str(cfg_path))
        else:
            cfg = with_classes(read_cfg(self.opt.model_def), classes)
        with warnings.catch_warnings():
            warnings.simplefilter("default" if self.is_main else "ignore")  # one copy of cfg warnings, not N
            model = Darknet(cfg)
        if self.is_main:
            with atomic_write(cfg_path) as f:
                f.write(cfg.text.encode())
        self._barrier()
        return model

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> dict:
        if self.world_size > 1:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
        try:
            return self._run()
        finally:
            if self.world_size > 1:
                dist.destroy_process_group()

    def _run(self) -> dict:
        run_dir, checkpoint = self._prepare_run()  # with --resume this takes the run's own options
        opt = self.opt
        torch.manual_seed(opt.seed)
        self._ensure_demo_data()
        data = parse_data_config(opt.data_config)
        self.run_dir = run_dir
        model = self._build_model(run_dir, data.classes, checkpoint)
        self.log(f"run directory: {run_dir}   model: {opt.model_def} -> {run_dir / 'model.cfg'} "
                 f"({data.classes} classes: {', '.join(data.names)})")
        if checkpoint is None:
            init_head_biases(model)
            if opt.pretrained_weights:
                self.log(load_pretrained(model, opt.pretrained_weights, opt.cutoff))
        for layer in list(model.layers)[:opt.freeze]:
            layer.requires_grad_(False)
        if opt.freeze_bn:
            model.freeze_batchnorm()
        model.to(self.device)

        net = model.hyperparams
        train_set = DetectionDataset(data.train, data.classes,
                                     Augment.from_net(net, opt.mosaic) if opt.augment else None)
        train_loader, plan = create_dataloader(train_set, opt.batch_size, opt.img_size, True,
                                               opt.multiscale_training, opt.n_cpu, opt.seed, self.rank,
                                               self.world_size)
        val_loader = None
        if self.is_main:
            val_set = DetectionDataset(data.valid, data.classes, None)
            val_loader, _ = create_dataloader(val_set, opt.batch_size, opt.img_size, False, workers=opt.n_cpu)
            self.log(f"train: {len(train_set)} images ({data.train}); valid: {len(val_set)} images ({data.valid})")

        steps_per_epoch = math.ceil(len(plan) / opt.gradient_accumulations)
        optimizer_kind = opt.optimizer or ("adam" if net["adam"] else "sgd")
        base_lr = opt.lr if opt.lr is not None else net["learning_rate"]
        optimizer = build_optimizer(model, optimizer_kind, base_lr,
                                    opt.momentum if opt.momentum is not None else net["momentum"],
                                    opt.weight_decay if opt.weight_decay is not None else net["decay"])
        schedule = Schedule.from_net(net, steps_per_epoch * opt.epochs, opt.lr_policy, opt.burn_in)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        ema = ModelEMA(model) if opt.ema else None
        use_amp = opt.amp and self.device.type == "cuda"
        if opt.amp and not use_amp:
            self.log("--amp needs a CUDA device; training in float32")
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

        start_epoch, best = 0, -1.0
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            if ema is not None and checkpoint.get("ema") is not None:
                ema.load_state_dict(checkpoint["ema"])
            torch.set_rng_state(checkpoint["rng_cpu"])
            start_epoch, best = checkpoint["epoch"] + 1, checkpoint["best_fitness"]
            self.rows = self._read_csv(run_dir / "results.csv")[:start_epoch]
            self.log(f"resumed from epoch {checkpoint['epoch']} (best mAP@0.5 {best:.4f})")
            if start_epoch >= opt.epochs:
                self.log(f"nothing left to train: the run's {opt.epochs} epochs are done")

        train_model = model
        if self.world_size > 1:
            if opt.sync_bn:
                train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            train_model = DistributedDataParallel(
                train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        loss_fn = YOLOLoss(model.yolo_layers)
        bns = sparsity_bns(model) if opt.sr else []
        if opt.sr:
            budget = opt.s * base_lr * sum(schedule(step) for step in range(schedule.total_steps))
            self.log(f"sparsity training: L1 {opt.s} on {len(bns)} BN scale vectors: |gamma| shrinks by lr x s "
                     f"after every step, {budget:.2f} in all over this run's schedule (gammas start near 1)")

        result = None
        for epoch in range(start_epoch, opt.epochs):
            plan.set_epoch(epoch)
            train_model.train()
            stats = self._train_epoch(epoch, train_model, model, train_loader, loss_fn, optimizer, scheduler,
                                      scaler, ema, bns, use_amp)
            self._check_ranks_in_sync(model)
            if self.is_main:
                evaluated = ema.ema if ema is not None else model
                row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **{k: stats.mean(k) for k in stats.sums},
                       "mAP50": "", "mAP": "", "img_per_s": stats.images * self.world_size / stats.seconds,
                       "data_wait": stats.wait / stats.seconds, "seconds": stats.seconds}
                last_epoch = epoch == opt.epochs - 1
                if (epoch + 1) % opt.evaluation_interval == 0 or last_epoch:
                    result = score(
                        collect_detections(evaluated, val_loader, self.device, opt.conf_thres, opt.nms_thres),
                        data.names, opt.ap_method)
                    self.log(format_results(result, opt.conf_thres, opt.nms_thres,
                                            "letterboxed" if val_loader.dataset.keep_ratio else "stretched"))
                    row["mAP50"], row["mAP"] = result.map50, result.map
                    if opt.sr:
                        self._record_gammas(epoch, bns)
                self.rows.append(row)
                self._write_logs()
                improved = row["mAP50"] != "" and row["mAP50"] > best
                best = max(best, row["mAP50"]) if row["mAP50"] != "" else best
                if (epoch + 1) % opt.checkpoint_interval == 0 or last_epoch or improved:
                    self._save(epoch, model, optimizer, scheduler, scaler, ema, best, data.names, improved)
            self._barrier()
        summary = {"run_dir": str(run_dir), "best_map50": best,
                   "map50": result.map50 if result else None, "map": result.map if result else None}
        self.log(f"done: best mAP@0.5 {best:.4f}; checkpoints and logs in {run_dir}")
        return summary

    def _train_epoch(self, epoch, train_model, model, loader, loss_fn, optimizer, scheduler, scaler, ema, bns,
                     use_amp) -> EpochStats:
        opt = self.opt
        stats = EpochStats()
        bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{opt.epochs}", disable=not self.is_main,
                   dynamic_ncols=True, leave=True)
        fetch_start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader):
            wait = time.perf_counter() - fetch_start
            stats.skipped += batch.skipped
            if len(batch):
                images = batch.images.to(self.device, non_blocking=True).float() / 255
                with torch.autocast(self.device.type, enabled=use_amp):
                    heads = train_model(images)
                loss = loss_fn([h.float() for h in heads], batch.targets, tuple(images.shape[-2:]))
                values = loss.as_dict()
                if not math.isfinite(values["total"]):
                    raise TrainingError(
                        f"non-finite loss at epoch {epoch + 1}, batch {i + 1} (box {values['box']}, obj "
                        f"{values['obj']}, cls {values['cls']}); the last good checkpoint in {self.run_dir} is "
                        f"kept. Lower the learning rate (--lr) or lengthen the burn-in (--burn_in).")
                scaler.scale(loss.total / opt.gradient_accumulations).backward()
                stats.add(values, len(batch), wait)
                model.seen.add_(len(batch) * self.world_size)
            if (i + 1) % opt.gradient_accumulations == 0 or i + 1 == len(loader):
                scaler.step(optimizer)
                scaler.update()
                if bns:
                    shrink_gammas(bns, optimizer.param_groups[0]["lr"] * opt.s)
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if ema is not None:
                    ema.update(model)
            bar.set_postfix(box=f"{stats.mean('box'):.3f}", obj=f"{stats.mean('obj'):.3f}",
                            cls=f"{stats.mean('cls'):.3f}", size=batch.images.shape[-1],
                            img_s=f"{stats.images * self.world_size / stats.seconds:.1f}")
            bar.update()
            fetch_start = time.perf_counter()
        bar.close()
        if stats.skipped and self.is_main:
            shown = ", ".join(stats.skipped[:5]) + (" ..." if len(stats.skipped) > 5 else "")
            self.log(f"epoch {epoch + 1}: skipped {len(stats.skipped)} unreadable image(s): {shown}")
        return stats

    def _check_ranks_in_sync(self, model) -> None:
        if self.world_size == 1:
            return
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().to(self.device)
        low, high = checksum.clone(), checksum.clone()
        dist.all_reduce(low, dist.ReduceOp.MIN)
        dist.all_reduce(high, dist.ReduceOp.MAX)
        if not torch.isclose(low, high, rtol=1e-9, atol=1e-6):
            raise TrainingError(f"ranks out of sync: parameter checksums range from {low.item()} to {high.item()}")
        self.log(f"ranks in sync: parameter checksum {checksum.item():.6f} on all {self.world_size} ranks")

    # -- outputs -------------------------------------------------------------------------------

    def _save(self, epoch, model, optimizer, scheduler, scaler, ema, best, names, improved) -> None:
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "epoch": epoch, "best_fitness": best, "rng_cpu": torch.get_rng_state(),
            "cfg_text": model.cfg_text, "names": list(names),
            "options": {k: v for k, v in asdict(self.opt).items() if v is not None},
        }
        exported = ema.ema if ema is not None else model
        save_checkpoint(self.run_dir / "last.pth", state)
        exported.save_darknet_weights(self.run_dir / "last.weights")
        if improved:
            save_checkpoint(self.run_dir / "best.pth", state)
            exported.save_darknet_weights(self.run_dir / "best.weights")

    @staticmethod
    def _read_csv(path: Path) -> list[dict]:
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return [{k: (float(v) if v not in ("", None) else "") for k, v in row.items()} for row in csv.DictReader(f)]

    def _write_logs(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
        with atomic_write(self.run_dir / "results.csv") as f:
            f.write(text.getvalue().encode())
        from utils.plots import plot_bn_gammas, plot_results
        plot_results(self.rows, self.run_dir / "results.png")
        if self.gamma_history:
            plot_bn_gammas(self.gamma_history, self.run_dir / "bn_gammas.png")

    def _record_gammas(self, epoch: int, bns) -> None:
        gammas = torch.cat([bn.weight.detach().abs().flatten().cpu() for bn in bns]).numpy()
        self.gamma_history.append((epoch, gammas))

"""What a training run is asked to do (train.py's flags), and how a resumed run takes its own options back."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from utils.errors import UserError

DEFAULT_DATA = "data/demo/shapes.data"
RUNTIME_OPTIONS = ("resume", "device", "n_cpu", "output", "exist_ok")  # where a run goes on, not what it computes


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
    exist_ok: bool = False
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

    def saved(self) -> dict:
        """The options as a checkpoint stores them (unset ones left out)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def resumed(self, saved: dict, source: Path) -> TrainOptions:
        """The options of the run being resumed, from its checkpoint ``source``: the same run goes on, so
        only where it runs (``RUNTIME_OPTIONS``) comes from these options."""
        known = {f.name for f in fields(TrainOptions)}
        unknown = sorted(set(saved) - known) if isinstance(saved, dict) else None
        if unknown is None or unknown:
            what = f"options {', '.join(map(repr, unknown))} unknown to" if unknown else "no readable options for"
            raise UserError(f"{source}: the checkpoint has {what} this train.py (written by another version?); "
                            f"--resume continues runs of this version, --pretrained_weights {source} starts a new "
                            f"run from its weights")
        runtime = {name: getattr(self, name) for name in RUNTIME_OPTIONS}
        return TrainOptions(**{**asdict(TrainOptions()), **saved, **runtime})

"""What a training run is asked to do (train.py's flags), and how a resumed run takes its own options back."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from utils.darknet.cfg import DEFAULT_IMG_SIZE
from utils.data.synthetic import DEMO_DIR, DEMO_NAME
from utils.errors import UserError
from utils.evaluation.evaluate import EVAL_CONF_THRES, EVAL_NMS_THRES
from utils.evaluation.metrics import DEFAULT_METHOD

DEFAULT_DATA = str(DEMO_DIR / f"{DEMO_NAME}.data")
DEFAULT_EPOCHS = 100
# where a run goes on, not what it computes
RUNTIME_OPTIONS = ("resume", "device", "n_cpu", "cache_images", "output", "exist_ok")
# How long a run goes on: a resumed run keeps its own unless these are given (None: not given); --epochs may only
# grow, and --patience may be changed to go on after an early stop.
EXTENDABLE_OPTIONS = ("epochs", "patience")
# Files a run reads: a checkpoint stores them as absolute paths, so --resume from another folder reads the same
PATH_OPTIONS = ("model_def", "data_config", "pretrained_weights", "teacher_cfg", "teacher_weights")


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a non-finite loss, ranks out of sync); the last good checkpoint is kept."""


@dataclass
class TrainOptions:
    model_def: str = "cfg/res2net-yolov3.cfg"
    data_config: str = DEFAULT_DATA
    pretrained_weights: str | None = None
    cutoff: int | None = None
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or a resumed run's own
    batch_size: int = 8
    gradient_accumulations: int = 1
    img_size: int = DEFAULT_IMG_SIZE
    multiscale_training: bool = False
    rect: bool = False
    n_cpu: int = 2
    cache_images: bool = False
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
    channels_last: bool = False
    sync_bn: bool = False
    optimizer: str | None = None
    lr: float | None = None
    lr_policy: str | None = None
    burn_in: int | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    mosaic: bool | None = None
    augment: bool = True
    conf_thres: float = EVAL_CONF_THRES
    nms_thres: float = EVAL_NMS_THRES
    ap_method: str = DEFAULT_METHOD
    allow_all_negative: bool = False
    single_cls: bool = False
    patience: int | None = None  # evaluations without a better mAP@0.5 before stopping; None or 0: never
    hyp: dict | None = None  # hyperparameters from --hyp (utils/training/hyp.py), as read
    teacher_cfg: str | None = None
    teacher_weights: str | None = None
    distill_weight: float = 1.0
    # the flags named on the command line (not an option of the run): --resume reports those it does not apply,
    # a default value included
    flags_given: frozenset = frozenset()

    def saved(self) -> dict:
        """The options as a checkpoint stores them (unset ones left out; PATH_OPTIONS absolute)."""
        return {name: _absolute(value) if name in PATH_OPTIONS else value
                for name, value in asdict(self).items() if value is not None and name != "flags_given"}

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
        extended = {name: getattr(self, name) for name in EXTENDABLE_OPTIONS if getattr(self, name) is not None}
        own_epochs = saved.get("epochs", DEFAULT_EPOCHS)
        if extended.get("epochs", own_epochs) < own_epochs:
            raise UserError(f"--epochs {extended['epochs']}: {source} is a run of {own_epochs} epochs; --resume may "
                            f"raise its epochs, not lower them (--output NEW with --pretrained_weights {source} starts "
                            f"a shorter run from its weights)")
        return TrainOptions(**{**asdict(TrainOptions()), **saved, **runtime, **extended})

    def ignored_on_resume(self, saved: dict) -> list[str]:
        """The flags, set away from a new run's defaults, that resuming the run whose options are ``saved``
        does not apply, as ``--name value (the run's: value)``; where it runs and how long are applied."""
        defaults = asdict(TrainOptions())
        ignored = []
        for name, value in asdict(self).items():
            if name in (*RUNTIME_OPTIONS, *EXTENDABLE_OPTIONS, "flags_given") or (
                    value == defaults[name] and name not in self.flags_given):
                continue
            own = saved.get(name, defaults[name])
            if not _same_option(name, value, own):
                ignored.append(f"{_flag(name, value)} (the run's: {_shown(own)})")
        return ignored

    def input_files(self) -> list[tuple[str, Path]]:
        """(flag, path) of each file these options name for the run to read: none may lie in a folder it writes."""
        named = [("--model_def", self.model_def), ("--data_config", self.data_config),
                 ("--pretrained_weights", self.pretrained_weights), ("--teacher_cfg", self.teacher_cfg),
                 ("--teacher_weights", self.teacher_weights)]
        return [(flag, Path(path)) for flag, path in named if path]

    def fresh(self) -> TrainOptions:
        """These options for a new run: what was left unset takes its default."""
        return replace(self, epochs=self.epochs or DEFAULT_EPOCHS)


def _absolute(path: str) -> str:
    return str(Path(path).absolute())


def _same_option(name: str, value, own) -> bool:
    if name in PATH_OPTIONS and value and own:
        return Path(value).resolve() == Path(own).resolve()  # '..' and links name the same file
    return value == own


def _flag(name: str, value) -> str:
    if value is True:
        return f"--{name}"
    if name == "hyp":
        return "--hyp FILE"
    return f"--{name} {value}"


def _shown(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)

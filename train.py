"""Train a Darknet-cfg detector.

    python train.py --model_def cfg/res2net-yolov3.cfg --data_config data/voc.data
    torchrun --nproc_per_node 2 train.py ...       # DDP: NCCL on GPUs, gloo on CPU

With no --data_config it trains on the synthetic shapes dataset (data/demo, generated on first use).
The cfg's class count is adapted to the data (the adapted cfg is saved as <output>/model.cfg).
"""
import argparse
import os
import sys
from dataclasses import fields, replace
from pathlib import Path

from utils.cli import IMAGE_SIZE, SEED, ArgumentParser, device_flag, integer, number, run_main
from utils.darknet.cfg import NET_SCHEMA, POLICIES, SIZE_MULTIPLE
from utils.data.batching import BatchPlan
from utils.data.cache import MEMORY_SHARE
from utils.data.check import ALLOW_NEGATIVES_FLAG
from utils.errors import UserError
from utils.evaluation.metrics import METHODS
from utils.training.evolve import EVOLVE_PLOT, EVOLVE_RUNS, EVOLVE_TABLE, EVOLVED_HYP, EvolveRequest
from utils.training.evolve import evolve as evolve_hyperparameters
from utils.training.hyp import HypFile, read_hyp_file
from utils.training.options import DEFAULT_EPOCHS, EXTENDABLE_OPTIONS
from utils.training.trainer import TrainOptions, Trainer

POSITIVE = integer(1)
FRACTION = number(0, 1)
# a flag that acts only with another: named alone it is a mistake to report, not a value to ignore in silence
ACTS_WITH = {"s": "sr", "cutoff": "pretrained_weights", "distill_weight": "teacher_weights",
             "teacher_cfg": "teacher_weights"}


def hyp_file(text: str) -> HypFile:
    """A flag type for --hyp: the file read and checked at parse time (utils/training/hyp.py)."""
    try:
        return HypFile(Path(text), read_hyp_file(text))
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_data_and_model_flags(p: ArgumentParser, d: TrainOptions) -> None:
    p.add_argument("--model_def", default=d.model_def, help="Darknet .cfg of the model")
    p.add_argument("--data_config", default=d.data_config, help=".data or .yaml dataset config (the default is the "
                                                                "demo set, generated on first use)")
    p.add_argument(ALLOW_NEGATIVES_FLAG, dest="allow_all_negative", action="store_true",
                   help="train even when most images have no label file, or no image has a box (they are "
                        "negatives); without it the dataset check stops, naming the label paths it looked for")
    p.add_argument("--single_cls", action="store_true",
                   help="train every box as one class (the data's only class, else 'object'), as a detector of "
                        "objects of any kind; test.py --single_cls scores such a model")
    p.add_argument("--pretrained_weights", help=".weights (whole, or a backbone with --cutoff) or a .pth checkpoint")
    p.add_argument("--cutoff", type=POSITIVE, help="load only layers 0..N-1 of --pretrained_weights, .weights or "
                                                   ".pth (default: N from a '<name>.conv.N' file name)")
    p.add_argument("--img_size", type=IMAGE_SIZE, default=d.img_size, help=f"input size (multiple of {SIZE_MULTIPLE})")
    p.add_argument("--multiscale_training", action="store_true",
                   help=f"a new input size every {BatchPlan.size_every} batches")
    p.add_argument("--rect", action="store_true",
                   help=f"rectangular batches: images of like aspect ratio batched together, each batch at the "
                        f"smallest multiple of {SIZE_MULTIPLE} that holds them with their long side at --img_size "
                        f"(less padding: a shorter epoch on non-square images); no mosaic")
    p.add_argument("--freeze", type=integer(0), default=d.freeze, help="freeze layers 0..N-1")
    p.add_argument("--teacher_weights", help="distil from this teacher (.pth, or .weights with --teacher_cfg), e.g. "
                                             "the model a pruned one came from; it needs the student's heads")
    p.add_argument("--teacher_cfg", help="the teacher's .cfg (default: the one its .pth carries)")
    p.add_argument("--distill_weight", type=number(0, above=True), default=d.distill_weight,
                   help="weight of the distillation term (KL toward the teacher's objectness, class scores and "
                        "boxes) added to the loss")


def _add_run_flags(p: ArgumentParser, d: TrainOptions) -> None:
    p.add_argument("--epochs", type=POSITIVE, default=DEFAULT_EPOCHS,
                   help="epochs to train (with --resume: the run's own unless given, and only raised)")
    p.add_argument("--patience", type=integer(0), default=0,
                   help="stop when mAP@0.5 has not improved for N evaluations (0: never; with --resume: the run's "
                        "own unless given)")
    p.add_argument("--batch_size", type=POSITIVE, default=d.batch_size, help="images per batch (per process under DDP)")
    p.add_argument("--gradient_accumulations", type=POSITIVE, default=d.gradient_accumulations,
                   help="batches per optimiser step")
    p.add_argument("--n_cpu", type=integer(0), default=d.n_cpu, help="data loading worker processes")
    p.add_argument("--cache_images", action="store_true",
                   help=f"decode every image once and hold it in memory (refused past {MEMORY_SHARE * 100:.0f}%% of "
                        f"the memory available): later epochs read no file")
    p.add_argument("--checkpoint_interval", type=POSITIVE, default=d.checkpoint_interval,
                   help="epochs between checkpoints")
    p.add_argument("--evaluation_interval", type=POSITIVE, default=d.evaluation_interval,
                   help="epochs between evaluations")
    p.add_argument("--output", help="run directory, new or empty (default: runs/train/expN; with --resume, the "
                                    "checkpoint's folder; with --evolve, the folder of its trials: runs/evolve/expN)")
    p.add_argument("--exist_ok", action="store_true", help="train into an --output that holds results, replacing "
                                                          "them")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN",
                   help="last.pth, or a run directory, to continue that run exactly where it stopped (with its own "
                        "options; only --device, --n_cpu, --cache_images, --output and a larger --epochs or other "
                        "--patience may change); without a value, the newest runs/train/*/last.pth")
    p.add_argument("--evolve", type=integer(1), metavar="N",
                   help="evolve the hyperparameters: N seeded trainings of --epochs each, each mutating the best so "
                        f"far, into {EVOLVE_RUNS}/expN ({EVOLVE_TABLE}, {EVOLVE_PLOT}, {EVOLVED_HYP} for --hyp); "
                        f"default: train once")
    p.add_argument("--device", type=device_flag, default=d.device,
                   help="cpu, cuda, cuda:N or GPU indices such as 0 or 0,1 (under torchrun each process takes its "
                        "LOCAL_RANK-th; default: cuda if available)")
    p.add_argument("--seed", type=SEED, default=d.seed, help="seed of initialisation, shuffling and augmentation")


def _add_optimisation_flags(p: ArgumentParser, d: TrainOptions) -> None:
    p.add_argument("--hyp", type=hyp_file, metavar="FILE",
                   help="hyperparameters, 'key = value' lines (what --evolve writes): learning_rate, momentum, decay, "
                        "hue, saturation, exposure ([net]), obj/cls/iou_normalizer ([yolo]), scale, translate, mosaic; "
                        "the flags below win over it")
    p.add_argument("--sr", action="store_true", help="sparsity training: L1 on BN gammas, for channel pruning")
    p.add_argument("--s", type=number(0, above=True), default=d.s,
                   help="sparsity strength for --sr: after every optimiser step each |BN gamma| shrinks by lr * s, "
                        "stopping at 0")
    p.add_argument("--freeze_bn", action="store_true", help="freeze every BN (detectron2's FrozenBatchNorm): "
                   "running statistics normalise in training too, gamma and beta are not trained")
    p.add_argument("--ema", action="store_true", help="keep an exponential moving average of the weights")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPU (with --channels_last a "
                        "step 1.5-2.8x faster where the CPU has AMX)")
    p.add_argument("--channels_last", action="store_true",
                   help="channels-last memory: the same arithmetic, rounded differently, and a CPU step 6-19%% shorter")
    p.add_argument("--sync_bn", action="store_true", help="synchronised BatchNorm under DDP")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="default: [net] adam=1 -> adam, else sgd")
    p.add_argument("--lr", type=number(0, NET_SCHEMA["learning_rate"].high, above=True),
                   help="learning rate (default: [net] learning_rate)")
    p.add_argument("--lr_policy", choices=POLICIES, help="default: [net] policy")
    p.add_argument("--burn_in", type=integer(0), help="warm-up steps (default: [net] burn_in, at most 5%% of the run)")
    p.add_argument("--momentum", type=FRACTION, help="default: [net] momentum (Adam's beta1: below 1)")
    p.add_argument("--weight_decay", type=number(0), help="default: [net] decay")
    p.add_argument("--mosaic", action=argparse.BooleanOptionalAction, default=None, help="default: [net] mosaic")
    p.add_argument("--no_augment", dest="augment", action="store_false", help="letterbox only, no augmentation")
    p.add_argument("--conf_thres", type=FRACTION, default=d.conf_thres, help="evaluation confidence threshold")
    p.add_argument("--nms_thres", type=FRACTION, default=d.nms_thres, help="evaluation NMS IoU threshold")
    p.add_argument("--ap_method", choices=METHODS, default=d.ap_method,
                   help="evaluation AP: COCO 101-point, VOC 11-point or all-point area (as test.py)")


def parse_args(argv=None) -> tuple[TrainOptions, EvolveRequest | None]:
    """The run's options and what --evolve asks for (None: one training)."""
    d = TrainOptions()
    p = ArgumentParser(description=__doc__)
    _add_data_and_model_flags(p, d)
    _add_run_flags(p, d)
    _add_optimisation_flags(p, d)
    # argparse fills in a default only where the namespace has no value yet: these stay None when not given, so
    # that a resumed run keeps its own (--help still shows the defaults of a new run)
    args = p.parse_args(argv, argparse.Namespace(**{name: None for name in (*EXTENDABLE_OPTIONS, *ACTS_WITH)}))
    for name, partner in ACTS_WITH.items():
        if getattr(args, name) is not None and not getattr(args, partner) and args.resume is None:
            p.error(f"--{name} acts only with --{partner}; add it, or leave --{name} out")
    if args.sr and args.freeze_bn:
        p.error("--sr makes the BN scales sparse and --freeze_bn keeps them fixed; use one of them")
    if args.rect and args.mosaic:
        p.error("--rect batches images of like shape, and --mosaic pastes four of any shape into one; use one of them")
    unset = ACTS_WITH if args.resume is not None else (*EXTENDABLE_OPTIONS, *ACTS_WITH)
    for name in unset:
        setattr(args, name, getattr(args, name) if getattr(args, name) is not None else p.get_default(name))
    hyp, args.hyp = args.hyp, args.hyp.values if args.hyp else None
    options = TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions) if f.name != "flags_given"})
    evolution = EvolveRequest(args.evolve, hyp.path if hyp else None) if args.evolve else None
    return replace(options, flags_given=flags_given(p, argv)), evolution


def flags_given(parser: ArgumentParser, argv: list[str] | None) -> frozenset[str]:
    """The options the command line names, whatever their values: parsed again over a namespace in which every
    option is already set, which argparse leaves alone unless the flag is given."""
    unset = object()
    names = [f.name for f in fields(TrainOptions)]
    probe = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(names, unset)))
    return frozenset(name for name in names if getattr(probe, name) is not unset)


def train(options: TrainOptions) -> int:
    Trainer(options).run()
    return 0


def evolve(options: TrainOptions, request: EvolveRequest) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--evolve runs its trials one after another in one process; start it without torchrun")
    evolve_hyperparameters(options, request)
    return 0


def main(argv=None) -> int:
    options, evolution = parse_args(argv)
    return run_main(lambda: train(options) if evolution is None else evolve(options, evolution))


if __name__ == "__main__":
    sys.exit(main())

"""Train a Darknet-cfg detector.

    python train.py --model_def cfg/res2net-yolov3.cfg --data_config data/voc.data
    torchrun --nproc_per_node 2 train.py ...       # DDP: NCCL on GPUs, gloo on CPU

With no --data_config it trains on the synthetic shapes dataset (data/demo, generated on first use).
The cfg's class count is adapted to the data (the adapted cfg is saved as <output>/model.cfg).
"""
import argparse
import sys
from dataclasses import fields

from utils.cli import ArgumentParser, device_flag, integer, number, run_main
from utils.training.trainer import TrainOptions, Trainer

POSITIVE = integer(1)
IMAGE_SIZE = integer(32, None, 32)  # Darknet's networks need inputs divisible by their largest stride, 32
FRACTION = number(0, 1)
SEED = integer(0, 2 ** 32 - 1)  # numpy's seed sequences take no negative seeds


def parse_args(argv=None) -> TrainOptions:
    d = TrainOptions()
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model_def", default=d.model_def, help="Darknet .cfg of the model")
    p.add_argument("--data_config", default=d.data_config, help=".data or .yaml dataset config (the default is the "
                                                                "demo set, generated on first use)")
    p.add_argument("--pretrained_weights", help=".weights (whole, or a backbone with --cutoff) or a .pth checkpoint")
    p.add_argument("--cutoff", type=POSITIVE, help="load only layers 0..N-1 of --pretrained_weights (default: N "
                                                   "from a '<name>.conv.N' file name)")
    p.add_argument("--epochs", type=POSITIVE, default=d.epochs, help="epochs to train")
    p.add_argument("--batch_size", type=POSITIVE, default=d.batch_size, help="images per batch (per process under DDP)")
    p.add_argument("--gradient_accumulations", type=POSITIVE, default=d.gradient_accumulations,
                   help="batches per optimiser step")
    p.add_argument("--img_size", type=IMAGE_SIZE, default=d.img_size, help="input size (multiple of 32)")
    p.add_argument("--multiscale_training", action="store_true", help="a new input size every 10 batches")
    p.add_argument("--n_cpu", type=integer(0), default=d.n_cpu, help="data loading worker processes")
    p.add_argument("--checkpoint_interval", type=POSITIVE, default=d.checkpoint_interval,
                   help="epochs between checkpoints")
    p.add_argument("--evaluation_interval", type=POSITIVE, default=d.evaluation_interval,
                   help="epochs between evaluations")
    p.add_argument("--output", help="run directory, new or empty (default: runs/train/expN; with --resume, the "
                                    "checkpoint's folder)")
    p.add_argument("--exist_ok", action="store_true", help="train into an --output that holds results, replacing "
                                                          "them")
    p.add_argument("--resume", help="last.pth, or a run directory, to continue that run exactly where it stopped "
                                    "(with its own options; only --device, --n_cpu and --output may change)")
    p.add_argument("--device", type=device_flag, default=d.device,
                   help="cpu, cuda, cuda:N or GPU indices such as 0 or 0,1 (under torchrun each process takes its "
                        "LOCAL_RANK-th; default: cuda if available)")
    p.add_argument("--seed", type=SEED, default=d.seed, help="seed of initialisation, shuffling and augmentation")
    p.add_argument("--sr", action="store_true", help="sparsity training: L1 on BN gammas, for channel pruning")
    p.add_argument("--s", type=number(0, above=True), default=d.s,
                   help="sparsity strength for --sr: after every optimiser step each |BN gamma| shrinks by lr * s, "
                        "stopping at 0")
    p.add_argument("--freeze", type=integer(0), default=d.freeze, help="freeze layers 0..N-1")
    p.add_argument("--freeze_bn", action="store_true", help="freeze every BN (detectron2's FrozenBatchNorm): "
                   "running statistics normalise in training too, gamma and beta are not trained")
    p.add_argument("--ema", action="store_true", help="keep an exponential moving average of the weights")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--sync_bn", action="store_true", help="synchronised BatchNorm under DDP")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="default: [net] adam=1 -> adam, else sgd")
    p.add_argument("--lr", type=number(0, above=True), help="learning rate (default: [net] learning_rate)")
    p.add_argument("--lr_policy", choices=("steps", "constant", "poly", "cosine"), help="default: [net] policy")
    p.add_argument("--burn_in", type=integer(0), help="warm-up steps (default: [net] burn_in, at most 5%% of the run)")
    p.add_argument("--momentum", type=FRACTION, help="default: [net] momentum (Adam's beta1: below 1)")
    p.add_argument("--weight_decay", type=number(0), help="default: [net] decay")
    p.add_argument("--mosaic", action=argparse.BooleanOptionalAction, default=None, help="default: [net] mosaic")
    p.add_argument("--no_augment", dest="augment", action="store_false", help="letterbox only, no augmentation")
    p.add_argument("--conf_thres", type=FRACTION, default=d.conf_thres, help="evaluation confidence threshold")
    p.add_argument("--nms_thres", type=FRACTION, default=d.nms_thres, help="evaluation NMS IoU threshold")
    p.add_argument("--ap_method", choices=("coco", "voc11", "area"), default=d.ap_method,
                   help="evaluation AP: COCO 101-point, VOC 11-point or all-point area (as test.py)")
    args = p.parse_args(argv)
    return TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions)})


def train(options: TrainOptions) -> int:
    Trainer(options).run()
    return 0


def main(argv=None) -> int:
    options = parse_args(argv)
    return run_main(lambda: train(options))


if __name__ == "__main__":
    sys.exit(main())

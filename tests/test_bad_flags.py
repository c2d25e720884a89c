"""Bad input to every command line ends in exactly one ``error:`` line naming the flag or file, a non-zero
exit code and no traceback; each row stops at parse time or at set-up. (detect.py's rows live with detection.)"""
import subprocess
import sys

import pytest
import torch

from models import Darknet
from tests.conftest import REPO
from tests.test_train import TINY
from utils.darknet.cfg import read_cfg
from utils.darknet.cfg_edit import with_classes
from utils.darknet.checkpoint import save_checkpoint, save_model
from utils.data.synthetic import write_dataset

pytestmark = pytest.mark.e2e  # every test here runs a command line as a subprocess

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small inputs the rows name as {data}, {unlabelled}, {cfg}, {weights_only}, {junk}, {misfit}, {diverged},
    {run} and {existing}."""
    root = tmp_path_factory.mktemp("bad_flags")
    data = write_dataset(root / "set", train=2, valid=1, size=64, seed=3)
    unlabelled = write_dataset(root / "bare", train=1, valid=1, size=64, seed=4)
    (root / "bare" / "labels").rename(root / "bare" / "Labels")  # where Darknet's rule does not look
    (root / "tiny.cfg").write_text(TINY)
    model = Darknet(with_classes(read_cfg(root / "tiny.cfg"), 4))
    save_model(model, root / "weights_only.pth", ["circle", "rectangle", "triangle", "cross"])
    (root / "junk.pth").write_bytes(b"junk\n")
    save_checkpoint(root / "misfit.pth", {"model": model.state_dict(), "cfg_text": TINY})  # 80-class cfg text
    diverged = Darknet(with_classes(read_cfg(root / "tiny.cfg"), 4))
    with torch.no_grad():
        diverged.layers[2].conv.weight[0, 0, 0, 0] = float("nan")
    save_model(diverged, root / "diverged.pth")
    (root / "run").mkdir()
    (root / "run" / "last.pth").write_bytes(b"an earlier run's")
    (root / "existing.json").write_text("[]")
    (root / "pruned").mkdir()
    save_model(model, root / "pruned" / "pruned.pth", ["circle", "rectangle", "triangle", "cross"])
    return {"data": data, "unlabelled": unlabelled, "cfg": root / "tiny.cfg", "weights_only": root / "weights_only.pth",
            "junk": root / "junk.pth", "misfit": root / "misfit.pth", "diverged": root / "diverged.pth",
            "run": root / "run", "existing": root / "existing.json", "root": root}


TRAIN = "train.py --model_def {cfg} --data_config {data} --img_size 64 --n_cpu 0 --epochs 1 --device cpu"
TEST = "test.py --weights_path {weights_only} --data_config {data} --img_size 64 --n_cpu 0 --device cpu"
PRUNE = "prune.py --weights_path {weights_only} --percent 0.3 --img_size 64"

ROWS = [
    (TRAIN + " --checkpoint_interval 0", "argument --checkpoint_interval: expected an integer in 1 .. inf, got 0"),
    (TRAIN + " --evaluation_interval 0", "argument --evaluation_interval: expected an integer in 1 .. inf, got 0"),
    (TRAIN + " --batch_size 0", "argument --batch_size: expected an integer in 1 .. inf, got 0"),
    (TRAIN + " --batch_size -1", "argument --batch_size: expected an integer in 1 .. inf, got -1"),
    (TRAIN + " --gradient_accumulations 0", "argument --gradient_accumulations: expected an integer in 1 .. inf"),
    (TRAIN + " --img_size 33", "argument --img_size: expected an integer in 32 .. 8192, a multiple of 32, got 33"),
    (TRAIN + " --img_size -32", "argument --img_size: expected an integer in 32 .. 8192, a multiple of 32, got -32"),
    (TRAIN + " --img_size 99999968", "argument --img_size: expected an integer in 32 .. 8192, a multiple of 32, got "
                                     "99999968"),
    (TRAIN + " --n_cpu -1", "argument --n_cpu: expected an integer in 0 .. inf, got -1"),
    (TRAIN + " --lr -1", "argument --lr: expected a finite number in (0, 10], got -1"),
    (TRAIN + " --lr 1e39", "argument --lr: expected a finite number in (0, 10], got 1e39"),
    (TRAIN + " --epochs 0", "argument --epochs: expected an integer in 1 .. inf, got 0"),
    (TRAIN + " --s 0.01", "--s acts only with --sr; add it, or leave --s out"),
    (TRAIN + " --cutoff 5", "--cutoff acts only with --pretrained_weights"),
    (TRAIN + " --distill_weight 3", "--distill_weight acts only with --teacher_weights"),
    (TRAIN + " --teacher_cfg {cfg}", "--teacher_cfg acts only with --teacher_weights"),
    (TRAIN + " --sr --freeze_bn", "--sr makes the BN scales sparse and --freeze_bn keeps them fixed; use one of them"),
    ("-m utils.data.synthetic --out {root}/fresh --size 100000",
     "--size: expected an integer in 32 .. 8192, got 100000"),
    (TRAIN + " --evolve 2 --output {root} --exist_ok", "--model_def {cfg} is at or inside {root}, where --output "
                                                         "writes"),
    (TRAIN + " --rect --mosaic", "--rect batches images of like shape, and --mosaic pastes four of any shape into one"),
    pytest.param(TRAIN.replace("--device cpu", "--device 0"), "--device 0: CUDA is not available", marks=NO_CUDA),
    (TRAIN + " --output {root}/fresh --freeze 1000", "--freeze 1000: {cfg} has only 6 layers (0..5)"),
    (TRAIN + " --output {run}", "--output {run} holds a training run (last.pth): --resume {run} continues it"),
    (TRAIN + " --resume {weights_only}", "{weights_only}: holds a model's weights only"),
    (TRAIN + " --resume {junk}", "{junk}: not a readable checkpoint"),
    (TRAIN + " --output {root}/fresh --pretrained_weights {junk}", "{junk}: not a readable checkpoint"),
    (TRAIN + " --output {root}/fresh --pretrained_weights {diverged}", "--pretrained_weights {diverged}: {cfg}:"),
    (TRAIN + " --output {root}/fresh --pretrained_weights {diverged}", "layer 2 [convolutional] holds NaN or infinite "
                                                                       "weights, so training from them cannot work"),
    (TEST + " --save_json {root}/ev.json --plots {root}/ev.json", "--plots {root}/ev.json is the file --save_json "
                                                                  "{root}/ev.json writes"),
    (TEST + " --plots {root}/ev --pr_curves {root}/ev/F1_curve.png",
     "--plots {root}/ev/F1_curve.png and --pr_curves {root}/ev/F1_curve.png are the same"),
    pytest.param(TEST.replace("--device cpu", "--device cuda"), "--device cuda: CUDA is not available",
                 marks=NO_CUDA),
    (TEST + " --save_json {existing}", "--save_json {existing}: the file exists; choose another name or pass "
                                       "--exist_ok"),
    (TEST + " --save_json {existing}/x.json", "--save_json {existing}/x.json: {existing} is a file, not a folder"),
    (TEST + " --rect --no-letterbox", "--rect keeps each image's aspect ratio and --no-letterbox stretches it; use one "
                                      "of them"),
    (TEST + " --plots {existing}/pics", "--plots {existing}/pics/confusion_matrix.png: {existing} is a file, not a "
                                        "folder"),
    (PRUNE + " --output {cfg}/pruned", "--output {cfg}/pruned: {cfg} is a file, not a folder"),
    ("calc_anchors.py --data_config {data} --model_def {cfg} --out {cfg}/new.cfg",
     "--out {cfg}/new.cfg: {cfg} is a file, not a folder"),
    (TEST + " --pr_curves {root}/pr.txt", "argument --pr_curves: expected a file name ending in .png, got"),
    (TEST + " --conf_thres nan", "argument --conf_thres: expected a finite number in [0, 1], got nan"),
    (TEST + " --save_json {data} --exist_ok", "--save_json {data} is the input {data}; write it elsewhere"),
    (TEST + " --save_json {root}/set/labels/valid/00000.txt --exist_ok",
     "--save_json {root}/set/labels/valid/00000.txt is the input"),
    ("prune.py --weights_path {root}/pruned/pruned.pth --percent 0.3 --output {root}/pruned --exist_ok",
     "--output {root}/pruned/pruned.pth is the input {root}/pruned/pruned.pth"),
    ("calc_anchors.py --data_config {data} --model_def {cfg} --out {cfg} --force", "--out {cfg} is the input {cfg}"),
    (TEST.replace("{weights_only}", "{misfit}"), "{misfit}: tensor 'layers.4.conv.weight' has shape (27, 32, 1, 1)"),
    (PRUNE.replace("0.3", "nan"), "argument --percent: expected a finite number in [0, 1), got nan"),
    (PRUNE + " --data_config {unlabelled} --output {root}/fresh", "no label file was found for any of its 1 images"),
    (PRUNE + " --layer_keep 2", "argument --layer_keep: expected a finite number in [0, 1], got 2"),
    (PRUNE + " --output {cfg}", "--output {cfg}: is a file, expected a folder"),
    (PRUNE.replace("{weights_only}", "{misfit}"), "{misfit}: tensor 'layers.4.conv.weight'"),
    ("convert.py {weights_only} {root}/out.weights --cutoff 0", "argument --cutoff: expected an integer in 1 .. inf"),
    ("convert.py {weights_only} --onnx {root}/m.onnx --img_size 33", "argument --img_size: expected an integer in "
                                                                     "32 .. 8192, a multiple of 32, got 33"),
    ("convert.py /dev/null {root}/out.pth", "/dev/null: is not a regular file"),
    ("convert.py {weights_only} {root}/out.pth --nms", "--nms sets an export; add --onnx OUT.onnx"),
    ("convert.py {weights_only} {root}/out.pth --fuse", "--fuse sets an export; add --onnx OUT.onnx or --torchscript "
                                                        "OUT.pt"),
    ("convert.py {weights_only} {root}/out.weights --input_mean 1 1 1", "--input_mean describes a classifier's "
                                                                       "inputs; it applies with --import_imagenet"),
    ("convert.py --import_imagenet {junk} --model_def {cfg} {root}/b.conv.3 --cutoff 2",
     "--cutoff does not apply to --import_imagenet"),
    ("convert.py {misfit} {root}/out.weights", "{misfit}: tensor 'layers.4.conv.weight'"),
    ("models.py --summary {cfg} --img_size 64 96 128", "argument --img_size: expected one size or height width"),
    ("models.py --summary {cfg} --weights {junk}", "{junk}: not a readable checkpoint"),
]


@pytest.mark.parametrize("command, fragment", ROWS)
def test_bad_input_is_one_named_error_line(command, fragment, files):
    argv = command.format(**files).split()
    result = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]
    assert fragment.format(**files) in errors[0]
    assert not (files["root"] / "fresh").exists()  # a refused start leaves no run folder

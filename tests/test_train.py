"""train.py end to end on a tiny generated dataset: outputs, checkpoints, exact resume, kill -9, DDP."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from models import Darknet
from tests.cfgs import NET, conv, head
from tests.conftest import REPO
from utils.darknet.checkpoint import CheckpointError, load_pretrained
from utils.darknet.weights import WeightsFileError
from utils.data.synthetic import write_dataset
from utils.training.optim import init_head_biases

TINY = f"""{NET}learning_rate=0.001
burn_in=2
max_batches=100
policy=steps
steps=80
scales=.1

{conv(8, 3, 2)}[res2net]
planes=8
base_width=32

{conv(16, 3, 2)}[triangle]
planes=16
base_width=32

{head(classes=80, anchors="8,8, 16,16, 32,32")}"""


def tiny_training_set(tmp_path_factory, train_images: int):
    """(a generated 64 px shapes .data with ``train_images`` training and 4 validation images, TINY's cfg)."""
    root = tmp_path_factory.mktemp("shapes")
    data = write_dataset(root, train=train_images, valid=4, size=64, seed=1)
    cfg = root / "tiny.cfg"
    cfg.write_text(TINY)
    return data, cfg


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_training_set(tmp_path_factory, 12)


def train(data, cfg, output, *extra, check=True, env=None):
    command = [sys.executable, "train.py", "--model_def", str(cfg), "--data_config", str(data), "--img_size", "64",
               "--batch_size", "4", "--n_cpu", "0", "--output", str(output), "--optimizer", "adam", *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


def model_tensors(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.e2e
def test_training_writes_every_output_and_adapts_the_classes(dataset, tmp_path):
    data, cfg = dataset
    result = train(data, cfg, tmp_path / "run", "--epochs", "2", "--ema")
    for name in ("last.pth", "best.pth", "last.weights", "best.weights", "model.cfg", "results.csv", "results.png",
                 "labels.png", "train_batch0.jpg", "train_batch2.jpg", "confusion_matrix.png", "F1_curve.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert "mAP@0.5 =" in result.stderr + result.stdout
    assert not list((tmp_path / "run").glob(".*tmp"))
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and state["names"] == ["circle", "rectangle", "triangle", "cross"]
    assert state["ema"] is not None and "classes=4" in state["cfg_text"]
    model = Darknet(tmp_path / "run" / "model.cfg")
    assert model.num_classes == 4
    model.load_darknet_weights(tmp_path / "run" / "last.weights")
    assert int(model.seen) == 2 * 12
    with open(tmp_path / "run" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"] and all(float(r["mAP50"]) >= 0 for r in rows)


@pytest.mark.e2e
def test_resume_of_a_finished_run_uses_its_options_and_has_nothing_left(dataset, tmp_path):
    data, cfg = dataset
    train(data, cfg, tmp_path / "run", "--epochs", "1")
    before, events = model_tensors(tmp_path / "run" / "last.pth"), sorted((tmp_path / "run").glob("events.*"))
    files = {path: path.stat().st_mtime_ns for path in (tmp_path / "run").iterdir()}
    result = train(data, cfg, tmp_path / "run", "--batch_size", "2", "--resume", str(tmp_path / "run"))
    assert sorted((tmp_path / "run").glob("events.*")) == events  # no TensorBoard file for a run with nothing left
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "run").iterdir()} == files  # nothing rewritten
    assert "nothing left to train: the run's 1 epochs are done" in result.stderr + result.stdout
    label = data.parent / "labels" / "train" / "00000.txt"
    kept, picture = label.read_text(), (tmp_path / "run" / "labels.png").read_bytes()
    try:
        label.write_text("")  # the labels edited between the runs: the picture follows them
        train(data, cfg, tmp_path / "run", "--resume", str(tmp_path / "run"))
    finally:
        label.write_text(kept)
    assert (tmp_path / "run" / "labels.png").read_bytes() != picture
    assert "goes on with its own options, so these are not applied: --batch_size 2 (the run's: 4);" in result.stdout
    elsewhere = train(data, cfg, tmp_path / "copy", "--resume", str(tmp_path / "run"), check=False)
    assert elsewhere.returncode == 1 and elsewhere.stderr.splitlines()[-1] == (
        f"error: --resume {tmp_path / 'run' / 'last.pth'}: nothing to train into --output {tmp_path / 'copy'}: the "
        f"run's 1 epochs are done (--resume with a larger --epochs trains more)")
    assert not (tmp_path / "copy").exists()
    after = model_tensors(tmp_path / "run" / "last.pth")
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.e2e
def test_kill_9_mid_epoch_loses_at_most_that_epoch(dataset, tmp_path):
    data, cfg = dataset
    train(data, cfg, tmp_path / "straight", "--epochs", "4")
    run = tmp_path / "killed"
    command = [sys.executable, "train.py", "--model_def", str(cfg), "--data_config", str(data), "--img_size", "64",
               "--batch_size", "4", "--n_cpu", "0", "--output", str(run), "--optimizer", "adam", "--epochs", "4"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.pth").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = torch.load(run / "last.pth", weights_only=True)
    assert saved["epoch"] < 3, "the run finished before it could be killed"
    train(data, cfg, run, "--resume", str(run / "last.pth"))
    straight, resumed = model_tensors(tmp_path / "straight" / "last.pth"), model_tensors(run / "last.pth")
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


@pytest.mark.e2e
def test_non_finite_loss_stops_with_a_clear_message(dataset, tmp_path):
    data, cfg = dataset
    result = train(data, cfg, tmp_path / "nan", "--epochs", "3", "--lr", "10", "--optimizer", "sgd", check=False)
    assert result.returncode == 1
    assert "non-finite loss at epoch" in result.stderr and "Lower the learning rate" in result.stderr


def test_gamma_shrinkage_is_proximal():
    from utils.training.optim import shrink_gammas
    bn = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -0.5, 0.05, -0.02]))
    shrink_gammas([bn], 0.1)
    assert bn.weight.tolist() == pytest.approx([0.4, -0.4, 0.0, 0.0])


@pytest.mark.e2e
def test_sparsity_training_states_its_shrink_budget_and_writes_the_gamma_histogram(dataset, tmp_path):
    data, cfg = dataset
    # 12 images in batches of 4 for 2 epochs at a constant lr 0.01, no burn-in: 6 steps x 0.01 x s 5 = 0.30
    result = train(data, cfg, tmp_path / "sr", "--epochs", "2", "--sr", "--s", "5", "--lr", "0.01",
                   "--lr_policy", "constant", "--burn_in", "0")
    assert (tmp_path / "sr" / "bn_gammas.png").is_file()
    assert "L1 5.0 on 12 BN scale vectors" in result.stderr + result.stdout
    assert "0.3 in all over this run's schedule" in result.stderr + result.stdout
    before = dict(np.load(tmp_path / "sr" / "bn_gammas.npz"))
    assert list(before["epochs"]) == [0, 1] and before["epoch0"].ndim == 1 and len(before["epoch0"]) > 12
    subprocess.run([sys.executable, "train.py", "--resume", str(tmp_path / "sr"), "--n_cpu", "0", "--epochs", "3"],
                   cwd=REPO, check=True, capture_output=True)
    after = np.load(tmp_path / "sr" / "bn_gammas.npz")  # the resumed run's plot keeps the epochs before it
    assert list(after["epochs"]) == [0, 1, 2] and np.array_equal(after["epoch1"], before["epoch1"])


@pytest.mark.e2e
def test_missing_data_config_is_a_clear_error(dataset, tmp_path):
    _, cfg = dataset
    result = train(tmp_path / "absent.data", cfg, tmp_path / "x", "--epochs", "1", check=False)
    assert result.returncode == 1 and "absent.data: cannot read data config" in result.stderr


@pytest.mark.e2e
def test_ddp_two_cpu_processes_stay_in_sync_in_one_run_folder(dataset, tmp_path):
    data, cfg = dataset
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(REPO / "train.py"), "--model_def", str(cfg), "--data_config", str(data), "--img_size", "64",
               "--batch_size", "2", "--n_cpu", "0", "--epochs", "2",
               "--optimizer", "adam", "--device", "cpu", "--patience", "5",  # rank 0 tells the others: go on
               "--channels_last", "--rect"]  # --rect: the image sizes read in shares, one batch shape a step
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("ranks in sync") == 2
    assert (result.stdout + result.stderr).count("--rect: ") == 1
    assert [run.name for run in (tmp_path / "runs" / "train").iterdir()] == ["exp1"]  # claimed once, for both
    state = torch.load(tmp_path / "runs" / "train" / "exp1" / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and state["options"]["channels_last"]
    assert state["model"]["layers.0.conv.weight"].is_contiguous(memory_format=torch.channels_last)


def test_pretrained_file_with_another_class_count_reinitialises_the_heads(tmp_path):
    (tmp_path / "tiny.cfg").write_text(TINY)
    source = Darknet(tmp_path / "tiny.cfg")
    source.save_darknet_weights(tmp_path / "80.weights")
    (tmp_path / "four.cfg").write_text(TINY.replace("filters=255", "filters=27").replace("classes=80", "classes=4"))
    target = Darknet(tmp_path / "four.cfg")
    message = load_pretrained(target, tmp_path / "80.weights")
    assert "trained for 80 classes, this model has 4" in message and "layers 4" in message
    assert torch.equal(target.layers[3].split.conv1.conv.weight, source.layers[3].split.conv1.conv.weight)


def test_a_pretrained_backbone_is_read_by_its_name_and_one_past_the_cfg_says_so(tmp_path):
    (tmp_path / "tiny.cfg").write_text(TINY)
    source = Darknet(tmp_path / "tiny.cfg")
    source.save_darknet_weights(tmp_path / "tiny.conv.3", cutoff=3)
    target = Darknet(tmp_path / "tiny.cfg")
    assert load_pretrained(target, tmp_path / "tiny.conv.3") == f"loaded {tmp_path / 'tiny.conv.3'} (layers 0..2)"
    assert torch.equal(target.layers[2].conv.weight, source.layers[2].conv.weight)
    (tmp_path / "tiny.conv.9").write_bytes((tmp_path / "tiny.conv.3").read_bytes())
    with pytest.raises(WeightsFileError, match=r"tiny\.conv\.9: its name says a backbone of 9 layers "
                                               r"\(<net>\.conv\.9\), but the cfg has 6"):
        load_pretrained(target, tmp_path / "tiny.conv.9")
    source.save_darknet_weights(tmp_path / "whole.conv.3")  # every layer, under a name that says three
    with pytest.raises(WeightsFileError, match=r"floats are left over after layers 0\.\.2, as its name says"):
        load_pretrained(target, tmp_path / "whole.conv.3")
    assert "(layers 0..2)" in load_pretrained(target, tmp_path / "whole.conv.3", cutoff=3)  # as Darknet's partial


def test_pretrained_checkpoint_starts_from_its_ema_weights(tmp_path):
    (tmp_path / "tiny.cfg").write_text(TINY)
    raw, ema = Darknet(tmp_path / "tiny.cfg"), Darknet(tmp_path / "tiny.cfg")
    torch.save({"model": raw.state_dict(), "ema": {"model": ema.state_dict(), "updates": 5}},
               tmp_path / "best.pth")
    target = Darknet(tmp_path / "tiny.cfg")
    load_pretrained(target, tmp_path / "best.pth")
    assert torch.equal(target.layers[0].conv.weight, ema.layers[0].conv.weight)
    assert not torch.equal(target.layers[0].conv.weight, raw.layers[0].conv.weight)


def test_pretrained_checkpoint_of_a_class_count_or_a_backbone_loads_and_of_another_network_is_refused(tmp_path):
    (tmp_path / "tiny.cfg").write_text(TINY)
    (tmp_path / "four.cfg").write_text(TINY.replace("filters=255", "filters=27").replace("classes=80", "classes=4"))
    (tmp_path / "wide.cfg").write_text(TINY.replace("filters=16", "filters=24"))
    for name in ("tiny", "wide"):
        torch.save({"model": Darknet(tmp_path / f"{name}.cfg").state_dict()}, tmp_path / f"{name}.pth")
    source = torch.load(tmp_path / "tiny.pth", weights_only=True)["model"]
    torch.save({"model": {k: v for k, v in source.items() if k.startswith(("layers.0.", "layers.1."))}},
               tmp_path / "backbone.pth")

    four = Darknet(tmp_path / "four.cfg")
    assert load_pretrained(four, tmp_path / "tiny.pth").endswith(
        "the head convs (layers 4) differ in shape (another class or anchor count) and were re-initialised")
    assert torch.equal(four.layers[2].conv.weight, source["layers.2.conv.weight"])
    assert load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "backbone.pth").endswith(
        "layers 2..4 (not in the file: a backbone) keep their initial values")
    assert load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "backbone.pth", cutoff=4).endswith(
        "(layers 0..1); layers 2..3 (not in the file: a backbone) and layer 4 (past --cutoff) keep their initial "
        "values")
    layers = len(Darknet(tmp_path / "tiny.cfg").layers)
    with pytest.raises(WeightsFileError, match=rf"cutoff {layers + 1} \(--cutoff\): expected 1 \.\. {layers}, the "
                                               rf"model's layer count"):
        load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "tiny.pth", cutoff=layers + 1)
    torch.save({"model": {}}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"empty\.pth holds no layer of .*tiny\.cfg; nothing would load"):
        load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"wide\.pth does not fit .*tiny\.cfg:25: layer 2 \[convolutional\]: "
                                              r"layers\.2\.conv\.weight has shape \(24, 16, 3, 3\), this cfg's "
                                              r"\(16, 16, 3, 3\)"):
        load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "wide.pth")
    assert load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "wide.pth", cutoff=2).endswith(
        "(layers 0..1); layers 2..4 (past --cutoff) keep their initial values")


def test_pretrained_checkpoint_missing_a_tensor_names_it_and_one_without_batch_counts_loads(tmp_path):
    (tmp_path / "tiny.cfg").write_text(TINY)
    state = Darknet(tmp_path / "tiny.cfg").state_dict()
    torch.save({"model": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}},
               tmp_path / "export.pth")
    torch.save({"model": {k: v for k, v in state.items() if k != "layers.2.bn.running_var"}}, tmp_path / "hole.pth")
    loaded = load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "export.pth")
    assert loaded == f"loaded {tmp_path / 'export.pth'}"
    with pytest.raises(CheckpointError, match=r"layer 2 \[convolutional\]: the file lacks "
                                              r"layers\.2\.bn\.running_var"):
        load_pretrained(Darknet(tmp_path / "tiny.cfg"), tmp_path / "hole.pth")


def test_head_biases_start_at_one_percent_objectness_and_near_uniform_classes(tmp_path):
    (tmp_path / "tiny.cfg").write_text(TINY)
    model = Darknet(tmp_path / "tiny.cfg")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    init_head_biases(model)
    for yolo in model.yolo_layers:
        index = list(model.layers).index(yolo) - 1
        rows = model.layers[index].conv.bias.detach().view(yolo.num_anchors, yolo.num_outputs)
        initial = before[f"layers.{index}.conv.bias"].view(yolo.num_anchors, yolo.num_outputs)
        scores = torch.sigmoid(rows)
        torch.testing.assert_close(scores[:, 4], torch.full((yolo.num_anchors,), 0.01))
        torch.testing.assert_close(rows[:, 5:], torch.full_like(rows[:, 5:], -math.log(80 - 0.99)))
        assert torch.equal(rows[:, :4], initial[:, :4])  # the boxes keep their initialisation

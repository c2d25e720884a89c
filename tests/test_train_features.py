"""From a user's own data to a good model: the dataset check and pictures at start-up, TensorBoard events,
--patience, --resume without a path and with more --epochs, --hyp and --evolve, distillation, test.py --plots."""
import argparse
import copy
import csv
import os
import shutil
import warnings
from dataclasses import dataclass

import importlib.util

import cv2
import pytest
import torch

import train
from models import Darknet
from tests.cfgs import HEAD, NET, conv
from tests.conftest import REPO, random_tiny_model
from tests.test_train import TINY, tiny_training_set
from tests.test_train_safety import copy_of, error_lines, options
from utils.cli import ArgumentParser
from utils.darknet.cfg import parse_cfg
from utils.darknet.model import net_options
from utils.data import batching
from utils.data.config import parse_data_config, read_image_list
from utils.data.dataset import collate
from utils.data.synthetic import write_dataset
from utils.errors import UserError
from utils.evaluation.metrics import EvalResult
from utils.training import trainer
from utils.training.distill import DistillationError, Distiller, check_same_heads, layer_distillation
from utils.training.hyp import cfg_hyperparameters, format_hyp, parse_hyp_text, read_hyp_file
from utils.training.options import TrainOptions
from utils.training.setup import build_augment
from utils.training.trainer import Trainer

TRAIN_IMAGES = 8  # two batches of 4 per epoch


def load_test_py():
    """test.py as a module, by its path: ``import test`` could give Python's own test package."""
    spec = importlib.util.spec_from_file_location("test_py", REPO / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


test_py = load_test_py()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_training_set(tmp_path_factory, TRAIN_IMAGES)


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(options(dataset, run)).run()
    return run


def argv(dataset, output, *extra):
    data, cfg = dataset
    return ["--model_def", str(cfg), "--data_config", str(data), "--img_size", "64", "--batch_size", "4",
            "--n_cpu", "0", "--optimizer", "adam", "--device", "cpu", "--output", str(output), *extra]


def results_rows(run):
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_writes_the_data_pictures_and_reports_the_data_and_the_anchors(finished_run, dataset, capsys):
    for name in ("labels.png", "train_batch0.jpg", "train_batch1.jpg", "confusion_matrix.png", "F1_curve.png",
                 "P_curve.png", "R_curve.png"):
        assert (finished_run / name).is_file(), name
    assert not (finished_run / "train_batch2.jpg").exists()  # an epoch of two batches has no third
    run = copy_of(finished_run, finished_run.parent / "again")
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "8 images listed: 8 with boxes, 0 negatives" in out and "4 images listed: 4 with boxes" in out
    assert "anchor fit at 64 px: average IoU" in out and "best possible recall" in out
    assert "best F1 " in out and "at confidence " in out


def test_poor_anchors_are_a_warning_naming_calc_anchors(dataset, tmp_path, capsys):
    data, _ = dataset
    (tmp_path / "huge.cfg").write_text(TINY.replace("anchors=8,8, 16,16, 32,32", "anchors=300,300, 400,400, 500,500"))
    assert train.main(argv((data, tmp_path / "huge.cfg"), tmp_path / "run", "--epochs", "1")) == 0
    out = capsys.readouterr().out
    assert "warning: the cfg's anchors fit these labels poorly" in out
    assert f"python calc_anchors.py --data_config {data} --num_anchors 3 --img_size 64" in out


def test_images_outside_images_folders_stop_with_the_label_paths_looked_for(dataset, tmp_path, capsys):
    data, cfg = dataset
    source = data.parent
    pictures = tmp_path / "set" / "pictures"
    shutil.copytree(source / "images" / "train", pictures)
    shutil.copytree(source / "labels", tmp_path / "set" / "labels")  # where they would be under images/
    listing = tmp_path / "set" / "train.txt"
    listing.write_text("".join(f"{path}\n" for path in sorted(pictures.iterdir())))
    data_file = tmp_path / "set" / "mine.data"
    data_file.write_text(f"classes=4\ntrain={listing}\nvalid={source / 'valid.txt'}\n"
                         f"names={source / 'shapes.names'}\n")
    run = tmp_path / "run"
    assert train.main(argv((data_file, cfg), run, "--epochs", "1")) == 1
    (line,) = error_lines(capsys)
    first = sorted(pictures.iterdir())[0]
    assert f"no label file was found for any of its {TRAIN_IMAGES} images" in line
    assert f"label files looked for: {first.with_suffix('.txt')} (for {first})" in line
    assert "--allow_all_negative" in line and not run.exists()
    assert train.main(argv((data_file, cfg), run, "--epochs", "1", "--allow_all_negative")) == 0
    assert "anchor fit: not measured (no labelled boxes to fit anchors to)" in capsys.readouterr().out
    data_file.write_text(f"classes=4\ntrain={source / 'train.txt'}\nvalid={listing}\n"
                         f"names={source / 'shapes.names'}\n")  # the validation list without labels
    assert train.main(argv((data_file, cfg), tmp_path / "valid_run", "--epochs", "1")) == 1
    (line,) = error_lines(capsys)
    assert f"{listing}: no label file was found for any of its {TRAIN_IMAGES} images, so every detection on them " \
           f"would count as a false positive" in line


@dataclass
class ScriptedResult(EvalResult):
    """A real evaluation whose mAP@0.5 is the one a test scripts."""

    scripted: float = 0.0

    @property
    def map50(self) -> float:
        return self.scripted


def test_patience_stops_after_that_many_evaluations_without_improvement(dataset, tmp_path, monkeypatch, capsys):
    script = iter([0.1, 0.3, 0.2, 0.25, 0.2, 0.2])  # best after epoch 2; no later epoch improves on it
    real = Trainer._evaluate

    def scripted(self, *args):
        records, result = real(self, *args)
        return records, ScriptedResult(**vars(result), scripted=next(script))

    monkeypatch.setattr(Trainer, "_evaluate", scripted)
    run = tmp_path / "run"
    Trainer(options(dataset, run, epochs=6, patience=2)).run()
    assert [float(row["mAP50"]) for row in results_rows(run)] == [0.1, 0.3, 0.2, 0.25]
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 3
    assert torch.load(run / "best.pth", weights_only=True)["epoch"] == 1
    out = capsys.readouterr().out
    assert "stopping early after epoch 4: mAP@0.5 has not improved for 2 evaluations (--patience); the best, " \
           "0.3000 after epoch 2, is in" in out
    assert (run / "confusion_matrix.png").is_file()
    Trainer(options(dataset, run, resume=str(run), epochs=None)).run()  # its own patience: nothing left
    assert "nothing left to train: the run stopped early" in capsys.readouterr().out
    assert len(results_rows(run)) == 4
    with pytest.raises(UserError, match=r"nothing to train into --output .*branch: the run stopped early, mAP@0\.5 "
                                        r"not having improved for 2 evaluations"):
        Trainer(options(dataset, tmp_path / "branch", resume=str(run), epochs=None)).run()
    assert not (tmp_path / "branch").exists()
    Trainer(options(dataset, tmp_path / "more", resume=str(run), epochs=None, patience=0)).run()  # 2 more epochs
    assert [float(row["mAP50"]) for row in results_rows(tmp_path / "more")] == [0.1, 0.3, 0.2, 0.25, 0.2, 0.2]
    assert (tmp_path / "more" / "best.pth").read_bytes() == (run / "best.pth").read_bytes()  # still epoch 2's


def test_resume_without_a_path_continues_the_newest_run(finished_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "train").mkdir(parents=True)
    older, newer = (copy_of(finished_run, tmp_path / "runs" / "train" / name) for name in ("exp1", "exp2"))
    os.utime(newer / "last.pth", (1_000_000, 1_000_000))  # exp1's last.pth is the newest, whatever the names say
    assert train.main(["--resume", "--n_cpu", "0", "--epochs", "2"]) == 0
    assert "--resume: continuing the newest run, runs/train/exp1" in capsys.readouterr().out
    assert torch.load(older / "last.pth", weights_only=True)["epoch"] == 1
    assert torch.load(newer / "last.pth", weights_only=True)["epoch"] == 0
    shutil.rmtree(tmp_path / "runs")
    assert train.main(["--resume", "--n_cpu", "0"]) == 1
    (line,) = error_lines(capsys)
    assert "--resume without a path continues the newest runs/train/*/last.pth, and there is none" in line


def test_a_run_continued_in_a_new_folder_carries_its_results_rows_there(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path / "run")
    branch = tmp_path / "branch"
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "2", "--output", str(branch)]) == 0
    assert [row["epoch"] for row in results_rows(branch)] == ["0", "1"]
    assert results_rows(branch)[0] == results_rows(run)[0] and len(results_rows(run)) == 1


@pytest.mark.parametrize("name,text", [("results.csv", "epoch,lr\nx,abc\n"), ("bn_gammas.npz", "not a zip")])
def test_an_unreadable_run_history_is_named_on_resume(finished_run, tmp_path, capsys, name, text):
    run = copy_of(finished_run, tmp_path / "run")
    (run / name).write_text(text)
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "2"]) == 1
    (line,) = error_lines(capsys)
    assert f"{run / name}: cannot read the run's " in line and "move the file aside to resume without it" in line



def test_a_run_resumed_with_other_steps_per_epoch_goes_on_from_its_epoch_not_its_step(finished_run, tmp_path, capsys):
    # as if the first epoch had run under torchrun on two processes: one step of two per-process batches
    halved = copy_of(finished_run, tmp_path / "halved")
    state = torch.load(halved / "last.pth", weights_only=True)
    state["scheduler"]["last_epoch"], state["scheduler"]["lr_lambdas"][0]["total_steps"] = 1, 1
    torch.save(state, halved / "last.pth")
    same = copy_of(finished_run, tmp_path / "same")
    assert train.main(["--resume", str(halved), "--n_cpu", "0", "--epochs", "3"]) == 0
    assert "--resume: an epoch is 2 steps here and was 1 (another number of processes" in capsys.readouterr().out
    assert train.main(["--resume", str(same), "--n_cpu", "0", "--epochs", "3"]) == 0
    assert "an epoch is" not in capsys.readouterr().out
    for run in (halved, same):
        scheduler = torch.load(run / "last.pth", weights_only=True)["scheduler"]
        assert scheduler["last_epoch"] == 6 and scheduler["lr_lambdas"][0]["total_steps"] == 6
    assert [row["lr"] for row in results_rows(halved)][1:] == [row["lr"] for row in results_rows(same)][1:]

def test_sparsity_training_without_a_trained_bn_is_refused(dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # the flags alone say it: refused as they are parsed
        train.main(argv(dataset, tmp_path / "run", "--sr", "--freeze_bn"))
    assert stop.value.code == 2 and not (tmp_path / "run").exists()
    (line,) = error_lines(capsys)
    assert "--sr makes the BN scales sparse and --freeze_bn keeps them fixed" in line
    with pytest.raises(UserError, match=r"--sr: the model has no trained BN scale \(gamma\) to make sparse"):
        Trainer(options(dataset, tmp_path / "api", sr=True, freeze_bn=True)).run()  # options the API built


def test_raising_epochs_on_resume_trains_the_extra_epochs_over_a_longer_schedule(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "resumed after epoch 1 of 3 (best mAP@0.5" in out  # counted from 1, as the progress bar and the log
    assert "--epochs 3: the run, planned for 1 epochs, goes on to 3; its learning-rate schedule now spans 3" in out
    state = torch.load(run / "last.pth", weights_only=True)
    assert state["epoch"] == 2 and state["options"]["epochs"] == 3
    assert state["scheduler"]["lr_lambdas"][0]["total_steps"] == 3 * 2 and state["scheduler"]["last_epoch"] == 6
    assert [row["epoch"] for row in results_rows(run)] == ["0", "1", "2"]
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "2"]) == 1
    (line,) = error_lines(capsys)
    assert "--epochs 2:" in line and "is a run of 3 epochs; --resume may raise its epochs, not lower them" in line


def test_tensorboard_events_hold_the_scalars_and_images(dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "run"
    Trainer(options(dataset, run, epochs=2)).run()
    events = EventAccumulator(str(run))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/box", "train/obj", "train/cls", "train/total", "lr", "metrics/mAP50", "metrics/mAP"):
        assert [s.step for s in events.Scalars(tag)] == [0, 1], tag
    for tag in ("step/box", "step/total", "step/lr"):
        assert [s.step for s in events.Scalars(tag)] == [1, 2, 3, 4], tag
    rows = results_rows(run)
    assert events.Scalars("metrics/mAP50")[1].value == pytest.approx(float(rows[1]["mAP50"]), abs=1e-6)
    assert {"train_batch0", "train_batch1"} <= set(tags["images"])
    assert any(tag.startswith("valid/") for tag in tags["images"])


def test_without_tensorboard_a_run_writes_no_events(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "open_tensorboard", lambda *args: None)
    run = tmp_path / "run"
    Trainer(options(dataset, run)).run()
    assert not list(run.glob("events.out.tfevents*")) and (run / "results.csv").is_file()


def test_sync_bn_in_one_process_says_it_does_nothing(dataset, tmp_path, capsys):
    Trainer(options(dataset, tmp_path / "run", sync_bn=True)).run()
    assert "--sync_bn: one process, whose BNs have nothing to synchronise with" in capsys.readouterr().out


def test_rect_training_feeds_batches_of_like_shape(tmp_path, monkeypatch, capsys):
    data = write_dataset(tmp_path / "set", train=4, valid=2, size=96, seed=1)
    for path, size in zip(read_image_list(parse_data_config(data).train), [(96, 48), (48, 96), (96, 64), (64, 96)]):
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), size))  # width, height
    (tmp_path / "tiny.cfg").write_text(TINY)
    fed = []

    def recording(samples):
        batch = collate(samples)
        fed.append((sorted(batch.indices), tuple(batch.images.shape[-2:])))
        return batch
    monkeypatch.setattr(batching, "collate", recording)
    Trainer(options((data, tmp_path / "tiny.cfg"), tmp_path / "run", img_size=96, batch_size=2, epochs=2,
                    rect=True, mosaic=True)).run()
    assert "--rect: 2 batches of images of like aspect ratio, height x width (batches) at 96: 64x96 (1), 96x64 (1); " \
           "33% fewer pixels than square batches; no mosaic" in capsys.readouterr().out
    training = [item for item in fed if item[1] != (96, 96)]  # evaluation batches are square
    assert sorted(training) == [([0, 2], (64, 96)), ([0, 2], (64, 96)), ([1, 3], (96, 64)), ([1, 3], (96, 64))]


def test_rect_turns_mosaic_off_whoever_asks_for_it():
    net = net_options(parse_cfg("[net]\nwidth=64\nheight=64\nmosaic=1\n[convolutional]\nfilters=1\n", "m.cfg")).values
    for flag in (None, True):  # [net] mosaic=1, or --mosaic
        assert build_augment(TrainOptions(mosaic=flag), net).mosaic > 0
        assert build_augment(TrainOptions(mosaic=flag, rect=True), net).mosaic == 0
    assert build_augment(TrainOptions(hyp={"mosaic": 1.0}), net).mosaic == 1.0
    assert build_augment(TrainOptions(rect=True, hyp={"mosaic": 1.0}), net).mosaic == 0  # a --hyp file's


# ----------------------------------------------------------------------------------------------
# hyperparameters


def test_hyp_values_go_into_the_runs_cfg_and_augmentation_and_flags_win(dataset, tmp_path):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("# mine\nlearning_rate = 0.004\nobj_normalizer = 2.5\nscale = 0.1\nmosaic = 0.3\n")
    run = tmp_path / "run"
    assert train.main(argv(dataset, run, "--epochs", "1", "--hyp", str(hyp))) == 0
    model = Darknet(run / "model.cfg")
    assert model.hyperparams["learning_rate"] == 0.004
    assert all(yolo.loss.obj_normalizer == 2.5 for yolo in model.yolo_layers)
    state = torch.load(run / "last.pth", weights_only=True)
    assert state["options"]["hyp"] == {"learning_rate": 0.004, "obj_normalizer": 2.5, "scale": 0.1, "mosaic": 0.3}
    assert state["scheduler"]["base_lrs"] == [0.004, 0.004]
    flagged = tmp_path / "flagged"
    assert train.main(argv(dataset, flagged, "--epochs", "1", "--hyp", str(hyp), "--lr", "0.002")) == 0
    assert torch.load(flagged / "last.pth", weights_only=True)["scheduler"]["base_lrs"] == [0.002, 0.002]


def test_a_bad_hyp_file_is_one_line_naming_file_and_line(dataset, tmp_path, capsys):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("learning_rate = 0.01\nwarp = 9\n")
    with pytest.raises(SystemExit) as stop:
        train.main(argv(dataset, tmp_path / "run", "--hyp", str(hyp)))
    assert stop.value.code == 2
    (line,) = error_lines(capsys)
    assert f"{hyp}:2: unknown hyperparameter 'warp'" in line
    hyp.write_text("momentum = 1.5\n")
    with pytest.raises(SystemExit):
        train.main(argv(dataset, tmp_path / "run", "--hyp", str(hyp)))
    assert f"{hyp}:1: momentum = 1.5 is outside its range" in error_lines(capsys)[0]


def test_a_hyp_file_takes_whatever_the_cfg_holds(tmp_path):
    """--evolve's first trial writes the cfg's own values: the file must read back, whatever they are."""
    cfg = parse_cfg(NET + "saturation=0.5\nhue=0.7\nmomentum=0.9999\n" + conv(8) + HEAD)
    values = cfg_hyperparameters(cfg)
    assert parse_hyp_text(format_hyp(values), "hyp_evolved.txt") == pytest.approx(values)


def test_evolve_two_trials_write_a_table_a_plot_and_a_hyp_file_train_py_takes(dataset, tmp_path, capsys):
    folder = tmp_path / "evolve"
    assert train.main(argv(dataset, folder, "--epochs", "1", "--evolve", "2", "--lr", "0.003")) == 0
    for name in ("evolve.csv", "evolve.png", "hyp_evolved.txt", "trial1/last.pth", "trial2/last.pth"):
        assert (folder / name).is_file(), name
    with open(folder / "evolve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["trial"] for row in rows] == ["1", "2"]
    assert float(rows[0]["learning_rate"]) == 0.003  # trial 1 starts from the flags and the cfg
    assert float(rows[0]["momentum"]) == 0.9 and float(rows[0]["obj_normalizer"]) == 1.0
    assert any(rows[0][key] != rows[1][key] for key in rows[0] if key not in ("trial", "fitness", "note"))
    best = max(rows, key=lambda row: (float(row["fitness"]), -int(row["trial"])))
    evolved = read_hyp_file(folder / "hyp_evolved.txt")
    assert evolved == pytest.approx({key: float(value) for key, value in best.items() if key in evolved})
    out = capsys.readouterr().out
    assert "the best of 2 trials is trial" in out
    assert "evolve: --lr 0.003 set trial 1's values; later trials mutate them" in out
    run = tmp_path / "run"
    assert train.main(argv(dataset, run, "--epochs", "1", "--hyp", str(folder / "hyp_evolved.txt"))) == 0
    assert Darknet(run / "model.cfg").hyperparams["learning_rate"] == pytest.approx(evolved["learning_rate"])
    first = (folder / "trial1" / "last.pth").read_bytes()
    hyp_before = (folder / "hyp_evolved.txt").read_bytes()
    capsys.readouterr()
    assert train.main(argv(dataset, folder, "--epochs", "1", "--evolve", "1", "--exist_ok", "--hyp",
                           str(folder / "hyp_evolved.txt"))) == 1  # the search would write over its own --hyp
    assert "--hyp" in error_lines(capsys)[0] and (folder / "hyp_evolved.txt").read_bytes() == hyp_before
    assert train.main(argv(dataset, folder, "--epochs", "1", "--evolve", "1", "--seed", "3", "--exist_ok")) == 0
    assert (folder / "trial1" / "last.pth").read_bytes() != first  # --exist_ok: the search is done again there
    assert f"evolve: {folder} keeps trial2 of an earlier search" in capsys.readouterr().out


def test_an_evolve_stopped_during_its_first_trial_keeps_what_that_trial_wrote(dataset, tmp_path, monkeypatch,
                                                                              capsys):
    from utils.training import evolve

    def interrupted_after_training(*args):
        run_trial(*args)
        raise KeyboardInterrupt  # Ctrl-C before evolve.csv is written

    run_trial = evolve.run_trial
    monkeypatch.setattr(evolve, "run_trial", interrupted_after_training)
    monkeypatch.chdir(tmp_path)
    flags = [flag for flag in argv(dataset, "unused", "--evolve", "2") if flag not in ("--output", "unused")]
    assert train.main(flags) == 130
    assert (tmp_path / "runs" / "evolve" / "exp1" / "trial1" / "last.pth").is_file()
    assert not (tmp_path / "runs" / "evolve" / "exp1" / "evolve.csv").exists()


def test_mutation_stays_in_range_moves_zeros_and_always_changes_something():
    import numpy as np
    from utils.training.evolve import SEARCH_RANGES, mutate
    rng = np.random.default_rng(0)
    parent = {key: (low if low > 0 else 0.0) for key, (low, high) in SEARCH_RANGES.items()}
    children = [mutate(parent, rng) for _ in range(50)]
    for child in children:
        assert child != parent
        assert all(SEARCH_RANGES[key][0] <= value <= SEARCH_RANGES[key][1] for key, value in child.items())
    assert any(child["mosaic"] > 0 for child in children)  # a key at 0 moves too


# ----------------------------------------------------------------------------------------------
# distillation


def student_and_teacher(seed: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = random_tiny_model(3, 0)
        student = random_tiny_model(3, seed) if seed else copy.deepcopy(teacher)
    return student.eval(), teacher


def test_distillation_is_zero_for_the_teacher_itself_and_positive_for_another_model():
    images = torch.rand(2, 3, 64, 64)
    student, teacher = student_and_teacher(0)
    assert Distiller(teacher, student.yolo_layers, 1.0)(student.forward_heads(images), images).item() == 0.0
    other, _ = student_and_teacher(1)
    assert Distiller(teacher, other.yolo_layers, 1.0)(other.forward_heads(images), images).item() > 0
    raw = torch.randn(1, 3 * 8, 4, 4)
    assert layer_distillation(teacher.yolo_layers[0], raw, raw).item() == 0.0


def test_the_distillation_gradient_moves_the_student_toward_the_teacher():
    images = torch.rand(2, 3, 64, 64)
    student, teacher = student_and_teacher(1)
    distiller = Distiller(teacher, student.yolo_layers, 1.0)
    with torch.no_grad():
        targets = [yolo.activate(head) for yolo, head in zip(teacher.yolo_layers, teacher.forward_heads(images))]

    def gaps():
        heads = student.forward_heads(images)
        return sum(float((yolo.activate(h) - t).abs().mean())
                   for yolo, h, t in zip(student.yolo_layers, heads, targets))

    before_term, before_gap = distiller(student.forward_heads(images), images).item(), gaps()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3)
    for _ in range(5):
        optimizer.zero_grad()
        distiller(student.forward_heads(images), images).backward()
        optimizer.step()
    assert distiller(student.forward_heads(images), images).item() < before_term
    assert gaps() < before_gap
    assert all(p.grad is None for p in teacher.parameters())


def test_a_teacher_with_other_heads_is_named():
    student, teacher = student_and_teacher(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        four = random_tiny_model(4, 0)
    with pytest.raises(DistillationError, match=r"teacher t\.pth: \[yolo\] layer 1 of 2 has classes 4, the student's "
                                                r"has 3; distillation needs the same heads"):
        check_same_heads(student, four, "t.pth")
    check_same_heads(student, teacher, "t.pth")


def test_training_with_a_teacher_logs_the_term_and_its_column(dataset, finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(argv(dataset, run, "--epochs", "1", "--pretrained_weights", str(finished_run / "best.pth"),
                           "--teacher_weights", str(finished_run / "best.pth"), "--distill_weight", "2")) == 0
    assert f"distilling from {finished_run / 'best.pth'} (weight 2)" in capsys.readouterr().out
    (row,) = results_rows(run)
    assert float(row["distill"]) > 0  # the student trains (BN in train mode, augmented batches): not the teacher
    assert float(row["total"]) == pytest.approx(sum(float(row[k]) for k in ("box", "obj", "cls", "distill")))
    (tmp_path / "other.cfg").write_text(TINY.replace("anchors=8,8, 16,16, 32,32", "anchors=9,9, 16,16, 32,32"))
    assert train.main(argv(dataset, tmp_path / "bad", "--epochs", "1", "--teacher_weights",
                           str(finished_run / "best.pth"), "--model_def", str(tmp_path / "other.cfg"))) == 1
    (line,) = error_lines(capsys)
    assert "[yolo] layer 1 of 1 has anchors" in line and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------------------------
# test.py


def test_test_py_writes_the_confusion_pictures_and_prints_the_best_f1_confidence(dataset, finished_run, tmp_path,
                                                                                 capsys):
    data, _ = dataset
    command = ["--weights_path", str(finished_run / "best.pth"), "--data_config", str(data), "--img_size", "64",
               "--n_cpu", "0", "--device", "cpu", "--plots", str(tmp_path / "plots")]
    assert test_py.main(command) == 0
    out = capsys.readouterr().out
    assert "best F1 " in out and " at confidence " in out
    for name in ("confusion_matrix.png", "F1_curve.png", "P_curve.png", "R_curve.png"):
        assert (tmp_path / "plots" / name).is_file(), name
    before = (tmp_path / "plots" / "F1_curve.png").read_bytes()
    assert test_py.main(command) == 1
    (line,) = error_lines(capsys)
    assert "--plots" in line and "the file exists" in line and "--exist_ok" in line
    assert (tmp_path / "plots" / "F1_curve.png").read_bytes() == before
    assert test_py.main(command + ["--exist_ok"]) == 0


@pytest.mark.parametrize("parse", [train.parse_args, test_py.parse_args], ids=["train.py", "test.py"])
def test_help_shows_every_default(parse, monkeypatch):
    built = []

    def keep_the_parser(self, *args, **kwargs):
        built.append(self)
        raise SystemExit(0)

    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: no wrapping inside a default
    monkeypatch.setattr(ArgumentParser, "parse_args", keep_the_parser)
    with pytest.raises(SystemExit):
        parse([])
    text = " ".join(built[0].format_help().split())
    for action in built[0]._actions:
        if action.default is None or action.default == "" or isinstance(action.default, bool) \
                or action.default is argparse.SUPPRESS:
            continue  # no default, or an on/off flag whose default is its absence
        assert f"(default: {action.default})" in text, action.dest


def test_a_single_class_run_trains_and_scores_every_box_as_one_object(dataset, finished_run, tmp_path, capsys):
    data, _ = dataset
    run = tmp_path / "single"
    assert train.main(argv(dataset, run, "--epochs", "1", "--single_cls")) == 0
    state = torch.load(run / "best.pth", weights_only=True)
    assert state["names"] == ["object"] and state["options"]["single_cls"] is True
    assert Darknet(run / "model.cfg").num_classes == 1
    capsys.readouterr()
    common = ["--data_config", str(data), "--n_cpu", "0", "--device", "cpu"]
    for scored in (["--weights_path", str(run / "best.pth")],  # the checkpoint says --single_cls
                   ["--model_def", str(run / "model.cfg"), "--weights_path", str(run / "best.weights"),
                    "--single_cls"]):
        assert test_py.main(scored + common) == 0
        out = capsys.readouterr().out
        assert "| object" in out and "circle" not in out
    assert test_py.main(["--model_def", str(run / "model.cfg"), "--weights_path", str(run / "best.weights")]
                        + common) == 1
    (line,) = error_lines(capsys)
    assert line.endswith("4 classes, but the model predicts 1; a model trained with --single_cls is scored with "
                         "--single_cls")
    assert test_py.main(["--weights_path", str(finished_run / "best.pth"), "--single_cls", *common]) == 1
    (line,) = error_lines(capsys)
    assert line.endswith("1 classes (its 4 merged into one: --single_cls), but the model predicts 4")


def test_single_class_data_still_checks_the_label_files_class_ids(tmp_path):
    from utils.data.config import parse_data_config
    from utils.data.dataset import DetectionDataset
    from utils.data.synthetic import write_dataset
    data = parse_data_config(write_dataset(tmp_path / "set", train=3, valid=1, size=64, seed=1)).single_class()
    assert (data.classes, data.names, data.merged_from) == (1, ["object"], 4)
    assert data.single_class() == data  # merging again changes nothing
    merged = DetectionDataset.from_config(data, "train")
    original = DetectionDataset(data.train, 4)
    assert all((m[:, 0] == 0).all() and (m[:, 1:] == o[:, 1:]).all() for m, o in zip(merged.labels, original.labels))
    assert any((o[:, 0] > 0).any() for o in original.labels)
    label = tmp_path / "set" / "labels" / "train" / "00000.txt"
    label.write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"00000\.txt:1: class 7 is not an integer in 0 \.\. 3"):
        DetectionDataset.from_config(data, "train")


def test_a_run_with_cached_images_trains_exactly_as_one_without(dataset, finished_run, tmp_path, capsys):
    Trainer(options(dataset, tmp_path / "cached", cache_images=True, n_cpu=1)).run()  # a worker inherits it
    assert f"--cache_images: {TRAIN_IMAGES} train images held in memory, decoded:" in capsys.readouterr().out
    cached, plain = (torch.load(run / "last.pth", weights_only=True)["model"] for run in (tmp_path / "cached",
                                                                                         finished_run))
    assert cached.keys() == plain.keys() and all(torch.equal(cached[k], plain[k]) for k in plain)

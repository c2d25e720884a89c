"""train.py never loses a user's file and ends bad input with one named error: an existing run is refused as
--output, a failed start leaves no folder, killed saves are repaired on resume, and evaluation or disk
failures cost no finished epoch."""
import argparse
import errno
import os
import subprocess
import sys
import warnings

import pytest
import torch

import train
import utils.fileio
from models import Darknet
from tests.test_train import TINY, tiny_training_set
from utils.darknet.checkpoint import CheckpointError, load_checkpoint, model_from_file, save_checkpoint
from utils.data.synthetic import write_dataset
from utils.errors import InputWarning, UserError
from utils.output_files import IN_USE_NAME, OutputError, remove_orphan_temporaries
from utils.training import trainer
from utils.training.options import TrainOptions
from utils.training.outputs import RunOutputs, weights_seen
from utils.training.setup import build_state
from utils.training.state import check_training_checkpoint
from utils.training.trainer import Trainer

TRAIN_IMAGES = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_training_set(tmp_path_factory, TRAIN_IMAGES)


def options(dataset, output, **changes) -> TrainOptions:
    data, cfg = dataset
    fixed = dict(model_def=str(cfg), data_config=str(data), img_size=64, batch_size=4, n_cpu=0, optimizer="adam",
                 epochs=1, device="cpu", output=None if output is None else str(output))
    return TrainOptions(**{**fixed, **changes})


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    """A one-epoch run, trained once for the module; tests that change it work on a copy."""
    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(options(dataset, run)).run()
    return run


def copy_of(run, target):
    target.mkdir()
    for path in run.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def argv(dataset, output, *extra):
    data, cfg = dataset
    return ["--model_def", str(cfg), "--data_config", str(data), "--img_size", "64", "--batch_size", "4",
            "--n_cpu", "0", "--optimizer", "adam", "--epochs", "1", "--device", "cpu", "--output", str(output),
            *extra]


def error_lines(capsys) -> list[str]:
    """The ``error:`` lines on stderr (there must be no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_an_existing_run_is_refused_as_output_unless_exist_ok(dataset, finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    assert train.main(argv(dataset, run)) == 1
    (line,) = error_lines(capsys)
    assert f"--output {run} holds a training run (last.pth): --resume {run} continues it, --exist_ok" in line
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
    assert train.main(argv(dataset, run, "--exist_ok")) == 0
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 0
    assert (run / "last.pth").read_bytes() != before["last.pth"]  # a new run, as asked



@pytest.mark.parametrize("flag,name", [("--pretrained_weights", "best.pth"), ("--model_def", "model.cfg")])
def test_an_input_inside_the_output_is_refused_even_with_exist_ok(dataset, finished_run, tmp_path, capsys, flag,
                                                                  name):
    run = copy_of(finished_run, tmp_path / "run")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    assert train.main(argv(dataset, run, "--exist_ok", flag, str(run / name))) == 1
    (line,) = error_lines(capsys)
    assert line == (f"error: {flag} {run / name} is at or inside {run}, where --output writes: the output could "
                    f"replace it; move it, or choose another --output")
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_a_run_folder_among_the_dataset_is_refused_even_with_exist_ok(dataset, capsys):
    data = dataset[0]
    images = data.parent / "images"
    before = sorted(images.rglob("*"))
    assert train.main(argv(dataset, images, "--exist_ok")) == 1
    (line,) = error_lines(capsys)
    assert line == (f"error: {images / 'train'}, part of the dataset of {data}, is at or inside the run folder "
                    f"{images}: the run's checkpoints and plots would mix with the data; choose another --output")
    assert sorted(images.rglob("*")) == before
    labels = data.parent / "labels" / "valid"
    assert train.main(argv(dataset, labels, "--exist_ok")) == 1
    assert error_lines(capsys)[0].startswith(f"error: {labels}, part of the dataset of {data}, is at or inside")


def test_a_run_folder_inside_a_folder_the_images_are_read_from_is_refused(dataset, tmp_path, capsys):
    data, cfg = dataset
    folder_data = tmp_path / "folder.data"  # train= a folder: its images at any depth, so a run's pictures too
    folder_data.write_text(data.read_text().replace("train=train.txt", f"train={data.parent / 'images' / 'train'}")
                           .replace("valid=valid.txt", f"valid={data.parent / 'valid.txt'}")
                           .replace("names=shapes.names", f"names={data.parent / 'shapes.names'}"))
    run = data.parent / "images" / "train" / "run1"
    assert train.main(argv((folder_data, cfg), run)) == 1
    (line,) = error_lines(capsys)
    assert line == (f"error: the run folder {run} is inside {data.parent / 'images' / 'train'}, which the dataset of "
                    f"{folder_data} reads its images from (at any depth): its plots would be read as training "
                    f"images; choose another --output")
    assert not run.exists()


def test_a_run_folder_another_live_process_trains_in_is_refused_and_a_dead_ones_mark_taken_over(
        finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    (run / IN_USE_NAME).write_text(str(os.getppid()))  # a live process other than this one
    before = (run / "last.pth").read_bytes()
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "2"]) == 1
    assert error_lines(capsys) == [f"error: {run} is being trained by process {os.getppid()}; wait for it to end "
                                   f"or stop it, or choose another --output ({run / IN_USE_NAME} holds its PID)"]
    assert (run / "last.pth").read_bytes() == before and (run / IN_USE_NAME).exists()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / IN_USE_NAME).write_text(finished.stdout)  # its process has ended: as a kill -9 leaves it
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "2"]) == 0
    assert not (run / IN_USE_NAME).exists()


def test_a_run_folder_that_cannot_be_written_is_named_before_training(finished_run, tmp_path, monkeypatch, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    real_open = os.open

    def immutable(path, *args, **kwargs):  # as chattr +i makes it, even for root
        if str(path).startswith(str(run)) and args and args[0] & os.O_CREAT:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", immutable)
    assert train.main(["--resume", str(run), "--n_cpu", "0", "--epochs", "2"]) == 1
    assert error_lines(capsys) == [f"error: {run}: cannot write into the folder (to mark it in use by this process): "
                                   f"Operation not permitted"]

def test_resuming_best_pth_in_its_own_folder_would_rewind_the_run_and_is_refused(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    assert train.main(["--resume", str(run / "best.pth"), "--n_cpu", "0"]) == 1
    (line,) = error_lines(capsys)
    assert f"--resume {run / 'best.pth'}: going on from it in {run} would replace that run's own last.pth" in line
    best = (run / "best.pth").read_bytes()
    assert train.main(["--resume", str(run / "best.pth"), "--n_cpu", "0", "--output", str(tmp_path / "branch"),
                       "--epochs", "2"]) == 0
    assert load_checkpoint(tmp_path / "branch" / "last.pth")["epoch"] == 1
    assert f"the best model so far comes along from {run}: best.pth, best.weights" in capsys.readouterr().out
    assert (tmp_path / "branch" / "best.weights").is_file() and (run / "best.pth").read_bytes() == best


def test_a_failed_start_leaves_no_folder(dataset, tmp_path, capsys):
    run = tmp_path / "new" / "run"
    assert train.main(argv(dataset, run, "--freeze", "1000")) == 1
    (line,) = error_lines(capsys)
    assert "--freeze 1000:" in line and "has only 6 layers (0..5)" in line
    assert not run.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    assert train.main(argv(dataset, existing, "--freeze", "1000")) == 1
    assert existing.is_dir()  # the user's own (empty) folder stays


def test_a_cfg_without_yolo_layers_is_refused_before_training(dataset, tmp_path, capsys):
    (tmp_path / "headless.cfg").write_text("[net]\nwidth=64\nheight=64\n\n[convolutional]\nfilters=8\nsize=3\n")
    assert train.main(argv(dataset, tmp_path / "run", "--model_def", str(tmp_path / "headless.cfg"))) == 1
    assert error_lines(capsys) == [f"error: {tmp_path / 'headless.cfg'}: the cfg has no [yolo] layer, so there is no "
                                   f"detection loss to train; end the network in [yolo] heads, as "
                                   f"cfg/yolov3-tiny.cfg does"]
    assert not (tmp_path / "run").exists()


def test_a_cfg_of_grey_inputs_is_refused_before_training(dataset, tmp_path, capsys):
    data, cfg = dataset
    (tmp_path / "grey.cfg").write_text(cfg.read_text().replace("channels=3", "channels=1"))
    assert train.main(argv(dataset, tmp_path / "run", "--model_def", str(tmp_path / "grey.cfg"))) == 1
    assert error_lines(capsys) == [f"error: {tmp_path / 'grey.cfg'}: [net] channels=1, but training reads colour "
                                   f"images (3 channels); set channels=3"]
    assert not (tmp_path / "run").exists()
    (tmp_path / "reused").mkdir()
    (tmp_path / "reused" / "model.cfg").write_text("an earlier run's cfg")
    assert train.main(argv(dataset, tmp_path / "reused", "--model_def", str(tmp_path / "grey.cfg"), "--exist_ok")) == 1
    assert (tmp_path / "reused" / "model.cfg").read_text() == "an earlier run's cfg"


def test_an_unreadable_training_set_is_an_error_and_leaves_nothing(tmp_path, capsys):
    data = write_dataset(tmp_path / "set", train=4, valid=2, size=64, seed=2)
    for image in (tmp_path / "set" / "images" / "train").iterdir():
        image.write_bytes(b"not an image")
    (tmp_path / "tiny.cfg").write_text(TINY)
    assert train.main(argv((data, tmp_path / "tiny.cfg"), tmp_path / "run")) == 1
    (line,) = error_lines(capsys)
    assert "epoch 1: not one training image could be read (4 unreadable, e.g." in line
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_orphan_temporaries_of_dead_processes_go_on_resume(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)  # a process that has ended: its pid is free
    (run / f".last.pth.{dead}.tmp").write_bytes(b"half a checkpoint")
    (run / ".last.pth.99999999.tmp").write_bytes(b"beyond any pid")
    (run / f".last.weights.{os.getpid()}.tmp").write_bytes(b"a running process's")
    (run / ".notes.tmp").write_bytes(b"not atomic_write's")
    assert train.main(["--resume", str(run), "--n_cpu", "0"]) == 0
    assert f"removed 2 temporary file(s) that a killed run left in {run}" in capsys.readouterr().out
    assert sorted(p.name for p in run.glob(".*")) == [f".last.weights.{os.getpid()}.tmp", ".notes.tmp"]
    assert remove_orphan_temporaries(tmp_path / "absent") == []


class Killed(BaseException):
    """What kill -9 does to a save, as far as the files are concerned: the process stops mid-way."""


def test_last_pth_and_last_weights_describe_the_same_epoch_after_a_kill_between_the_renames(
        dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    renames = []
    real_replace = os.replace

    def replace_then_die_at_the_fourth_last_file(source, target):
        if os.path.basename(target).startswith("last."):
            renames.append(os.path.basename(target))
            if len(renames) == 4:  # epoch 2's second file: one of the pair is renamed, the other not
                raise Killed
        real_replace(source, target)

    monkeypatch.setattr(utils.fileio.os, "replace", replace_then_die_at_the_fourth_last_file)
    with pytest.raises(Killed):
        Trainer(options(dataset, run, epochs=2)).run()
    monkeypatch.setattr(utils.fileio.os, "replace", real_replace)
    Trainer(options(dataset, None, resume=str(run), epochs=None)).run()  # its own epochs
    state = torch.load(run / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and int(state["model"]["seen"]) == 2 * TRAIN_IMAGES
    assert weights_seen(run / "last.weights") == 2 * TRAIN_IMAGES
    model_from_file(run / "last.pth")[0].save_darknet_weights(tmp_path / "expected.weights")
    assert (run / "last.weights").read_bytes() == (tmp_path / "expected.weights").read_bytes()


def test_a_stale_weights_export_is_rewritten_on_resume(dataset, finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path / "run")
    model, _ = model_from_file(run / "last.pth")
    model.seen.zero_()  # the export of an earlier epoch
    model.save_darknet_weights(run / "last.weights")
    summary = Trainer(options(dataset, None, resume=str(run))).run()
    assert summary["run_dir"] == str(run)
    assert weights_seen(run / "last.weights") == TRAIN_IMAGES


def test_resume_names_what_a_checkpoint_lacks(tmp_path):
    with pytest.raises(CheckpointError, match=r"w\.pth: holds a model's weights only .* --pretrained_weights "):
        check_training_checkpoint({"model": {}, "cfg_text": "", "names": None, "epoch": -1,
                                   "options": {"img_size": 64}}, tmp_path / "w.pth")  # as save_model writes
    whole = dict.fromkeys(["model", "optimizer", "scheduler", "scaler", "epoch", "best_fitness", "rng_cpu",
                           "cfg_text", "options"])
    with pytest.raises(CheckpointError, match=r"r\.pth: not a whole training checkpoint: it lacks optimizer; "):
        check_training_checkpoint({k: v for k, v in whole.items() if k != "optimizer"}, tmp_path / "r.pth")
    with pytest.raises(UserError, match=r"r\.pth: the checkpoint has options 'warp_speed' unknown to this train\.py"):
        TrainOptions().resumed({"epochs": 3, "warp_speed": 9}, tmp_path / "r.pth")


def test_a_file_torch_cannot_load_safely_is_named_without_advice_to_load_it_unsafely(tmp_path):
    torch.save({"model": argparse.Namespace()}, tmp_path / "objects.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"objects\.pth: not a readable checkpoint \(it holds a Python object "
                                              r"\(argparse\.Namespace\) beyond tensors") as raised:
        load_checkpoint(tmp_path / "objects.pth")
    assert "weights_only" not in str(raised.value)
    with pytest.raises(CheckpointError, match=r"text\.pth: not a readable checkpoint \(not a PyTorch file of "
                                              r"tensors\)$"):
        load_checkpoint(tmp_path / "text.pth")


def test_ignored_flags_of_a_resumed_run_are_named(tmp_path):
    asked = TrainOptions(img_size=128, lr=0.5, sr=True, epochs=9, device="cpu", model_def="cfg/yolov3-tiny.cfg")
    saved = {"img_size": 64, "lr": 0.01, "model_def": "cfg/yolov3-tiny.cfg", "epochs": 3}
    assert asked.ignored_on_resume(saved) == ["--img_size 128 (the run's: 64)", "--sr (the run's: off)",
                                              "--lr 0.5 (the run's: 0.01)"]
    typed, _ = train.parse_args(["--resume", "RUN", "--img_size", "416", "--batch_size", "8", "--epochs", "9"])
    assert typed.ignored_on_resume({"img_size": 64, "batch_size": 4, "epochs": 3}) == [
        "--batch_size 8 (the run's: 4)", "--img_size 416 (the run's: 64)"]  # given, though at their defaults


def test_a_failed_evaluation_keeps_the_epochs_checkpoint(dataset, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise ValueError("a 20000x20 image")

    monkeypatch.setattr(trainer, "collect_detections", crash)
    with pytest.raises(ValueError, match="a 20000x20 image"):
        Trainer(options(dataset, tmp_path / "run")).run()
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert state["epoch"] == 0 and weights_seen(tmp_path / "run" / "last.weights") == TRAIN_IMAGES
    assert (tmp_path / "run" / "results.csv").read_text().count("\n") == 2  # header and the epoch's row


def fill_the_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def torch_save_on_a_full_disk(state, f):
    """What torch.save does when the disk fills: its zip writer turns the file's OSError into a RuntimeError."""
    try:
        fill_the_disk()
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


@pytest.mark.parametrize("save", [fill_the_disk, torch_save_on_a_full_disk])
def test_a_full_disk_is_one_line_naming_the_file(save, dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OutputError, match=r"x\.pth: cannot write the checkpoint: No space left on device"):
        save_checkpoint(tmp_path / "x.pth", {"model": {}})
    assert list(tmp_path.iterdir()) == []  # no temporary file left either
    assert train.main(argv(dataset, tmp_path / "run")) == 1
    (line,) = error_lines(capsys)  # the first checkpoint an improving epoch writes is best.pth
    assert line == f"error: {tmp_path / 'run' / 'best.pth'}: cannot write the checkpoint: No space left on device"


def test_a_run_reads_the_same_files_when_resumed_from_another_folder(dataset, tmp_path, monkeypatch, capsys):
    data, cfg = dataset
    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "set").symlink_to(data.parent)
    monkeypatch.chdir(tmp_path / "start")
    relative = options(dataset, tmp_path / "run", data_config=f"set/{data.name}")
    assert relative.saved()["data_config"] == str(tmp_path / "start" / "set" / data.name)
    assert relative.ignored_on_resume(relative.saved()) == []
    roundabout = options(dataset, None, data_config=f"../start/set/{data.name}")  # the same file by another name
    assert roundabout.ignored_on_resume(relative.saved()) == []
    Trainer(relative).run()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # where set/ is not, or is another dataset
    capsys.readouterr()
    Trainer(options(dataset, None, resume=str(tmp_path / "run"), epochs=2)).run()
    assert "an epoch is" not in capsys.readouterr().out
    resumed = load_checkpoint(tmp_path / "run" / "last.pth")
    assert resumed["epoch"] == 1 and resumed["options"]["data_config"] == str(tmp_path / "start" / "set" / data.name)


def test_resume_names_the_part_of_a_checkpoint_that_does_not_fit(tmp_path):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    four = tmp_path / "four.cfg"
    four.write_text(TINY.replace("filters=255", "filters=27").replace("classes=80", "classes=4"))
    opt, cpu = TrainOptions(optimizer="adam", epochs=2), torch.device("cpu")
    saved = build_state(Darknet(four), opt, 4, cpu, list("abcd")).state_dict()
    eighty = build_state(Darknet(cfg), opt, 4, cpu, [str(i) for i in range(80)])
    with pytest.raises(CheckpointError, match=r"r\.pth: tensor 'layers\.4\.conv\.weight' has shape \(27, 32, 1, 1\)"):
        eighty.load_state_dict(saved, tmp_path / "r.pth")
    sgd = build_state(Darknet(four), TrainOptions(optimizer="sgd", epochs=2), 4, cpu, list("abcd"))
    saved["optimizer"]["param_groups"] = saved["optimizer"]["param_groups"][:1]
    with pytest.raises(CheckpointError, match=r"r\.pth: its optimizer does not fit this run \(ValueError: "):
        sgd.load_state_dict(saved, tmp_path / "r.pth")


def test_the_demo_data_is_never_generated_over_files_in_its_folder(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    edited = tmp_path / "data" / "demo" / "labels" / "train" / "00000.txt"
    edited.parent.mkdir(parents=True)
    edited.write_text("0 0.5 0.5 0.2 0.2\n")  # a user's own label; the demo's .data file is gone
    _, cfg = dataset
    assert train.main(["--model_def", str(cfg), "--img_size", "64", "--epochs", "1", "--n_cpu", "0"]) == 1
    (line,) = error_lines(capsys)
    assert "data/demo holds files but no shapes.data, so train.py will not generate the demo's data there" in line
    assert edited.read_text() == "0 0.5 0.5 0.2 0.2\n" and [*tmp_path.rglob("*.*")] == [edited]


def test_resuming_without_the_epochs_results_rows_says_so(tmp_path):
    outputs = RunOutputs(tmp_path)
    with pytest.warns(InputWarning, match=r"results\.csv: 3 epochs were trained, but the file is missing; the table "
                                          r"and results\.png go on without the rest"):
        outputs.take_back(tmp_path, 3)
    (tmp_path / "results.csv").write_text("epoch,mAP50\n0,0.5\n")
    with pytest.warns(InputWarning, match=r"3 epochs were trained, but the file holds 1 of them"):
        outputs.take_back(tmp_path, 3)
    assert outputs.rows == [{"epoch": 0, "mAP50": 0.5}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs.take_back(tmp_path, 1)


def test_resuming_after_the_data_gained_a_class_is_refused_before_training(tmp_path, capsys):
    data = write_dataset(tmp_path / "set", train=4, valid=2, size=64, seed=2)
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    Trainer(options((data, cfg), tmp_path / "run")).run()
    data.write_text(data.read_text().replace("classes=4", "classes=5"))
    names = data.parent / "shapes.names"
    names.write_text(names.read_text() + "hexagon\n")
    before = (tmp_path / "run" / "last.pth").read_bytes()
    assert train.main(["--resume", str(tmp_path / "run"), "--epochs", "2", "--n_cpu", "0", "--device", "cpu"]) == 1
    assert error_lines(capsys) == [
        f"error: --resume {tmp_path / 'run' / 'last.pth'}: the run trains 4 classes, but {data} now has 5 (circle, "
        f"rectangle, triangle, cross, hexagon); resume with the data it was started with, or start a new run from its "
        f"weights: --pretrained_weights {tmp_path / 'run' / 'last.pth'} --output NEW"]
    assert (tmp_path / "run" / "last.pth").read_bytes() == before


def test_resuming_a_run_whose_best_model_was_deleted_says_it_is_lost(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    for best in run.glob("best.*"):
        best.unlink()
    Trainer(TrainOptions(resume=str(run), epochs=2, n_cpu=0, device="cpu")).run()
    best_fitness = load_checkpoint(finished_run / "last.pth")["best_fitness"]
    assert f"warning: {run / 'best.pth'} is missing, so the best model so far (mAP@0.5 {best_fitness:.4f}) is lost; " \
           f"best.pth is written again once an evaluation beats it" in capsys.readouterr().out


def test_a_resumed_runs_edited_model_cfg_is_moved_aside_not_lost(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path / "run")
    original = (run / "model.cfg").read_text()
    (run / "model.cfg").write_text(original.replace("anchors", "# my anchors\nanchors", 1))
    edited = (run / "model.cfg").read_text()
    Trainer(TrainOptions(resume=str(run), epochs=2, n_cpu=0, device="cpu")).run()
    assert (run / "model.cfg").read_text() == original and (run / "model.cfg.edited").read_text() == edited
    assert f"warning: {run / 'model.cfg'} differs from the cfg the run trains (its checkpoint's), so the edit has no " \
           f"effect on a resumed run; it is kept as model.cfg.edited" in capsys.readouterr().out


def test_resuming_a_folder_of_runs_names_them(finished_run, tmp_path, capsys):
    search = tmp_path / "evolve"
    search.mkdir()
    for number in range(1, 12):
        copy_of(finished_run, search / f"trial{number}")
        os.utime(search / f"trial{number}" / "last.pth", (1000 + number, 1000 + number))  # trial11 the newest
    assert train.main(["--resume", str(search), "--n_cpu", "0"]) == 1
    assert error_lines(capsys) == [f"error: --resume {search}: the folder holds 11 runs, not one (trial1, trial2, "
                                   f"trial3, trial4, trial5 and 6 more: an --evolve search?); resume one of them, e.g. "
                                   f"the newest: --resume {search / 'trial11'}"]

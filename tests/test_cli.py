"""utils/cli.py: --device specs, run folders, class-name files and the one error wrapper of every script."""
import errno
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from utils.cli import claim_run_dir, run_main, select_device
from utils.data.names import read_class_names
from utils.errors import InputWarning, UserError
from utils.output_files import refuse_existing, refuse_filled_folder, removed_on_failure


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend two GPUs: select_device only asks torch how many there are."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_and_the_default_without_cuda(no_cuda):
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("") == torch.device("cpu")
    assert select_device("cpu", local_rank=1) == torch.device("cpu")  # every DDP process on the CPU


@pytest.mark.parametrize("spec", ["0", "0,1", "cuda", "cuda:0"])
def test_cuda_specs_without_cuda_say_what_is_missing(no_cuda, spec):
    with pytest.raises(UserError, match=rf"--device {spec}: CUDA is not available on this machine \(torch .*\); "
                                        r"use --device cpu"):
        select_device(spec)


def test_cuda_specs_name_the_gpu_of_each_process(two_gpus):
    assert select_device("") == torch.device("cuda", 0)
    assert select_device("cuda") == torch.device("cuda", 0)
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device("1") == torch.device("cuda", 1)
    assert select_device("1,0") == torch.device("cuda", 1)  # one process: the first listed
    assert select_device("1,0", local_rank=1) == torch.device("cuda", 0)  # torchrun: the LOCAL_RANK-th
    assert select_device("", local_rank=1) == torch.device("cuda", 1)


def test_gpus_that_are_not_there_are_refused(two_gpus):
    with pytest.raises(UserError, match=r"--device cuda:2: there is no GPU 2; this machine has 2 \(0\.\.1\)"):
        select_device("cuda:2")
    with pytest.raises(UserError, match="there is no GPU 3"):
        select_device("0,3")
    with pytest.raises(UserError, match="--device 0 gives 1 GPU"):
        select_device("0", local_rank=1)


def test_a_spec_that_names_no_device_is_refused():
    with pytest.raises(UserError, match="--device gpu: expected cpu, cuda, cuda:N or GPU indices"):
        select_device("gpu")


def test_claim_run_dir_creates_the_first_free_number(tmp_path):
    assert claim_run_dir(tmp_path / "runs") == tmp_path / "runs" / "exp1"
    assert (tmp_path / "runs" / "exp1").is_dir()
    (tmp_path / "runs" / "exp3").mkdir()
    assert claim_run_dir(tmp_path / "runs") == tmp_path / "runs" / "exp2"
    assert claim_run_dir(tmp_path / "runs") == tmp_path / "runs" / "exp4"


def test_a_file_where_the_run_folders_go_is_named(tmp_path):
    (tmp_path / "runs").write_text("mine")
    with pytest.raises(UserError, match=r"/runs is not a folder, but the run folders .*/runs/train/expN go there"):
        claim_run_dir(tmp_path / "runs" / "train")
    assert (tmp_path / "runs").read_text() == "mine"


def test_commands_started_together_claim_a_folder_each(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: claim_run_dir(tmp_path / "runs"), range(32)))
    assert sorted(folders, key=lambda f: int(f.name[3:])) == [tmp_path / "runs" / f"exp{n}" for n in range(1, 33)]


def test_a_failed_start_removes_its_claimed_folder_but_no_earlier_one(tmp_path):
    claimed, earlier = claim_run_dir(tmp_path / "runs"), tmp_path / "mine"
    earlier.mkdir()
    for folder, was_claimed in ((claimed, True), (earlier, False)):
        with pytest.raises(UserError), removed_on_failure(folder, ("last.pth",), claimed=was_claimed):
            raise UserError("bad data")
    assert not claimed.exists() and earlier.is_dir()


def test_class_names_skip_blank_lines_and_spaces_and_warn_of_a_blank_line_darknet_would_count(tmp_path):
    path = tmp_path / "coco.names"
    path.write_text("\nperson\n  bicycle \r\ntraffic light\n   \n")
    assert read_class_names(path) == ["person", "bicycle", "traffic light"]
    path.write_text("person\n\nbicycle\n")
    with pytest.warns(InputWarning, match=r"coco\.names:2: a blank line between class names is dropped here, but "
                                          r"Darknet reads it as a class of no name"):
        assert read_class_names(path) == ["person", "bicycle"]
    path.write_text("circle\nsquare\n circle\n")
    with pytest.warns(InputWarning, match=r"coco\.names:3: the name 'circle' is also line 1's; two classes of one "
                                          r"name cannot be told apart in the detections"):
        assert read_class_names(path) == ["circle", "square", "circle"]


@pytest.mark.parametrize("text,first", [
    ("classes=4\ntrain=t.txt\n\nnames = x.names\n", "'classes=4' on line 1"),
    ("classes= 80\ntrain  = trainvalno5k.txt\n#valid = coco_val_5k.list\nnames = coco.names\nbackup = backup\n",
     "'classes= 80' on line 1"),  # Darknet's cfg/coco.data, a comment included
    ((REPO / "cfg" / "yolov3-tiny.cfg").read_text(), "'[net]' on line 1"),
])
def test_a_settings_file_given_as_class_names_is_refused(tmp_path, text, first):
    (tmp_path / "x.names").write_text(text)
    with pytest.raises(UserError, match=rf"x\.names: its lines are settings \({re.escape(first)}\), as in a \.data "
                                        rf"file or a cfg; expected a \.names file, one class name a line"):
        read_class_names(tmp_path / "x.names")


@pytest.mark.parametrize("text", ["a=b\nsquare\n", "speed=50\n", "# not a comment: a name\nsquare\n"])
def test_names_holding_an_equals_sign_or_a_hash_are_names(tmp_path, text):
    (tmp_path / "x.names").write_text(text)
    assert read_class_names(tmp_path / "x.names") == text.splitlines()


def test_a_missing_names_file_is_named(tmp_path):
    with pytest.raises(UserError, match=r"absent\.names: cannot read names file: No such file or directory"):
        read_class_names(tmp_path / "absent.names")


def fails_with(error: BaseException):
    def main() -> int:
        raise error
    return main


def test_a_user_error_is_one_line_and_exit_code_1(capsys):
    assert run_main(fails_with(UserError("data/x.data:3: classes must be a positive integer"))) == 1
    assert capsys.readouterr().err == "error: data/x.data:3: classes must be a positive integer\n"


def test_a_message_over_several_lines_is_printed_as_one(capsys):
    assert run_main(fails_with(UserError("no model found:\n    bash scripts/demo.sh\nmakes one"))) == 1
    assert capsys.readouterr().err == "error: no model found: bash scripts/demo.sh makes one\n"


def test_an_os_error_names_the_file(capsys):
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", "weights/yolov3.weights")
    assert run_main(fails_with(error)) == 1
    assert capsys.readouterr().err == "error: weights/yolov3.weights: No such file or directory\n"
    assert run_main(fails_with(FileExistsError("out.pth exists; pass --force to replace it"))) == 1
    assert capsys.readouterr().err == "error: out.pth exists; pass --force to replace it\n"


def test_ctrl_c_is_interrupted_and_exit_code_130(capsys):
    assert run_main(fails_with(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_a_bug_keeps_its_traceback(capsys):
    with pytest.raises(ZeroDivisionError):
        run_main(lambda: 1 // 0)
    with pytest.raises(ValueError, match="a bug"):
        run_main(fails_with(ValueError("a bug")))
    assert capsys.readouterr().err == ""


def test_success_returns_the_body_exit_code():
    assert run_main(lambda: 0) == 0


def test_an_output_that_could_not_be_written_is_named_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(UserError, match=rf"--out {tmp_path}/a_file/deeper/x\.json: {tmp_path}/a_file is a file, "
                                        r"not a folder"):
        refuse_existing([tmp_path / "a_file" / "deeper" / "x.json"], "--out", exist_ok=False)
    writable = {tmp_path / "ok"}
    (tmp_path / "ok").mkdir()
    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) in writable)  # root may write anywhere
    refuse_existing([tmp_path / "ok" / "new" / "x.json"], "--out", exist_ok=False)
    with pytest.raises(UserError, match=rf"--output {tmp_path}/locked/run: cannot write in {tmp_path}/locked "
                                        r"\(permission denied\)"):
        refuse_filled_folder(tmp_path / "locked" / "run", "--output", exist_ok=False)


def test_running_out_of_memory_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    def allocate():
        torch.empty(1 << 62, dtype=torch.uint8)  # far past any machine's memory
        return 0

    assert run_main(allocate) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and err.endswith("a smaller input size or batch needs less\n")
    assert err.count("\n") == 1
    with pytest.raises(RuntimeError, match="a bug"):
        run_main(fails_with(RuntimeError("a bug")))


def test_this_repos_warnings_print_as_one_line_and_others_as_python_does(capsys):
    from utils.darknet.cfg import CfgWarning

    def warn():
        warnings.warn("ignored keys", CfgWarning)
        warnings.warn("from elsewhere", DeprecationWarning)
        return 0

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # as Python shows a warning outside pytest, which records them instead
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        assert run_main(warn) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "warning: ignored keys" and "DeprecationWarning: from elsewhere" in lines[1]
    assert warnings.formatwarning is not None and "utils.cli" not in warnings.formatwarning.__module__

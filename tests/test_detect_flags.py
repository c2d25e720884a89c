"""Every bad flag or input of detect.py: a non-zero exit, exactly one ``error:`` line saying what and where, never a
traceback. One subprocess per row, as a user would run it."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import REPO, random_tiny_model
from utils.darknet.checkpoint import save_model

pytestmark = pytest.mark.e2e  # every test here runs a command line as a subprocess

ROWS = [  # (flags, with {T} for the fixture's folder; what the error line says)
    (["--batch_size", "0"], "--batch_size: expected an integer in 1 .. inf, got 0"),
    (["--batch_size", "2.5"], "--batch_size: expected an integer in 1 .. inf, got '2.5'"),
    (["--img_size", "33"], "--img_size: expected an integer in 32 .. 8192, a multiple of 32, got 33"),
    (["--img_size", "0"], "--img_size: expected an integer in 32 .. 8192, a multiple of 32, got 0"),
    (["--conf_thres", "2"], "--conf_thres: expected a finite number in [0, 1], got 2"),
    (["--conf_thres", "nan"], "--conf_thres: expected a finite number in [0, 1], got nan"),
    (["--nms_thres", "-0.1"], "--nms_thres/--iou_thres: expected a finite number in [0, 1], got -0.1"),
    (["--max_det", "0"], "--max_det: expected an integer in 1 .. inf, got 0"),
    (["--classes", "-1"], "--classes: expected an integer in 0 .. inf, got -1"),
    (["--classes"], "--classes: expected at least one argument"),
    (["--classes", "0", "7"], "--classes: 7 is not a class of this model, which has 4 (0..3)"),
    (["--line_thickness", "0"], "--line_thickness: expected an integer in 1 .. 100, got 0"),
    (["--device", "gpu"], "--device: expected cpu, cuda, cuda:N or GPU indices such as 0 or 0,1; got 'gpu'"),
    (["--device", "0"], "--device 0: CUDA is not available on this machine"),
    (["--source", "{T}/absent"], "{T}/absent: no such file or folder"),
    (["--source", "{T}/empty"], "{T}/empty: no images or videos found"),
    (["--source", "{T}/nested"], "{T}/nested: no images or videos found; it has subfolders: --recursive looks in them"),
    (["--source", "{T}/images/*.bmp"], "{T}/images/*.bmp: the pattern matches no files"),
    (["--source", " "], "--source: the source is empty: name a folder"),
    (["--source", "{T}/sources.txt"], "{T}/sources.txt:2: nowhere/: no such file or folder"),
    (["--output", "{T}/a_file"], "--output {T}/a_file: is a file, expected a folder"),
    (["--output", "{T}/images/out"], "--output {T}/images/out is inside the input folder {T}/images"),
    (["--weights_path", "{T}/absent.pth"], "{T}/absent.pth: cannot read weights file: No such file or directory"),
    (["--weights_path", "{T}/a_file.pth"], "{T}/a_file.pth: not a readable checkpoint"),
    (["--class_path", "{T}/three.names"], "{T}/three.names: 3 class names for a model with 4 classes"),
    (["--unknown_flag"], "unrecognized arguments: --unknown_flag"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model, images, and the bad inputs the rows name."""
    root = tmp_path_factory.mktemp("flags")
    save_model(random_tiny_model(4, seed=0), root / "model.pth", ["a", "b", "c", "d"])
    (root / "images").mkdir()
    cv2.imwrite(str(root / "images" / "x.jpg"), np.zeros((32, 32, 3), np.uint8))
    (root / "empty").mkdir()
    (root / "nested" / "day").mkdir(parents=True)
    cv2.imwrite(str(root / "nested" / "day" / "y.jpg"), np.zeros((32, 32, 3), np.uint8))
    (root / "sources.txt").write_text(f"{root / 'images'}\nnowhere/\n")
    (root / "a_file").write_text("not a folder")
    (root / "a_file.pth").write_text("not a checkpoint")
    (root / "three.names").write_text("a\nb\nc\n")
    return root


@pytest.mark.parametrize("flags,message", ROWS, ids=[" ".join(flags) for flags, _ in ROWS])
def test_a_bad_flag_is_one_error_line(folder, flags, message):
    base = ["--source", str(folder / "images"), "--weights_path", str(folder / "model.pth"), "--img_size", "64",
            "--output", str(folder / "out")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # "--device 0" is refused the same way on a GPU machine
    result = subprocess.run([sys.executable, "detect.py", *base, *(f.replace("{T}", str(folder)) for f in flags)],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1, result.stderr
    assert message.replace("{T}", str(folder)) in errors[0]
    assert not (folder / "out").exists()  # refused before anything was written

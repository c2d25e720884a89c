"""utils.allocator: once tuned, freeing and re-allocating feature maps faults no pages in again."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A forward pass of res2net-yolov3-tiny at 320 frees and allocates ~60 MB of feature maps: page faults per
# pass over five passes after three to settle, and whether the settings were in force ("plain" stops
# prepare_inference() from applying them).
CHILD = """
import resource, sys, warnings, torch
import utils.darknet.model
from utils import allocator
warnings.simplefilter("ignore")
if sys.argv[1] == "plain":
    utils.darknet.model.tune_allocator = lambda: False
model = utils.darknet.model.Darknet("cfg/res2net-yolov3-tiny.cfg").prepare_inference()
x = torch.rand(1, 3, 320, 320)
with torch.inference_mode():
    for _ in range(3):
        model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        model(x)
print(allocator._tuned is True, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def run_child(mode: str, **env: str) -> tuple[bool, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=REPO, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2", **env}, check=True)
    tuned, faults = done.stdout.split()
    return tuned == "True", float(faults)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_prepared_model_reuses_freed_feature_maps_without_page_faults():
    tuned, faults = run_child("tune")
    assert tuned
    # glibc's defaults ("plain"): 3,108-3,168 a pass in most processes, 0-130 in some (they adapt to where
    # the heap lands), so only the tuned side is asserted
    assert faults < 100


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_malloc_settings_in_the_environment_are_left_as_the_user_chose():
    tuned, _ = run_child("tune", MALLOC_TRIM_THRESHOLD_="0")
    assert not tuned


def test_run_main_and_prepare_inference_tune_the_allocator(monkeypatch):
    import utils.cli
    import utils.darknet.model
    from tests.cfgs import NET, conv
    from utils.darknet.cfg import parse_cfg
    calls = []
    monkeypatch.setattr(utils.cli, "tune_allocator", lambda: calls.append("cli"))
    monkeypatch.setattr(utils.darknet.model, "tune_allocator", lambda: calls.append("model"))
    assert utils.cli.run_main(lambda: 0) == 0
    utils.darknet.model.Darknet(parse_cfg(NET + conv(4))).prepare_inference()
    assert calls == ["cli", "model"]

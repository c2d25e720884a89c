"""benchmarks/bench_speed.py's profile and step cases on a tiny cfg: what they report, not how fast."""
import subprocess
import sys

import pytest

from benchmarks.bench_speed import case_profile, case_step
from tests.cfgs import conv, head
from tests.conftest import REPO

# 80 classes: the step case's synthetic targets draw COCO's class indices
TINY = conv(8) + conv(16, stride=2) + head(classes=80)


@pytest.fixture
def tiny_cfg(write_cfg):
    return str(write_cfg(TINY))


def _check_operator_rows(rows):
    names = [name for name, _, _, _ in rows]
    shares = [share for _, _, share, _ in rows]
    assert len(rows) == 12 and len(set(names)) == 12
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert all(ms >= 0 and calls > 0 for _, ms, _, calls in rows)
    return names


def test_profile_of_a_prepared_pass_lists_the_packed_convolution_once_per_conv(tiny_cfg):
    result = case_profile(tiny_cfg, 64, 1, "inference")
    rows = {name: calls for name, _, _, calls in result["operators"]}
    _check_operator_rows(result["operators"])
    assert rows.get("mkldnn::_convolution_pointwise") == 3  # two BN convs and the head's, folded and packed
    assert result["ms"] > 0 and result["faults"] >= 0


def test_profile_of_a_training_step_holds_the_convolutions_backward(tiny_cfg):
    result = case_profile(tiny_cfg, 64, 2, "step")
    names = _check_operator_rows(result["operators"])
    assert "aten::convolution_backward" in names


def test_step_case_times_a_step_against_its_floor(tiny_cfg):
    result = case_step(tiny_cfg, 64, 2, steps=2)
    assert result["ms"] > 0 and result["floor_ms"] > 0
    assert result["img_per_s"] == pytest.approx(2 / result["ms"] * 1e3)


def test_only_profile_prints_a_table_per_model_and_size(tiny_cfg):
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_speed", "--only", "profile", "--models", tiny_cfg,
                           "--sizes", "64", "32"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "model.cfg @64, batch 1, prepared:" in done.stdout and "model.cfg @32, batch 1, prepared:" in done.stdout
    assert done.stdout.count("mkldnn::_convolution_pointwise") == 2

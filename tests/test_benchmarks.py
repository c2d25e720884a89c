"""The training benchmarks on a small synthetic set: they run against today's library API and report sane
figures (their speed is what they measure, not what these tests check)."""
import re

from benchmarks import bench_backbones, bench_train
from utils.data.synthetic import write_dataset


def test_bench_train_reports_a_rate_and_a_wait_share(tmp_path):
    data = write_dataset(tmp_path / "shapes", train=6, valid=1, size=96)  # 1 timed step after 2 warm-up steps of 2
    rate, wait = bench_train.bench(bench_train.Case("yolov3-tiny", 96, 2, None, None), 1, data, workers=0)
    assert rate > 0 and 0 <= wait < 1


def test_bench_backbones_times_each_models_training_step(capsys):
    bench_backbones.bench_train(["yolov3-tiny", "res2net-yolov3-tiny"], 96, rounds=1)
    rows = re.findall(r"^\s+(\S+)\s+([\d.]+) img/s$", capsys.readouterr().out, re.M)
    assert [name for name, _ in rows] == ["yolov3-tiny", "res2net-yolov3-tiny"]
    assert all(float(rate) > 0 for _, rate in rows)

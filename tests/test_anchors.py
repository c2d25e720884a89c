"""Anchors: Darknet's calc_anchors k-means (recovers known sizes), the fit measures, the cfg rewrite (every
other byte kept, masks by stride), the start-up check and calc_anchors.py's command line."""
import difflib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from models import Darknet
from tests.conftest import REPO
from utils.darknet.cfg import CfgError, parse_cfg, read_cfg
from utils.darknet.checkpoint import save_model
from utils.data.anchors import (FIT_THRESHOLD, AnchorCheck, AnchorError, KMeansOptions, _kmeans_once, anchor_fit,
                                anchors_in_use, check_anchor_fit, format_anchors, head_strides, kmeans_anchors,
                                label_sizes, spread_masks, with_anchors)
from utils.data.synthetic import write_dataset

KNOWN = np.array([[20.0, 30.0], [60.0, 40.0], [120.0, 150.0]])


def clustered_boxes(seed=0, per_cluster=200, spread=0.05):
    rng = np.random.default_rng(seed)
    return np.concatenate([centre * rng.uniform(1 - spread, 1 + spread, (per_cluster, 2)) for centre in KNOWN])


def test_kmeans_recovers_known_box_sizes():
    boxes = clustered_boxes()
    clusters = kmeans_anchors(boxes, KMeansOptions(num_anchors=3, restarts=5))
    np.testing.assert_allclose(clusters.anchors, KNOWN, rtol=0.01)  # sorted by area, as KNOWN is
    ideal, _ = anchor_fit(KNOWN, boxes)
    assert clusters.avg_iou == pytest.approx(ideal, abs=2e-3) and clusters.avg_iou > 0.93
    again = kmeans_anchors(boxes, KMeansOptions(num_anchors=3, restarts=5))
    np.testing.assert_array_equal(again.anchors, clusters.anchors)  # seeded


def test_fit_is_the_best_corner_aligned_iou_per_box():
    boxes = np.array([[10.0, 10.0], [20.0, 10.0], [10.0, 40.0], [5.0, 5.0]])
    anchors = np.array([[10.0, 10.0], [10.0, 20.0]])
    # IoUs with the best anchor: 1; 100/200; 200/400; 25/100
    avg_iou, recall = anchor_fit(anchors, boxes, [0.25, 0.5, 0.6])
    assert avg_iou == pytest.approx((1 + 0.5 + 0.5 + 0.25) / 4)
    assert recall == {0.25: 1.0, 0.5: 0.75, 0.6: 0.25}
    with pytest.raises(AnchorError, match="no labelled boxes"):
        anchor_fit(anchors, np.zeros((0, 2)))


def test_an_empty_cluster_keeps_its_centre_and_members_average():
    boxes = np.array([[10.0, 10.0], [12.0, 14.0], [11.0, 12.0]])
    centres, rounds = _kmeans_once(boxes, np.array([[10.0, 10.0], [1000.0, 1000.0]]), 1000)
    np.testing.assert_allclose(centres, [[11.0, 12.0], [1000.0, 1000.0]])
    assert rounds == 1  # one update, then nothing moved


def test_too_few_sizes_and_bad_counts_name_the_flag():
    with pytest.raises(AnchorError, match="2 distinct sizes, too few for --num_anchors 3"):
        kmeans_anchors(np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]]), KMeansOptions(num_anchors=3))
    with pytest.raises(AnchorError, match="--num_anchors \\(0\\)"):
        kmeans_anchors(clustered_boxes(), KMeansOptions(num_anchors=0))


def test_anchors_print_as_darknet_rounds_them():
    assert format_anchors(np.array([[10.5, 11.5], [0.2, 3.49]])) == "10,12, 1,3"


def test_label_sizes_are_in_input_pixels():
    labels = [np.array([[0, 0.5, 0.5, 0.25, 0.5]]), np.zeros((0, 5)), np.array([[1, 0.1, 0.1, 0.1, 0.2]])]
    np.testing.assert_allclose(label_sizes(labels, 320), [[80, 160], [32, 64]])


def test_masks_spread_largest_anchors_to_the_coarsest_stride():
    assert spread_masks(9, None, 3) == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]  # cfg order, as Darknet's yolov3
    assert spread_masks(9, [8, 16, 32], 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # yolov4's head order
    assert spread_masks(7, [32, 16], 2) == [[4, 5, 6], [0, 1, 2, 3]]  # the finer stride takes the extra one
    with pytest.raises(AnchorError, match="--num_anchors 2 is fewer than the cfg's 3"):
        spread_masks(2, None, 3)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """The (old, new) lines that differ; every other line, and the line count, must be the same."""
    assert before.endswith("\n") and after.endswith("\n") and "\r" not in after
    diff = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines())
    assert all(op in ("equal", "replace") for op, *_ in diff.get_opcodes())
    pairs = []
    for op, a0, a1, b0, b1 in diff.get_opcodes():
        if op == "replace":
            assert a1 - a0 == b1 - b0
            pairs += list(zip(before.splitlines()[a0:a1], after.splitlines()[b0:b1]))
    return pairs


@pytest.mark.parametrize("name,first_mask", [("yolov3", "6,7,8"), ("yolov4", "0,1,2")])
def test_rewrite_changes_only_the_anchor_lines(name, first_mask):
    cfg = read_cfg(REPO / "cfg" / f"{name}.cfg")
    anchors = np.array([[w, w * 1.5] for w in range(10, 100, 10)])
    edit = with_anchors(cfg, anchors)
    pairs = changed_lines(cfg.text, edit.cfg.text)
    assert [old.split("=")[0] for old, _ in pairs] == ["anchors"] * 3  # the masks were right already
    assert {new for _, new in pairs} == {"anchors=" + format_anchors(anchors).replace(" ", "")}
    assert edit.cfg.layers[[i for i, s in enumerate(edit.cfg.layers) if s.name == "yolo"][0]].value("mask") \
        == first_mask


def test_rewrite_with_more_anchors_updates_num_masks_and_head_filters():
    cfg = read_cfg(REPO / "cfg" / "yolov3-tiny.cfg")
    anchors = np.array([[w, w] for w in range(10, 100, 10)])
    edit = with_anchors(cfg, anchors)
    pairs = changed_lines(cfg.text, edit.cfg.text)
    written = format_anchors(anchors).replace(" ", "")
    assert sorted(new for _, new in pairs) == sorted(
        ["filters=340", "mask=5,6,7,8", f"anchors={written}", "num=9",
         "filters=425", "mask=0,1,2,3,4", f"anchors={written}", "num=9"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Darknet(edit.cfg)
    assert [y.anchors.tolist() for y in model.yolo_layers] == [anchors[5:].tolist(), anchors[:5].tolist()]


def test_a_cfg_without_mask_gets_one_and_strides_fall_back_to_cfg_order(tmp_path):
    text = ("[net]\nwidth=64\nheight=64\n[convolutional]\nfilters=18\nsize=1\nstride=1\n"
            "[yolo]\nanchors=1,1, 2,2, 3,3\nclasses=1\nnum=3\n[mystery]\n")
    cfg = parse_cfg(text, "m.cfg")
    assert head_strides(cfg) is None  # [mystery] does not build
    edit = with_anchors(cfg, np.array([[4, 4], [8, 8], [16, 16]]))
    assert edit.strides is None and edit.masks == [[0, 1, 2]]
    assert edit.cfg.text.splitlines()[8:10] == ["mask=0,1,2", "anchors=4,4,8,8,16,16"]


def test_more_anchors_behind_a_route_say_which_yolo_cannot_resize_its_conv():
    text = ("[net]\nwidth=64\nheight=64\n[convolutional]\nfilters=18\nsize=1\nstride=1\n[route]\nlayers=-1\n"
            "[yolo]\nmask=0,1,2\nanchors=1,1, 2,2, 3,3\nclasses=1\nnum=3\n")
    cfg = parse_cfg(text, "m.cfg")
    with pytest.raises(CfgError, match=r"m\.cfg:10: layer 2 \[yolo\]: the layer before this \[yolo\] is \[route\], "
                                       r"not a \[convolutional\]"):
        with_anchors(cfg, np.array([[w, w] for w in range(4, 40, 4)]))
    assert with_anchors(cfg, np.array([[4, 4], [8, 8], [16, 16]])).cfg.layers[2].value("anchors") == "4,4,8,8,16,16"


def test_the_startup_check_flags_a_poor_fit_and_names_the_command():
    cfg = read_cfg(REPO / "cfg" / "yolov3-tiny.cfg")
    np.testing.assert_array_equal(anchors_in_use(cfg)[:2], [[81, 82], [135, 169]])
    big = [np.array([[0, 0.5, 0.5, 0.98, 0.9]] * 5)]  # whole-image boxes at 608: over 3x the largest anchor
    poor = check_anchor_fit(cfg, big, 608)
    assert poor.poor and "calc_anchors.py --data_config D.data --num_anchors 6 --img_size 608" in \
        poor.advice("D.data", "cfg/yolov3-tiny.cfg")
    good = check_anchor_fit(cfg, [np.array([[0, 0.5, 0.5, 81 / 416, 82 / 416]] * 5)], 416)
    assert not good.poor and good.avg_iou == pytest.approx(1.0) and "average IoU 100.0 %" in good.summary()
    v4 = check_anchor_fit(read_cfg(REPO / "cfg" / "yolov4.cfg"), big, 608)
    assert sorted(v4.recall) == [0.213, 0.25]  # the cfg's iou_thresh too


def calc_anchors(*args):
    return subprocess.run([sys.executable, "calc_anchors.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True)


@pytest.mark.e2e
def test_calc_anchors_command_line(tmp_path):
    data = write_dataset(tmp_path / "set", train=30, valid=2, size=96, seed=2)
    out = tmp_path / "new.cfg"
    result = calc_anchors("--data_config", data, "--num_anchors", 6, "--img_size", 320, "--model_def",
                          REPO / "cfg" / "yolov3-tiny.cfg", "--out", out)
    assert result.returncode == 0, result.stderr
    anchors = result.stdout.split("anchors = ")[1].splitlines()[0]
    assert len(anchors.split(", ")) == 6 and f"anchors={anchors.replace(' ', '')}" in out.read_text()
    assert "new anchors: average IoU" in result.stdout and "yolov3-tiny.cfg's anchors: average IoU" in result.stdout
    again = calc_anchors("--data_config", data, "--num_anchors", 6, "--img_size", 320, "--model_def",
                         REPO / "cfg" / "yolov3-tiny.cfg", "--out", out)
    assert again.returncode == 1 and again.stderr.strip() == (f"error: --out {out}: the file exists; choose another "
                                                                f"name or pass --force to replace it")
    alone = calc_anchors("--data_config", data, "--out", out)
    assert alone.returncode == 1 and "name it with --model_def" in alone.stderr
    too_many = calc_anchors("--data_config", data, "--num_anchors", 5000)
    assert too_many.returncode == 1 and re.fullmatch(
        rf"error: 30 train images \({re.escape(str(tmp_path))}/set/train\.txt\): the labels hold \d+ boxes of \d+ "
        r"distinct sizes, too few for --num_anchors 5000\n", too_many.stderr)


@pytest.mark.e2e
def test_calc_anchors_takes_its_defaults_from_the_cfg_and_never_writes_over_an_input(tmp_path):
    data = write_dataset(tmp_path / "set", train=12, valid=2, size=96, seed=2)
    cfg = REPO / "cfg" / "yolov3-tiny.cfg"
    save_model(Darknet(cfg), tmp_path / "trained.pth", trained={"options": {"img_size": 320}})
    for model_def, size, why in [(cfg, 416, "train.py trains at by default"),
                                 (tmp_path / "trained.pth", 320, "it was trained at")]:  # a .pth: its own cfg
        result = calc_anchors("--data_config", data, "--model_def", model_def, "--out", tmp_path / "new.cfg",
                              "--force")
        assert result.returncode == 0, result.stderr
        assert f"sizes at {size}x{size} (6 anchors, as the cfg uses, at the size {why})" in result.stdout
        assert len(result.stdout.split("anchors = ")[1].splitlines()[0].split(", ")) == 6
    flagged = calc_anchors("--data_config", data, "--model_def", cfg, "--num_anchors", 4, "--img_size", 256)
    assert "sizes at 256x256\n" in flagged.stdout
    before = {path: path.read_bytes() for path in (tmp_path / "set").rglob("*") if path.is_file()}
    for out, problem in [(tmp_path / "set" / "train.txt", "expected a .cfg name, as the output is a cfg's text"),
                         (cfg, f"--out {cfg} is the input {cfg}; write it elsewhere")]:
        refused = calc_anchors("--data_config", data, "--model_def", cfg, "--out", out, "--force")
        assert refused.returncode == 1 and problem in refused.stderr, refused.stderr
    assert {path: path.read_bytes() for path in (tmp_path / "set").rglob("*") if path.is_file()} == before
    weights = calc_anchors("--data_config", data, "--model_def", tmp_path / "x.weights")
    assert weights.returncode == 1 and "expected a .cfg, or a .pth that carries one" in weights.stderr


@pytest.mark.e2e
def test_calc_anchors_without_labels_says_where_it_looked(tmp_path):
    data = write_dataset(tmp_path / "set", train=3, valid=1, size=64)
    for label in (tmp_path / "set" / "labels" / "train").iterdir():
        label.unlink()
    result = calc_anchors("--data_config", data)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert f"{tmp_path}/set/labels/train/00000.txt (for {tmp_path}/set/images/train/00000.jpg)" in result.stderr
    assert "so their boxes cannot be counted" in result.stderr and "--allow_all_negative" not in result.stderr


@pytest.mark.parametrize("avg_iou,recall,named,not_named", [
    (0.654, 0.954, "best possible recall at IoU 0.25 95.4 % < 98 %", "average IoU"),
    (0.40, 0.99, "average IoU 40.0 % < 50 %", "best possible recall"),
    (0.40, 0.90, "average IoU 40.0 % < 50 % and best possible recall at IoU 0.25 90.0 % < 98 %", None),
])
def test_a_poor_fit_warning_names_only_the_measures_that_fall_short(avg_iou, recall, named, not_named):
    check = AnchorCheck(avg_iou, {FIT_THRESHOLD: recall}, boxes=10, num_anchors=6, img_size=320)
    assert check.poor
    advice = check.advice("d.data", "m.cfg")
    assert f"poorly ({named});" in advice and "--num_anchors 6 --img_size 320 --model_def m.cfg" in advice
    assert not_named is None or not_named not in advice.split(";")[0]


def test_calc_anchors_warns_of_anchors_that_round_alike_and_of_a_fit_still_poor():
    from calc_anchors import anchor_notes
    anchors = np.array([[13.0, 13.0], [13.0, 13.0], [40.0, 30.0]])
    good = AnchorCheck(0.7, {FIT_THRESHOLD: 0.99}, boxes=10, num_anchors=3, img_size=64)
    assert anchor_notes(anchors, good) == [
        "1 of the 3 anchors repeat another once rounded to whole pixels (13,13): the boxes' sizes lie within a pixel "
        "of each other at 64 px, so fewer --num_anchors would do the same"]
    assert anchor_notes(anchors[1:], good) == []
    poor = AnchorCheck(0.2, {FIT_THRESHOLD: 0.5}, boxes=10, num_anchors=2, img_size=32)
    assert anchor_notes(anchors[1:], poor) == [
        "even the anchors k-means found fit these boxes poorly (average IoU 20.0 % < 50 % and best possible recall at "
        "IoU 0.25 50.0 % < 98 %): their sizes are too spread for 2 anchors, or too small at 32 px; more --num_anchors "
        "or a larger --img_size may fit them"]


@pytest.mark.e2e
def test_calc_anchors_prints_the_rounding_warning(tmp_path):
    data = write_dataset(tmp_path / "set", train=6, valid=1, size=64, seed=1)
    for k, label in enumerate(sorted((tmp_path / "set" / "labels" / "train").iterdir())):
        label.write_text(f"0 0.5 0.5 {0.2 + 0.001 * (k % 2)} {0.2 + 0.001 * (k % 2)}\n")  # 12.8 and 12.864 px
    result = calc_anchors("--data_config", data, "--num_anchors", 2, "--img_size", 64)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("warning: 1 of the 2 anchors repeat another once rounded to whole pixels (13,13)")

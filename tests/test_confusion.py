"""Evaluation pictures: the confusion matrix on a hand-made case (exact counts), greedy matching, the
F1-maximising confidence on a hand-made case, and the PNG files."""
import numpy as np
import pytest

from utils.evaluation.confusion import (ConfusionOptions, best_f1_confidence, confidence_curves, confusion_matrix,
                                        greedy_pairs, write_evaluation_pictures)
from utils.evaluation.evaluate import ImageRecord, format_results, score


def record(detections, truth):
    return ImageRecord("x.jpg", 100, 100, np.array(detections, np.float64).reshape(-1, 6),
                       np.array(truth, np.float64).reshape(-1, 5))


CAT, DOG = 0, 1


def test_confusion_matrix_counts_a_hand_made_case():
    first = record(detections=[[0, 0, 10, 10, 0.9, CAT],  # on the cat A: IoU 1
                               [20, 20, 30, 28, 0.8, CAT],  # on the dog B, IoU 0.8: a confusion
                               [80, 80, 90, 90, 0.7, DOG],  # on nothing: a false positive
                               [0, 0, 10, 7, 0.6, DOG],  # on A too (IoU 0.7), which is taken: a false positive
                               [50, 50, 60, 60, 0.1, CAT]],  # on the cat C, but below conf 0.25: C is missed
                   truth=[[CAT, 0, 0, 10, 10], [DOG, 20, 20, 30, 30], [CAT, 50, 50, 60, 60]])
    no_truth = record(detections=[[5, 5, 15, 15, 0.5, DOG]], truth=[])
    no_detections = record(detections=[], truth=[[DOG, 1, 1, 9, 9]])
    matrix = confusion_matrix([first, no_truth, no_detections], 2)
    np.testing.assert_array_equal(matrix, [[1, 0, 1],  # true cat: predicted cat, missed
                                           [1, 0, 1],  # true dog: predicted cat, missed
                                           [0, 3, 0]])  # background: three false dogs
    strict = confusion_matrix([first], 2, ConfusionOptions(conf=0.25, iou=0.85))  # B's 0.8 no longer matches
    np.testing.assert_array_equal(strict, [[1, 0, 1], [0, 0, 1], [1, 2, 0]])


def test_matching_is_greedy_by_iou_each_box_once():
    ious = np.array([[0.9, 0.8], [0.0, 0.6]])  # truth rows, detection columns
    # YOLOv5's matrix keeps each detection's best truth first (both want truth 0), so it would drop detection 1
    assert greedy_pairs(ious, 0.5) == [(0, 0), (1, 1)]
    assert greedy_pairs(ious, 0.7) == [(0, 0)]
    assert greedy_pairs(np.zeros((0, 3)), 0.5) == []


def hand_made_scores():
    truth = [[0, 0, 0, 10, 10], [0, 20, 0, 30, 10], [1, 40, 0, 50, 10]]
    detections = [[0, 0, 10, 10, 0.9, 0],  # class 0: hit
                  [60, 60, 70, 70, 0.8, 0],  # class 0: miss
                  [20, 0, 30, 10, 0.6, 0],  # class 0: hit
                  [40, 0, 50, 10, 0.7, 1],  # class 1: hit
                  [80, 0, 90, 10, 0.5, 1]]  # class 1: miss
    return score([record(detections, truth)], ["a", "b"])


def test_the_f1_maximising_confidence_of_a_hand_made_case():
    result = hand_made_scores()
    # mean F1 at each threshold: 0.9 -> (2/3 + 0)/2; 0.8 -> (1/2 + 0)/2; 0.7 -> (1/2 + 1)/2; 0.6 -> (4/5 + 1)/2;
    # 0.5 -> (4/5 + 2/3)/2
    assert best_f1_confidence(result) == pytest.approx((0.6, 0.9))
    curves = confidence_curves(result)
    at = int(np.argmin(np.abs(curves.confidence - 0.65)))
    np.testing.assert_allclose(curves.precision[:, at], [0.5, 1.0])
    np.testing.assert_allclose(curves.recall[:, at], [0.5, 1.0])
    np.testing.assert_allclose(curves.f1[:, at], [0.5, 1.0])
    top = len(curves.confidence) - 1  # above every score: nothing kept, precision 1 by convention, recall 0
    np.testing.assert_allclose([curves.precision[:, top], curves.recall[:, top]], [[1, 1], [0, 0]])


def test_the_summary_states_the_threshold_its_precision_and_recall_are_at():
    result = score([record([[0, 0, 5, 5, 0.95, 0]], [[0, 0, 0, 5, 5]])], ["a"])
    assert "P/R/F1 at IoU 0.5 for conf >= 0.25;" in format_results(result, 0.001, 0.5, "letterboxed")
    assert "P/R/F1 at IoU 0.5 for conf >= 0.9;" in format_results(result, 0.9, 0.5, "letterboxed")  # none under


def test_no_detections_has_no_best_confidence():
    assert best_f1_confidence(score([record([], [[0, 0, 0, 5, 5]])], ["a"])) is None
    missed = record([[50, 50, 60, 60, 0.8, 0]], [[0, 0, 0, 5, 5]])  # a detection, but nowhere near the target
    assert best_f1_confidence(score([missed], ["a"])) is None  # not 0.8: that would advise detecting nothing


def test_pictures_are_written(tmp_path):
    result = hand_made_scores()
    pictures = write_evaluation_pictures([record([[0, 0, 10, 10, 0.9, 0]], [[0, 0, 0, 10, 10]])], result,
                                         tmp_path / "eval")
    assert [p.name for p in pictures.files] == ["confusion_matrix.png", "F1_curve.png", "P_curve.png",
                                                "R_curve.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pictures.files)
    assert pictures.best == pytest.approx((0.6, 0.9)) and pictures.matrix[0, 0] == 1


def test_pictures_of_a_set_without_ground_truth_are_drawn_without_warnings(tmp_path):
    import warnings
    from utils.plots import plot_pr_curves
    result = score([record([[0, 0, 10, 10, 0.9, 0]], [])], ["a"])  # a detection, and no box to find
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend" included
        pictures = write_evaluation_pictures([record([[0, 0, 10, 10, 0.9, 0]], [])], result, tmp_path / "eval")
        plot_pr_curves(result, tmp_path / "pr.png")
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in [*pictures.files, tmp_path / "pr.png"])

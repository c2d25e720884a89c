"""mAP against pycocotools on generated detections, and the AP methods on hand-checked cases."""
import contextlib
import io

import numpy as np
import pytest

from utils.evaluation.metrics import average_precision, evaluate_detections

NAMES = ["a", "b", "c", "d"]


def random_scene(rng, num_images, num_classes=4):
    """Ground truth with crowded and empty images and a class that never appears; detections that are
    jittered copies of the truth (some missed), plus false positives with random scores."""
    images = []
    for i in range(num_images):
        count = 0 if i % 7 == 0 else int(rng.integers(1, 25))
        xy = rng.uniform(0, 400, (count, 2))
        wh = rng.uniform(16, 120, (count, 2))
        gts = np.column_stack([rng.integers(0, num_classes - 1, count), xy, xy + wh])  # class 3 never appears
        keep = rng.random(count) > 0.2
        jitter = np.clip(rng.normal(0, 4, (count, 4)), -7, 7)  # never inverts a box
        hits = np.column_stack([gts[keep, 1:] + jitter[keep], rng.uniform(0.2, 1.0, keep.sum()), gts[keep, 0]])
        fp_count = int(rng.integers(0, 15))
        fp_xy = rng.uniform(0, 400, (fp_count, 2))
        fps = np.column_stack([fp_xy, fp_xy + rng.uniform(8, 120, (fp_count, 2)), rng.uniform(0, 0.9, fp_count),
                               rng.integers(0, num_classes, fp_count)])
        images.append((np.concatenate([hits, fps]), gts))
    return images


def pycocotools_map(images):
    coco_module = pytest.importorskip("pycocotools.coco")
    from pycocotools.cocoeval import COCOeval
    gt = {"images": [], "annotations": [], "categories": [{"id": c + 1, "name": n} for c, n in enumerate(NAMES)]}
    dets = []
    for image_id, (d, g) in enumerate(images, 1):
        gt["images"].append({"id": image_id, "width": 640, "height": 640})
        for k, (c, x1, y1, x2, y2) in enumerate(g):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(c) + 1,
                                      "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                      "iscrowd": 0})
        for x1, y1, x2, y2, s, c in d:
            dets.append({"image_id": image_id, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = coco_module.COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[0], evaluator.stats[1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_map_equals_pycocotools(seed):
    images = random_scene(np.random.default_rng(seed), 40)
    ours = evaluate_detections(images, NAMES, "coco")
    map_all, map50 = pycocotools_map(images)
    assert ours.map50 == pytest.approx(map50, abs=1e-3)
    assert ours.map == pytest.approx(map_all, abs=1e-3)
    assert ours.classes[3].targets == 0  # left out of the mean, as in pycocotools


def test_perfect_detections_score_one():
    images = [(d, g) for _, g in random_scene(np.random.default_rng(5), 10)
              for d in [np.column_stack([g[:, 1:], np.ones(len(g)), g[:, 0]])]]
    for method in ("coco", "voc11", "area"):
        result = evaluate_detections(images, NAMES, method)
        assert result.map50 == pytest.approx(1.0) and result.map == pytest.approx(1.0)
        assert all(c.precision == 1.0 and c.recall == 1.0 for c in result.classes if c.targets)


def test_ap_methods_on_a_hand_computed_ranking():
    # ranked hits: TP, FP, TP, FP with 3 ground-truth boxes: recall 1/3, 1/3, 2/3, 2/3; precision 1, .5, 2/3, .5
    tp = np.array([True, False, True, False])
    assert average_precision(tp, 3, "area") == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert average_precision(tp, 3, "voc11") == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)
    # COCO: recalls 0..0.33 -> 1 (34 points), 0.34..0.66 -> 2/3 (33 points), above -> 0
    assert average_precision(tp, 3, "coco") == pytest.approx((34 * 1 + 33 * 2 / 3) / 101)
    assert np.isnan(average_precision(np.zeros(0, bool), 0))
    with pytest.raises(ValueError, match="unknown AP method"):
        average_precision(tp, 3, "best")

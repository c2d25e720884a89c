"""NMS: exact greedy results without a loop over boxes, class-aware, capped, and edge cases."""
import pytest
import torch

from utils.boxes import box_iou
from utils.inference.nms import nms, non_max_suppression


def greedy_reference(boxes, scores, threshold, classes=None):
    """The textbook loop: visit boxes by score, keep one unless a kept box of its class overlaps it."""
    keep = []
    for i in scores.argsort(descending=True, stable=True).tolist():
        kept = torch.tensor(keep, dtype=torch.long)
        overlaps = box_iou(boxes[i:i + 1], boxes[kept])[0] > threshold
        if classes is not None:
            overlaps &= classes[kept] == classes[i]
        if not overlaps.any():
            keep.append(i)
    return keep


def random_boxes(generator, n, spread=100.0):
    xy = torch.rand(n, 2, generator=generator) * spread
    wh = torch.rand(n, 2, generator=generator) * 30 + 1
    scores = torch.rand(n, generator=generator)
    return torch.cat([xy, xy + wh], 1), scores, torch.randint(0, 3, (n,), generator=generator)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [5, 64, 1024])
def test_matches_the_greedy_definition(seed, block):
    g = torch.Generator().manual_seed(seed)
    boxes, scores, classes = random_boxes(g, int(torch.randint(1, 300, (1,), generator=g)))
    assert nms(boxes, scores, 0.4, block=block).tolist() == greedy_reference(boxes, scores, 0.4)
    assert nms(boxes, scores, 0.4, classes, block=block).tolist() == greedy_reference(boxes, scores, 0.4, classes)


def test_suppression_chains_resolve_like_greedy():
    # each box overlaps the next at IoU 0.67 and the one after at 0.43: greedy keeps every other one
    boxes = torch.tensor([[i * 2.0, 0, i * 2.0 + 10, 10] for i in range(9)])
    scores = torch.linspace(1, 0.1, 9)
    assert nms(boxes, scores, 0.5, block=4).tolist() == [0, 2, 4, 6, 8]


def test_edge_cases():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    same = torch.tensor([[0.0, 0, 10, 10]] * 5)
    assert nms(same, torch.tensor([0.1, 0.9, 0.3, 0.9, 0.2]), 0.5).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    boxes, scores, classes = random_boxes(g, 20000, spread=2000)
    kept = nms(boxes, scores, 0.5, classes, max_det=300)
    assert len(kept) == 300
    assert torch.all(scores[kept][:-1] >= scores[kept][1:])
    top = scores.argsort(descending=True)[:600]  # the first 300 survivors all come from the top 600 here
    expected = [top[i].item() for i in greedy_reference(boxes[top], scores[top], 0.5, classes[top])[:300]]
    assert kept.tolist() == expected


def model_output(rows):
    """(1, N, 5 + 3) from rows of (cx, cy, w, h, obj, c0, c1, c2)."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(0)


def test_non_max_suppression_scores_classes_and_modes():
    out = model_output([
        [50, 50, 20, 20, 0.9, 0.1, 0.8, 0.7],   # class 1 (0.72), class 2 (0.63)
        [52, 50, 20, 20, 0.7, 0.9, 0.1, 0.1],   # overlaps the first, but class 0 (0.63)
        [200, 200, 10, 10, 0.05, 0.9, 0.1, 0.1],  # below the threshold after obj x cls
    ])
    dets = non_max_suppression(out, conf_thres=0.1, iou_thres=0.5)[0]
    assert dets[:, 5].tolist() == [1.0, 0.0]
    assert dets[:, 4].tolist() == pytest.approx([0.72, 0.63])
    assert dets[0, :4].tolist() == pytest.approx([40, 40, 60, 60])
    agnostic = non_max_suppression(out, conf_thres=0.1, iou_thres=0.5, agnostic=True)[0]
    assert len(agnostic) == 1
    multi = non_max_suppression(out, conf_thres=0.1, iou_thres=0.5, multi_label=True)[0]
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0, 2.0]
    empty = non_max_suppression(out, conf_thres=0.99)[0]
    assert empty.shape == (0, 6)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("conf_thres", [0.0, 0.05, 0.3])
def test_filtered_detections_are_every_box_scoring_above_the_threshold(multi_label, conf_thres):
    """Objectness x class score > conf_thres, for every box and class, then greedy NMS within each class."""
    g = torch.Generator().manual_seed(7)
    n, classes = 400, 4
    xy, wh = torch.rand(n, 2, generator=g) * 200, torch.rand(n, 2, generator=g) * 40 + 1
    objectness = torch.rand(n, 1, generator=g) ** 3  # most boxes low, as a trained model's
    objectness[:20] = 0.0
    class_scores = torch.rand(n, classes, generator=g)
    out = torch.cat([xy, wh, objectness, class_scores], 1)[None]
    scores = class_scores * objectness
    if multi_label:
        box_index, cls = torch.nonzero(scores > conf_thres, as_tuple=True)
        score = scores[box_index, cls]
    else:
        score, cls = scores.max(1)
        box_index = torch.nonzero(score > conf_thres).squeeze(1)
        score, cls = score[box_index], cls[box_index]
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)[box_index]
    order = greedy_reference(boxes, score, 0.45, cls)
    dets = non_max_suppression(out, conf_thres=conf_thres, iou_thres=0.45, multi_label=multi_label,
                               max_det=10 ** 6)[0]
    assert len(order) > 10
    assert torch.equal(dets[:, 4], score[order])
    assert torch.equal(dets[:, 5], cls[order].float())
    assert torch.allclose(dets[:, :4], boxes[order])

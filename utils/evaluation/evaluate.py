"""Running a model over a dataset and scoring it: what test.py and training's evaluation share."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from terminaltables import AsciiTable
from tqdm import tqdm

from utils.boxes import xywh_to_xyxy
from utils.data.config import DataError, describe_source
from utils.fileio import atomic_write
from utils.evaluation.metrics import DEFAULT_METHOD, EvalResult, evaluate_detections
from utils.inference.nms import non_max_suppression


MAX_DETECTIONS = 300  # kept per image after NMS, as Ultralytics' val keeps; the COCO method scores the top 100
EVAL_CONF_THRES = 0.001  # low, as mAP needs the whole precision-recall curve
EVAL_NMS_THRES = 0.5


@dataclass
class ImageRecord:
    path: str
    height: int
    width: int
    detections: np.ndarray  # (n, 6): x1 y1 x2 y2 score class, original-image pixels
    truth: np.ndarray  # (m, 5): class x1 y1 x2 y2, original-image pixels


@dataclass
class DetectionPass:
    """What :func:`collect_detections` gathered: a record per image read, and the seconds spent in the network
    and in NMS (reading the images and scoring are not counted)."""

    records: list[ImageRecord] = field(default_factory=list)
    network_seconds: float = 0.0
    nms_seconds: float = 0.0

    def speed(self) -> str:
        """The time per image, as test.py reports it."""
        count = max(len(self.records), 1)
        network, nms = 1e3 * self.network_seconds / count, 1e3 * self.nms_seconds / count
        return f"{network:.1f} ms network + {nms:.1f} ms NMS = {network + nms:.1f} ms per image"


def _clock(device: torch.device) -> float:
    """Now, once the device has finished what it was given (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def score(records: list[ImageRecord], names: list[str], method: str = DEFAULT_METHOD) -> EvalResult:
    return evaluate_detections([(r.detections, r.truth) for r in records], names, method)


@torch.no_grad()
def collect_detections(model, loader, device: torch.device, conf_thres: float = EVAL_CONF_THRES,
                       nms_thres: float = EVAL_NMS_THRES, progress: bool = False) -> DetectionPass:
    """Every image's detections (at most MAX_DETECTIONS each) and ground truth, in original-image pixels and the
    list's order whatever order the batches come in, with a progress bar when ``progress``. Unreadable images are
    left out (counted in a line); a set of which none could be read is a :class:`DataError`, not a score of 0."""
    was_training = model.training
    model.eval()
    collected, skipped, positions = DetectionPass(), [], []
    for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False, dynamic_ncols=True):
        skipped += batch.skipped
        if not len(batch):
            continue
        images = batch.images.to(device, non_blocking=True).float() / 255
        height, width = images.shape[-2:]
        start = _clock(device)
        output = model(images).float()
        middle = _clock(device)
        detections = non_max_suppression(output, conf_thres, nms_thres, max_det=MAX_DETECTIONS)
        collected.network_seconds += middle - start
        collected.nms_seconds += _clock(device) - middle
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        for i, (dets, box) in enumerate(zip(detections, batch.letterboxes)):
            truth = batch.targets[batch.targets[:, 0] == i]
            # clipped as the detections are (and as training clips its targets): a box running off the image
            # is scored on the part inside it, which is all a detector can see
            gt_xyxy = box.to_original(xywh_to_xyxy(truth[:, 2:6] * scale), batch.original_hw[i])
            dets = dets.cpu()
            dets[:, :4] = box.to_original(dets[:, :4], batch.original_hw[i])
            height, width = batch.original_hw[i]
            collected.records.append(ImageRecord(batch.paths[i], height, width, dets.numpy(),
                                                 torch.cat([truth[:, 1:2], gt_xyxy], 1).numpy()))
            positions.append(batch.indices[i])
    model.train(was_training)
    collected.records = [collected.records[k] for k in sorted(range(len(positions)), key=positions.__getitem__)]
    if skipped and not collected.records:
        raise DataError(f"{describe_source(loader.dataset.list_path)}: not one of its {len(skipped)} images could be "
                        f"read (e.g. {skipped[0]}), so there is nothing to evaluate")
    if skipped:
        tqdm.write(f"evaluation: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}; their boxes are not "
                   f"in the scores")
    return collected


def format_results(result: EvalResult, conf_thres: float, nms_thres: float, resize: str) -> str:
    rows = [["class", "images", "targets", "P", "R", "AP@0.5", "F1"]]
    for c in result.classes:
        ap = f"{c.ap50:.4f}" if c.targets else "-"
        rows.append([c.name, c.images, c.targets, f"{c.precision:.3f}", f"{c.recall:.3f}", ap, f"{c.f1:.3f}"])
    method = {"coco": "COCO 101-point", "voc11": "VOC 11-point", "area": "all-point area"}[result.method]
    return (AsciiTable(rows).table
            + f"\nmAP@0.5 = {result.map50:.4f}   mAP@0.5:0.95 = {result.map:.4f}"
            + f"\n({method} AP; detections with conf >= {conf_thres} after NMS at IoU {nms_thres}; "
              f"P/R/F1 at IoU 0.5 for conf >= {max(result.report_conf, conf_thres)}; images {resize})")


def format_best_f1(best: tuple[float, float] | None) -> str:
    """The line that reports :func:`utils.evaluation.confusion.best_f1_confidence`."""
    if best is None:
        return "best F1: no detection matched a target, so no confidence threshold to suggest"
    return (f"best F1 {best[1]:.3f} (mean over classes) at confidence {best[0]:.3f}: the detection threshold "
            f"(detect.py --conf_thres) that balances precision and recall")


def write_coco_json(records: list[ImageRecord], names: list[str], detections_path: Path) -> Path:
    """COCO-format detections (image_id, category_id, bbox [x, y, w, h] in original pixels, score) and,
    beside them, the matching ground truth (``*_gt.json``), so pycocotools can score them independently.
    Image ids count from 1 in list order; category ids are class index + 1."""
    detections_path = Path(detections_path)
    truth_path = detections_path.with_name(detections_path.stem + "_gt.json")
    images, annotations, detections = [], [], []
    for image_id, record in enumerate(records, 1):
        images.append({"id": image_id, "file_name": record.path, "width": record.width, "height": record.height})
        for c, x1, y1, x2, y2 in record.truth.tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for x1, y1, x2, y2, score, c in record.detections.tolist():
            detections.append({"image_id": image_id, "category_id": int(c) + 1,
                               "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                               "score": round(score, 6)})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    with atomic_write(truth_path) as f:
        f.write(json.dumps({"images": images, "annotations": annotations, "categories": categories}).encode())
    with atomic_write(detections_path) as f:
        f.write(json.dumps(detections).encode())
    return truth_path

"""Running a model over a dataset and scoring it: what test.py and training's evaluation share."""
from __future__ import annotations

import numpy as np
import torch
from terminaltables import AsciiTable

from utils.boxes import xywh_to_xyxy
from utils.metrics import EvalResult, evaluate_detections
from utils.nms import non_max_suppression


@torch.no_grad()
def collect_detections(model, loader, device: torch.device, conf_thres: float = 0.001, nms_thres: float = 0.5,
                       max_det: int = 300) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image ``(detections (n, 6), ground truth (m, 5))`` in original-image pixels."""
    was_training = model.training
    model.eval()
    records = []
    for batch in loader:
        if not len(batch):
            continue
        images = batch.images.to(device, non_blocking=True).float() / 255
        height, width = images.shape[-2:]
        detections = non_max_suppression(model(images).float(), conf_thres, nms_thres, max_det=max_det)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        for i, (dets, box) in enumerate(zip(detections, batch.letterboxes)):
            truth = batch.targets[batch.targets[:, 0] == i]
            gt_xyxy = box.to_original(xywh_to_xyxy(truth[:, 2:6] * scale))
            dets = dets.cpu()
            dets[:, :4] = box.to_original(dets[:, :4], batch.original_hw[i])
            records.append((dets.numpy(), torch.cat([truth[:, 1:2], gt_xyxy], 1).numpy()))
    model.train(was_training)
    return records


def format_results(result: EvalResult, conf_thres: float, nms_thres: float, resize: str) -> str:
    rows = [["class", "images", "targets", "P", "R", "AP@0.5", "F1"]]
    for c in result.classes:
        ap = f"{c.ap50:.4f}" if c.targets else "-"
        rows.append([c.name, c.images, c.targets, f"{c.precision:.3f}", f"{c.recall:.3f}", ap, f"{c.f1:.3f}"])
    method = {"coco": "COCO 101-point", "voc11": "VOC 11-point", "area": "all-point area"}[result.method]
    return (AsciiTable(rows).table
            + f"\nmAP@0.5 = {result.map50:.4f}   mAP@0.5:0.95 = {result.map:.4f}"
            + f"\n({method} AP; detections with conf >= {conf_thres} after NMS at IoU {nms_thres}; "
              f"P/R/F1 at IoU 0.5 for conf >= {result.report_conf}; images {resize})")

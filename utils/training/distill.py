"""Knowledge distillation from a teacher model (``--teacher_cfg/--teacher_weights``), for fine-tuning a pruned
model toward the model it was pruned from.

The teacher runs in eval mode without gradients on the same (augmented) batch. Per pair of [yolo] layers
(student and teacher must have the same heads: count, classes, anchors and strides), with the teacher's
outputs as soft targets (Darknet's [yolo] outputs: ``YOLOLayer.activate``):

- objectness: the binary KL divergence KL(q_t || q_s) of the teacher's and the student's objectness, on every
  cell and anchor;
- classes: the binary KL divergence of each class score, summed over classes, weighted by the teacher's
  objectness q_t (objectness-scaled distillation: where the teacher sees no object its class scores are noise);
- boxes: the squared difference of the x, y offsets in the cell and of the raw w, h (log-space) outputs, also
  weighted by q_t.

The three are summed over cells, anchors and layers, divided by the batch size (as the YOLO loss is) and
multiplied by ``--distill_weight``. KL rather than BCE toward soft targets, so that the term is exactly 0 when
the student's outputs equal the teacher's (BCE would leave the teacher's entropy), and positive otherwise.
"""
from __future__ import annotations

from pathlib import Path

import torch

from utils.darknet.checkpoint import model_from_file
from utils.darknet.layers import YOLOLayer
from utils.darknet.model import Darknet
from utils.data.anchors import head_strides
from utils.errors import UserError

PROBABILITY_EPS = 1e-7  # keeps the logs finite where a sigmoid saturates in float32


class DistillationError(UserError, ValueError):
    """A teacher that cannot teach this student (other heads), or one that cannot be loaded."""


def binary_kl(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bernoulli(target) || Bernoulli(prediction)) of probabilities; exactly 0 where they are equal."""
    t = target.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    p = prediction.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return t * (t.log() - p.log()) + (1 - t) * ((1 - t).log() - (1 - p).log())


def layer_distillation(yolo: YOLOLayer, student_raw: torch.Tensor, teacher_raw: torch.Tensor) -> torch.Tensor:
    """The summed objectness, class and box terms of one [yolo] layer (see the module docstring)."""
    student = yolo.split(yolo.activate(student_raw.float()))
    teacher = yolo.split(yolo.activate(teacher_raw.float())).detach()
    confidence = teacher[..., 4]
    objectness = binary_kl(confidence, student[..., 4]).sum()
    classes = (binary_kl(teacher[..., 5:], student[..., 5:]).sum(-1) * confidence).sum()
    boxes = (((student[..., :4] - teacher[..., :4]) ** 2).sum(-1) * confidence).sum()
    return objectness + classes + boxes


class Distiller:
    """``distiller(student_heads, images)``: the weighted distillation term of a batch (a scalar tensor)."""

    def __init__(self, teacher: Darknet, student_yolo: list[YOLOLayer], weight: float):
        self.teacher = teacher.eval().requires_grad_(False)
        self.student_yolo = student_yolo
        self.weight = weight

    def __call__(self, student_heads: list[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_heads = self.teacher.forward_heads(images)
        total = student_heads[0].new_zeros((), dtype=torch.float32)
        for yolo, student, teacher in zip(self.student_yolo, student_heads, teacher_heads):
            total = total + layer_distillation(yolo, student, teacher)
        return self.weight * total / images.shape[0]


def _head_description(model: Darknet, strides: list[float] | None, index: int) -> tuple:
    yolo = model.yolo_layers[index]
    return (yolo.num_classes, tuple(map(tuple, yolo.anchors.tolist())), strides[index] if strides else None,
            yolo.new_coords)


def check_same_heads(student: Darknet, teacher: Darknet, teacher_source: str) -> None:
    """Stop unless every [yolo] of the student has its counterpart, in order, in the teacher: the same
    classes, anchors (those of its mask), stride and coordinate kind."""
    ours, theirs = len(student.yolo_layers), len(teacher.yolo_layers)
    if ours != theirs:
        raise DistillationError(f"teacher {teacher_source}: {theirs} [yolo] layers, the student has {ours}; "
                                f"distillation pairs the heads, so both need the same ones")
    student_strides, teacher_strides = head_strides(student.cfg), head_strides(teacher.cfg)
    fields = ("classes", "anchors", "stride", "new_coords")
    for index in range(ours):
        mine = _head_description(student, student_strides, index)
        other = _head_description(teacher, teacher_strides, index)
        for name, a, b in zip(fields, mine, other):
            if a != b:
                raise DistillationError(f"teacher {teacher_source}: [yolo] layer {index + 1} of {ours} has {name} "
                                        f"{b}, the student's has {a}; distillation needs the same heads (same "
                                        f"classes, anchors, strides)")


def load_teacher(weights: str | Path, cfg: str | Path | None, device: torch.device) -> Darknet:
    """The teacher from a .pth (its own cfg unless ``cfg``) or a .weights (needs ``cfg``), on ``device``."""
    if cfg is None and Path(weights).suffix == ".weights":
        raise DistillationError(f"--teacher_weights {weights}: a .weights file needs its cfg (--teacher_cfg)")
    model, _ = model_from_file(weights, cfg)
    return model.to(device)


def build_distiller(student: Darknet, options, device: torch.device) -> Distiller | None:
    """The distiller that ``options`` (--teacher_cfg, --teacher_weights, --distill_weight) ask for, or None."""
    if options.teacher_weights is None:
        if options.teacher_cfg is not None:
            raise DistillationError("--teacher_cfg needs --teacher_weights (the teacher's trained weights)")
        return None
    with torch.random.fork_rng(devices=[]):  # building the teacher draws initial weights: not from the run's stream
        teacher = load_teacher(options.teacher_weights, options.teacher_cfg, device)
    check_same_heads(student, teacher, options.teacher_weights)
    return Distiller(teacher, student.yolo_layers, options.distill_weight)

"""The YOLO loss: Darknet's anchor assignment, its gradients, ignore_thresh, IoU kinds, and that it trains."""
import pytest
import torch

from models import Darknet
from tests.cfgs import conv, head
from tests.conftest import randomize
from utils.training.loss import YOLOLoss

ANCHORS = "4,4, 8,8, 16,16, 32,32"
TWO_HEADS = (conv(8, 3, 2) + head(4, ANCHORS, "2,3", "{extra}") + "\n[route]\nlayers=-3\n\n"
             + head(4, ANCHORS, "0,1", "{extra}"))


def model_for(write_cfg, extra=""):
    return randomize(Darknet(write_cfg(TWO_HEADS.format(extra=extra))), seed=1).train()


def test_a_target_goes_to_its_best_anchor_among_all_layers(write_cfg):
    model = model_for(write_cfg)
    first, second = model.yolo_layers
    # a 15x17 box in a 64x64 input: best anchor 16x16 (index 2, first layer's slot 0), centre in cell (5, 3)
    gt = torch.tensor([[24.0, 41.0, 15.0, 17.0]])
    t, a, gj, gi = YOLOLoss.assign(first, gt, (32, 32), (2.0, 2.0))
    assert (t.tolist(), a.tolist(), gj.tolist(), gi.tolist()) == ([0], [0], [20], [12])
    assert YOLOLoss.assign(second, gt, (32, 32), (2.0, 2.0))[0].numel() == 0


def test_iou_thresh_adds_other_fitting_anchors(write_cfg):
    model = model_for(write_cfg, extra="iou_thresh=0.2")
    gt = torch.tensor([[20.0, 20.0, 12.0, 12.0]])  # best 16x16 (IoU .56); 8x8 fits at .44, 4x4 at .11
    t, a, _, _ = YOLOLoss.assign(model.yolo_layers[1], gt, (32, 32), (2.0, 2.0))
    assert a.tolist() == [1]


def test_mse_box_gradient_is_darknets_delta(write_cfg):
    """Darknet hands scale * (sigmoid(tx) - target) to the x logit and scale * (tw - target) to tw."""
    model = model_for(write_cfg)
    targets = torch.tensor([[0, 1, 24 / 64, 41 / 64, 15 / 64, 17 / 64]])
    heads = [h.detach().requires_grad_(True) for h in model(torch.rand(1, 3, 64, 64))]
    YOLOLoss(model.yolo_layers)(heads, targets, (64, 64)).total.backward()
    raw = heads[0].detach()[0, 0:9, 20, 12]
    grad = heads[0].grad[0, 0:9, 20, 12]
    scale = 2 - (15 * 17) / (64 * 64)
    tx = 24 / 2 - 12
    torch.testing.assert_close(grad[0], scale * (torch.sigmoid(raw[0]) - tx))
    tw = torch.log(torch.tensor(15 / 16))
    torch.testing.assert_close(grad[2], scale * (raw[2] - tw))
    # class 1 positive, others negative: BCE gradient sigmoid(p) - target
    torch.testing.assert_close(grad[5:], torch.sigmoid(raw[5:]) - torch.tensor([0.0, 1, 0, 0]))


def test_ignore_thresh_removes_the_no_object_penalty(write_cfg):
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.4, 0.6, 0.25, 0.3], [1, 2, 0.5, 0.5, 0.5, 0.5]])
    losses = []
    for ignore in (0.0, 1.0):
        model = model_for(write_cfg, extra=f"ignore_thresh={ignore}")
        losses.append(YOLOLoss(model.yolo_layers)(model(x), targets, (64, 64)).obj.item())
    assert losses[0] < losses[1]


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_iou_losses_are_zero_for_a_perfect_box(write_cfg, kind):
    model = model_for(write_cfg, extra=f"iou_loss={kind}\niou_normalizer=0.07")
    heads = [torch.zeros(1, 18, 32, 32), torch.zeros(1, 18, 32, 32)]
    # sigmoid(0) = 0.5, exp(0) = 1: the prediction of slot 0 in cell (3, 4) is the box centred at (9, 7), 16x16
    targets = torch.tensor([[0, 0, 9 / 64, 7 / 64, 16 / 64, 16 / 64]])
    loss = YOLOLoss(model.yolo_layers)(heads, targets, (64, 64))
    assert loss.box.item() == pytest.approx(0.0, abs=1e-5)


def test_loss_decreases_on_a_fixed_batch(write_cfg):
    torch.manual_seed(0)
    model = model_for(write_cfg)
    x = torch.rand(4, 3, 64, 64)
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.2, 0.25], [1, 3, 0.6, 0.5, 0.4, 0.3], [2, 2, 0.5, 0.5, 0.1, 0.1],
                            [3, 1, 0.7, 0.2, 0.3, 0.2]])
    loss_fn = YOLOLoss(model.yolo_layers)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(40):
        loss = loss_fn(model(x), targets, (64, 64))
        first = first if first is not None else loss.as_dict()
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    last = loss.as_dict()
    assert last["total"] < 0.3 * first["total"]
    assert last["box"] < first["box"] and last["cls"] < first["cls"] and last["obj"] < first["obj"]


def test_images_without_targets_only_teach_no_object(write_cfg):
    model = model_for(write_cfg)
    loss = YOLOLoss(model.yolo_layers)(model(torch.rand(2, 3, 64, 64)), torch.zeros(0, 6), (64, 64))
    assert loss.box.item() == 0 and loss.cls.item() == 0 and loss.obj.item() > 0

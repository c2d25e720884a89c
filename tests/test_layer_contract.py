"""The layer registry and the cfg as data: one declaration per type, typed values, edits that keep the user's file."""
import math
import re
import warnings

import pytest
import torch

from models import Darknet
from tests.conftest import REPO, randomize
from utils.darknet.cfg import CfgError, CfgWarning, parse_cfg, read_cfg
from utils.darknet.cfg_edit import edited, renumbered, with_classes
from utils.conversion.native import darknet_native_cfg
from utils.darknet.checkpoint import CheckpointError, model_from_file, save_checkpoint
from utils.darknet.layers import DarknetLayer
from utils.darknet.registry import LAYER_TYPES, register
from utils.darknet.summary import summarize
from utils.training.loss import YOLOLoss, shape_iou

CONV = "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
HEAD = ("\n[convolutional]\nfilters=14\nsize=1\nactivation=linear\n"
        "\n[yolo]\nmask=0,1\nanchors=4,4,8,8\nclasses=2\nnum=2\n")


def error_of(text: str) -> str:
    with pytest.raises(CfgError) as info:
        Darknet(parse_cfg(text, "user.cfg"))
    return str(info.value)


def test_the_registry_refuses_a_name_or_alias_that_is_taken():
    with pytest.raises(ValueError, match=r"\[route\] is already registered by utils.darknet.layers.route.Route"):
        register("route")(type("Another", (DarknetLayer,), {}))
    with pytest.raises(ValueError, match=r"\[conv\] is already registered"):
        register("brand_new", "conv")(type("Another", (DarknetLayer,), {}))
    assert "brand_new" not in LAYER_TYPES


def test_aliases_resolve_through_the_registry():
    cfg = parse_cfg("[network]\nwidth=32\nheight=32\n[conv]\nfilters=4\n[max]\nsize=2\nstride=2\n[avg]\n", "a.cfg")
    assert [s.name for s in cfg.sections] == ["net", "convolutional", "maxpool", "avgpool"]


@pytest.mark.parametrize("classes,expected", [(80, 5.571), (1, 5.448)])
def test_summary_bflops_equal_darknets_printed_total(classes, expected):
    """Darknet prints 'Total BFLOPS 5.571' for yolov3-tiny at 416 (5.448 for one class): convs, maxpools."""
    model = Darknet(with_classes(read_cfg(REPO / "cfg" / "yolov3-tiny.cfg"), classes)).eval()
    rows = summarize(model, (416, 416))
    assert round(sum(r.flops for r in rows) / 1e9, 3) == expected
    maxpool = next(r for r in rows if r.kind == "maxpool")
    assert maxpool.flops == 2 * 2 * 16 * 208 * 208


def test_shortcut_and_block_adds_count_as_darknet_counts_them():
    text = f"[net]\nwidth=32\nheight=32\n{CONV}\n{CONV}\n[shortcut]\nfrom=-2\nactivation=linear\n"
    rows = summarize(Darknet(parse_cfg(text)).eval(), (32, 32))
    assert rows[2].flops == 8 * 32 * 32  # out_c * out_h * out_w per added layer
    res2net = f"[net]\nwidth=32\nheight=32\n{CONV.replace('filters=8', 'filters=16')}\n[res2net]\nplanes=8\n" \
              f"base_width=32\n"
    block = Darknet(parse_cfg(res2net)).eval()
    expanded = Darknet(darknet_native_cfg(parse_cfg(res2net))).eval()  # plain convs, shortcuts and routes
    assert sum(r.flops for r in summarize(block, (32, 32))) == sum(r.flops for r in summarize(expanded, (32, 32)))


@pytest.mark.parametrize("value", ["1_6", "0x10", "\u0661\u0666", "16.0", "1e1"])
def test_integers_take_darknets_plain_syntax_only(value):
    message = error_of(f"[net]\nwidth=32\nheight=32\n{CONV.replace('filters=8', f'filters={value}')}")
    assert "user.cfg:6: layer 0 [convolutional]: key 'filters' expects an integer" in message


@pytest.mark.parametrize("text,expects", [
    ("filters=99999", "filters must be at most 16384, got 99999"),
    ("filters=9223372036854775808", "filters must be at most 16384"),
    ("size=100", "size must be at most 32, got 100"),
    ("stride=9223372036854775808", "stride must be at most 32"),
])
def test_values_have_stated_bounds(text, expects):
    key = text.split("=")[0]
    assert expects in error_of(f"[net]\nwidth=32\nheight=32\n" + re.sub(rf"^{key}=.*$", text, CONV, flags=re.M))


def test_a_layer_too_large_to_allocate_is_refused_before_allocating():
    big = CONV.replace("filters=8", "filters=16384").replace("size=3", "size=32")
    message = error_of(f"[net]\nwidth=32\nheight=32\n{big}\n{big}")
    assert "layer 1 [convolutional]: this layer would hold 274,877,906,944 weights; the limit is" in message


@pytest.mark.parametrize("yolo,expects", [
    ("anchors=4,4,nan,8", "expects a comma-separated list of finite numbers"),
    ("anchors=4,4,-8,8", "anchors must be at least 0 (each value)"),
    ("anchors=4,4,0,8", "anchor sizes must be positive"),
    ("scale_x_y=nan", "expects a finite number"),
    ("mask=1,1", "mask [1, 1] lists an anchor twice"),
    ("mask=0,,2", "key 'mask' expects a comma-separated list of integers, got '0,,2'"),  # Darknet: 0,0,2
    ("anchors=4,4,,8,16,16", "key 'anchors' expects a comma-separated list of finite numbers"),
])
def test_yolo_values_are_checked_where_they_are_read(yolo, expects):
    key = yolo.split("=")[0]
    head = re.sub(rf"^{key}=.*$", yolo, HEAD, flags=re.M) if f"\n{key}=" in HEAD else HEAD + yolo + "\n"
    assert expects in error_of(f"[net]\nwidth=32\nheight=32\n{CONV}{head}")


def test_a_trailing_comma_after_anchors_is_dropped_as_darknet_reads_no_further():
    text = f"[net]\nwidth=32\nheight=32\n{CONV}{HEAD}".replace("anchors=4,4,8,8", "anchors=4,4,8,8,")
    model = Darknet(parse_cfg(text, "user.cfg"))
    assert model.yolo_layers[0].all_anchors.tolist() == [[4.0, 4.0], [8.0, 8.0]]


def test_net_values_are_finite_and_policies_are_the_schedules():
    assert "[net]: key 'hue' expects a finite number, got 'inf'" in error_of("[net]\nwidth=32\nheight=32\nhue=inf\n"
                                                                          + CONV)
    message = error_of("[net]\nwidth=32\nheight=32\npolicy=sgdr\n" + CONV)
    assert "user.cfg:4: [net]: key 'policy' must be one of constant, steps, poly, cosine; got 'sgdr'" in message


def test_darknet_options_not_applied_here_are_reported_apart_from_typos():
    text = f"[net]\nwidth=32\nheight=32\nbatch=64\n{CONV}mystery=1\n{HEAD}max_delta=5\nnms_kind=greedynms\n" \
           f"ignore_thresh=0.7\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Darknet(parse_cfg(text, "user.cfg"))
    [warning] = [w for w in caught if issubclass(w.category, CfgWarning)]
    message = str(warning.message)
    assert "does not know were ignored (a typo?): layer 0 [convolutional]: mystery (line 12)" in message
    assert "[net]: batch=64 (line 4)" in message
    assert "layer 2 [yolo]: max_delta=5 (line 24), nms_kind=greedynms (line 25)" in message
    assert "ignore_thresh" not in message  # implemented: the loss uses it


def test_with_classes_keeps_every_other_byte_and_the_users_lines():
    path = REPO / "cfg" / "yolov3-tiny.cfg"
    original = read_cfg(path)
    adapted = with_classes(original, 3)
    before, after = original.text.splitlines(), adapted.text.splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 4
    assert {b for _, b in changed} == {"classes=3", "filters=24"}
    assert adapted.source == str(path)
    broken = edited(adapted, {(1, "size"): 99})
    with pytest.raises(CfgError, match=rf"{re.escape(str(path))}:{original.sections[1].options['size'][1]}: "
                                       r"layer 0 \[convolutional\]: size must be at most 32"):
        Darknet(broken)


def test_class_adaptation_errors_name_the_users_file_and_line():
    cfg = parse_cfg(f"[net]\nwidth=32\nheight=32\n{CONV}\n[yolo]\nmask=0,0\nanchors=4,4\n", "user.cfg")
    with pytest.raises(CfgError, match=r"user.cfg:13: layer 1 \[yolo\]: mask \[0, 0\] lists an anchor twice"):
        with_classes(cfg, 3)
    after_route = parse_cfg(f"[net]\nwidth=32\nheight=32\n{CONV}\n[route]\nlayers=-1\n\n[yolo]\nanchors=1,1\n",
                            "user.cfg")
    with pytest.raises(CfgError, match=r"user.cfg:15: layer 2 \[yolo\]: the layer before this \[yolo\] is \[route\]"):
        with_classes(after_route, 3)


def test_renumbering_keeps_relative_references_relative():
    cfg = parse_cfg("[net]\nwidth=32\nheight=32\n" + CONV * 4 + "[route]\nlayers=-1,1\n")
    route = cfg.layers[4]
    moved = renumbered(route, 4, 6, lambda old: old + 2)
    assert moved.options["layers"][0] == "-1,3" and moved.line == route.line


def test_a_checkpoints_cfg_errors_name_the_checkpoint(tmp_path):
    good = Darknet(parse_cfg(f"[net]\nwidth=32\nheight=32\n{CONV}"))
    save_checkpoint(tmp_path / "m.pth", {"model": good.state_dict(), "cfg_text": good.cfg_text.replace("8", "x")})
    with pytest.raises(CfgError, match=re.escape(f"{tmp_path / 'm.pth'} (its cfg):6: layer 0 [convolutional]")):
        model_from_file(tmp_path / "m.pth")
    wider = Darknet(parse_cfg(f"[net]\nwidth=32\nheight=32\n{CONV.replace('filters=8', 'filters=6')}"))
    save_checkpoint(tmp_path / "w.pth", {"model": wider.state_dict(), "cfg_text": good.cfg_text})
    with pytest.raises(CheckpointError, match=r"tensor 'layers.0.conv.weight' has shape \(6, 3, 3, 3\), but .*"
                                              r"layer 0 \[convolutional\] needs \(8, 3, 3, 3\)"):
        model_from_file(tmp_path / "w.pth")


def test_a_cfg_without_yolo_layers_is_a_backbone():
    model = Darknet(parse_cfg(f"[net]\nwidth=32\nheight=32\n{CONV}\n[maxpool]\nsize=2\nstride=2\n")).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 8, 16, 16)


def test_decoding_is_one_function_and_caps_exp():
    model = Darknet(parse_cfg(f"[net]\nwidth=32\nheight=32\n{CONV}{HEAD}")).eval()
    yolo = model.yolo_layers[0]
    raw = torch.zeros(1, 14, 2, 2)
    raw[0, 2] = 200.0  # tw of anchor 0: exp(200) is inf in float32
    boxes = model.decode([raw], (32, 32))
    assert torch.isfinite(boxes).all() and boxes[0, 0, 2] == pytest.approx(4 * math.exp(10), rel=1e-5)
    p = yolo.split(raw)
    torch.testing.assert_close(boxes[..., :4].view(1, 2, 2, 2, 4), yolo.boxes(p, (16.0, 16.0)))


def test_focal_loss_hands_darknets_delta_to_every_class():
    """delta_n = (onehot_n - p_n) * 0.5 * g, g = -(1 - pt)(2 pt ln pt + pt - 1), pt the true class's p."""
    text = f"[net]\nwidth=32\nheight=32\n{CONV}{HEAD}focal_loss=1\n"
    model = randomize(Darknet(parse_cfg(text)), seed=2).train()
    heads = [h.detach().requires_grad_(True) for h in model(torch.rand(1, 3, 32, 32))]
    targets = torch.tensor([[0, 1, 0.3, 0.3, 0.2, 0.2]])  # best anchor 8x8 (slot 1), cell (9, 9)
    YOLOLoss(model.yolo_layers)(heads, targets, (32, 32)).cls.backward()
    logits = heads[0].detach()[0, 7 + 5:7 + 7, 9, 9]
    p = torch.sigmoid(logits)
    pt = p[1] + 1e-15
    g = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
    torch.testing.assert_close(-heads[0].grad[0, 12:14, 9, 9], (torch.tensor([0.0, 1.0]) - p) * 0.5 * g)


def test_iou_thresh_kind_picks_the_fit_measure():
    truth, anchor = torch.tensor([[12.0, 6.0]]), torch.tensor([[8.0, 8.0]])
    assert shape_iou(truth, anchor).item() == pytest.approx(48 / 88)
    assert shape_iou(truth, anchor, "giou").item() == pytest.approx(48 / 88 - 8 / 96)
    assert shape_iou(truth, anchor, "diou").item() == pytest.approx(48 / 88)  # one centre: no distance term
    v = 4 / math.pi ** 2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    iou = 48 / 88
    assert shape_iou(truth, anchor, "ciou").item() == pytest.approx(iou - v * v / (1 - iou + v))


def test_edits_store_values_as_parsing_does_and_keep_windows_line_endings():
    cfg = parse_cfg(f"[net]\r\nwidth=32\r\nheight=32\r\n{CONV.replace(chr(10), chr(13) + chr(10))}{HEAD}", "w.cfg")
    changed = edited(cfg, {(3, "anchors"): "3,3, 6,6"})
    assert changed.sections[3].options["anchors"][0] == "3,3,6,6"
    assert "anchors=3,3, 6,6\r\n" in changed.text and changed.text.count("\r\n") == len(changed.text.splitlines())
    assert Darknet(changed).yolo_layers[0].anchors.tolist() == [[3.0, 3.0], [6.0, 6.0]]

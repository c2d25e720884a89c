"""The layers and keys the ImageNet backbones need: [scale_channels], [activation], stopbackward, FrozenBN,
IBN-a, the FPN cfg's strides, pruning on the new cfgs, plain-Darknet conversion, and the generated cfgs."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from models import Darknet
from scripts.make_backbone_cfgs import main as make_cfgs
from tests import cfgs
from tests.cfgs import HEAD
from tests.conftest import REPO, randomize
from utils.conversion.native import darknet_native_cfg
from utils.darknet.cfg import CfgError, parse_cfg, read_cfg
from utils.darknet.checkpoint import load_model_state
from utils.darknet.layers import NotPlainDarknet
from utils.darknet.layers.norm import FrozenBatchNorm2d, InstanceBatchNorm
from utils.darknet.summary import summarize
from utils.pruning import ChannelGraph, compact_model, masked_model, remove_units, removable_units
from utils.data.synthetic import write_dataset
from utils.training.optim import build_optimizer, sparsity_bns



def conv(f, k=3, s=1, a="relu", extra=""):
    """A BN conv with ReLU, ResNet's activation."""
    return cfgs.conv(f, k, s, a, extra)


SE = conv(8, s=2) + conv(8, a="linear") + """
[avgpool]

[convolutional]
filters=2
size=1
activation=relu

[convolutional]
filters=8
size=1
activation=logistic

[scale_channels]
from=-4
activation={act}
"""


def test_scale_channels_multiplies_the_from_layer_by_the_previous_one(write_cfg):
    model = randomize(Darknet(write_cfg(SE.format(act="relu"))), seed=1).eval()
    x = torch.rand(2, 3, 16, 12)
    with torch.no_grad():
        features = model.layers[1](model.layers[0](x))
        scale = model.layers[4](model.layers[3](model.layers[2](features)))
        out = model(x)
    assert scale.shape == (2, 8, 1, 1)
    torch.testing.assert_close(out, F.relu(features * scale))
    rows = summarize(model, (16, 12))
    assert rows[5].output_shape == (8, 8, 6) and rows[5].flops == 0  # Darknet counts no FLOPs for it


def test_scale_channels_by_a_map_and_its_errors(write_cfg):
    spatial = conv(8) + conv(1, k=1, a="logistic") + "[scale_channels]\nfrom=-2\nscale_wh=1\n"
    model = randomize(Darknet(write_cfg(spatial)), seed=2).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        features = model.layers[0](x)
        torch.testing.assert_close(model(x), features * model.layers[1](features))
    with pytest.raises(CfgError, match=r"layer 2 \[scale_channels\]: the layer before \(the scale\) has 1 channels; "
                                       r"scaling layer 0 needs 8 channels"):
        Darknet(write_cfg(conv(8) + conv(1, k=1) + "[scale_channels]\nfrom=-2\n"))
    with pytest.raises(RuntimeError, match=r"scale_channels needs 1 x 1"):
        Darknet(write_cfg(conv(8) + conv(8, k=1) + "[scale_channels]\nfrom=-2\n"))(x)


def test_activation_layer_and_a_1x1_stride_2_max_pool(write_cfg):
    text = conv(4, a="linear") + "[activation]\nactivation=relu\n\n[route]\nlayers=-2\n\n" \
        "[maxpool]\nsize=1\nstride=2\n\n[activation]\n"
    model = randomize(Darknet(write_cfg(text)), seed=3).eval()
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        first = model.layers[0](x)
        out = model(x)
    # the [activation] did not change its input in place: the route still reads the raw conv output
    torch.testing.assert_close(out, first[..., ::2, ::2])
    assert out.shape[-2:] == ((13 - 1) // 2 + 1, (10 - 1) // 2 + 1)
    assert (first < 0).any()


def stopbackward_cfg(write_cfg):
    # layers 0-2; layer 1 stops the backward pass; layer 3 routes layer 0 past it
    text = conv(4) + conv(4, extra="stopbackward=1") + conv(4) + "[route]\nlayers=-1,0\n\n" + conv(8) + HEAD
    return Darknet(write_cfg(text))


def test_stopbackward_stops_gradients_exactly_at_its_layer(write_cfg):
    model = stopbackward_cfg(write_cfg).train()
    model.forward_heads(torch.rand(2, 3, 16, 16))[0].square().mean().backward()
    for index, layer in enumerate(model.layers):
        grads = [p.grad for p in layer.parameters()]
        if index <= 1:
            assert all(g is None for g in grads) and not any(p.requires_grad for p in layer.parameters())
        elif grads:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), f"layer {index}"
    assert not model.layers[0].training and model.layers[1].training  # as Darknet: train=0 before the layer
    assert all(p.requires_grad for p in model.layers[2].parameters())
    optimizer = build_optimizer(model, "sgd", 0.1, 0.9, 0.1)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for layer in list(model.layers)[2:] for p in layer.parameters())
    assert all(bn.weight.requires_grad for bn in sparsity_bns(model))


def frozen_bn_steps(model: Darknet, steps: int = 2) -> None:
    optimizer = build_optimizer(model, "sgd", 0.1, 0.9, 0.1)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model.forward_heads(torch.rand(2, 3, 16, 16) * 3)[0].square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("how", ["cfg key", "freeze_batchnorm"])
def test_frozen_bn_keeps_its_statistics_and_affine_values_through_training(write_cfg, how):
    key = "normalize=frozen" if how == "cfg key" else ""
    model = randomize(Darknet(write_cfg(conv(8, extra=key) + conv(8) + HEAD)), seed=4)
    if how == "freeze_batchnorm":
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.freeze_batchnorm()
        assert model.state_dict().keys() == before.keys()  # checkpoints load into the plain cfg
    frozen = model.layers[0].bn
    assert isinstance(frozen, FrozenBatchNorm2d)
    saved = {k: v.clone() for k, v in frozen.state_dict().items()}
    conv_weight = model.layers[0].conv.weight.clone()
    frozen_bn_steps(model)
    for name, value in frozen.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)
    assert not torch.equal(model.layers[0].conv.weight, conv_weight)  # the conv itself trains
    if how == "cfg key":
        assert not torch.equal(model.layers[1].bn.running_mean, torch.zeros(8))  # the other BN does not freeze
    assert all(not isinstance(bn, FrozenBatchNorm2d) for bn in sparsity_bns(model))


def test_frozen_bn_reads_the_ordinary_bn_stream_and_computes_bn_inference(write_cfg, tmp_path):
    plain = randomize(Darknet(write_cfg(conv(8) + conv(8) + HEAD, "plain.cfg")), seed=5).eval()
    plain.save_darknet_weights(tmp_path / "plain.weights")
    frozen = Darknet(write_cfg(conv(8, extra="normalize=frozen") + conv(8) + HEAD, "frozen.cfg"))
    frozen.load_darknet_weights(tmp_path / "plain.weights")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(frozen.eval()(x), plain(x))
        torch.testing.assert_close(frozen.layers[0](x), plain.layers[0](x))  # in training mode too
        frozen.fuse()
        torch.testing.assert_close(frozen(x), plain(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(CfgError, match="normalize= chooses the norm of a batch_normalize=1 conv"):
        Darknet(write_cfg("[convolutional]\nfilters=4\nnormalize=frozen\n"))
    with pytest.raises(CfgError, match=r"model.cfg:\d+: layer 0 \[convolutional\]: normalize=ibn splits the filters "
                                       r"between InstanceNorm and BN, so it needs at least 2; got filters=1"):
        Darknet(write_cfg("[convolutional]\nbatch_normalize=1\nfilters=1\nnormalize=ibn\n"))


def test_ibn_norm_and_its_weights_order(write_cfg, tmp_path):
    model = randomize(Darknet(write_cfg(conv(7, k=1, extra="normalize=ibn") + HEAD)), seed=6).eval()
    layer = model.layers[0]
    ibn = layer.bn
    assert isinstance(ibn, InstanceBatchNorm) and ibn.half == 3 and ibn.IN.num_features == 3
    with torch.no_grad():
        ibn.IN.weight.uniform_(0.5, 1.5)
        ibn.IN.bias.normal_()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        z = layer.conv(x)
        expected = F.relu(torch.cat([F.instance_norm(z[:, :3], weight=ibn.IN.weight, bias=ibn.IN.bias),
                                     F.batch_norm(z[:, 3:], ibn.BN.running_mean, ibn.BN.running_var,
                                                  ibn.BN.weight, ibn.BN.bias)], 1))
        torch.testing.assert_close(layer(x), expected)
    model.save_darknet_weights(tmp_path / "ibn.weights")
    floats = torch.from_numpy(__import__("numpy").fromfile(tmp_path / "ibn.weights", "<f4", offset=20))
    order = [ibn.IN.bias, ibn.IN.weight, ibn.BN.bias, ibn.BN.weight, ibn.BN.running_mean, ibn.BN.running_var,
             layer.conv.weight]
    torch.testing.assert_close(floats[:sum(t.numel() for t in order)], torch.cat([t.flatten() for t in order]))
    model.fuse()
    assert model.layers[0].bn is ibn  # InstanceNorm cannot fold into the conv


@pytest.mark.parametrize("cfg,message", [
    ("resnet50-ibn-a-yolov3-tiny", r"layer 2 \[convolutional\]: normalize=ibn \(IBN-a\) needs InstanceNorm"),
    ("resnet50-dcn-yolov3", r"layer 17 \[convolutional\]: deform=1: Darknet has no deformable convolution"),
])
def test_darknet_native_refuses_ibn_and_deformable_convs(cfg, message):
    with pytest.raises(NotPlainDarknet, match=message):
        darknet_native_cfg(read_cfg(REPO / "cfg" / f"{cfg}.cfg"))


def test_darknet_native_names_both_widths_of_a_pruned_res2net_block():
    text = (REPO / "cfg" / "res2net-yolov3-tiny.cfg").read_text()
    pruned = text.replace("scale=4\nbase_width=26\n", "scale=4\nbase_width=26\nbranch_filters=6,6,4\n", 1)
    with pytest.raises(NotPlainDarknet, match=r"pruned\.cfg:39: layer 2 \[res2net\]: split widths \[6, 6, 6, 6\] and "
                                              r"branch filters \[6, 6, 4\] \(a pruned block\) are not all one width"):
        darknet_native_cfg(parse_cfg(pruned, "pruned.cfg"))


@pytest.mark.parametrize("cfg", ["resnet18-yolov3", "resnet50-yolov3", "resnext50-32x4d-yolov3", "se-resnet50-yolov3",
                                 "resnet50-fpn-yolov3", "resnet50-yolov3-tiny"])
def test_darknet_native_leaves_plain_darknet_cfgs_untouched(cfg):
    source = read_cfg(REPO / "cfg" / f"{cfg}.cfg")
    assert darknet_native_cfg(source) is source
    names = {section.name for section in source.layers}
    assert names <= {"convolutional", "maxpool", "route", "shortcut", "upsample", "yolo", "avgpool", "scale_channels",
                     "activation"}


def test_res2net_with_a_relu_residual_expands_to_the_same_network(write_cfg, tmp_path):
    text = conv(16, s=2) + "[res2net]\nplanes=8\nfilters=16\nbase_width=32\nactivation=relu\n" \
                           "residual_activation=relu\n\n" + HEAD
    model = randomize(Darknet(write_cfg(text)), seed=7, gain=0.9).eval()
    model.save_darknet_weights(tmp_path / "m.weights")
    native = Darknet(darknet_native_cfg(model.cfg)).eval()
    native.load_darknet_weights(tmp_path / "m.weights")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(native(x), model(x))
        assert (model.layers[1](model.layers[0](x)) >= 0).all()


def test_fpn_heads_have_strides_8_to_128():
    model = Darknet(REPO / "cfg" / "resnet50-fpn-yolov3-tiny.cfg").train()
    for size in (256, 512):
        heads = model(torch.rand(1, 3, size, size))
        assert [size // h.shape[-1] for h in heads] == [8, 16, 32, 64, 128]
    assert len(model.yolo_layers) == 5 and all(yolo.num_anchors == 3 for yolo in model.yolo_layers)
    sizes = [float(yolo.anchors.prod(1).sqrt().mean()) for yolo in model.yolo_layers]
    assert sizes == sorted(sizes) and round(sizes[0]) == 32 and round(sizes[-1]) == 512


@pytest.mark.parametrize("cfg", ["resnet18-yolov3-tiny", "resnet50-yolov3-tiny", "se-resnet50-yolov3-tiny",
                                 "resnet50-fpn-yolov3-tiny", "res2net50-yolov3-tiny", "resnet50-ibn-a-yolov3-tiny",
                                 "resnet50-dcn-yolov3-tiny"])
def test_pruned_backbones_compact_equals_masked(cfg, tmp_path):
    model = randomize(Darknet(REPO / "cfg" / f"{cfg}.cfg"), seed=4, gain=0.9).eval()
    masked, graph, selection = masked_model(model, 0.5, layer_keep=0.01)
    compact = compact_model(masked, graph, selection)
    removed = 1 - sum(p.numel() for p in compact.parameters()) / sum(p.numel() for p in model.parameters())
    assert removed > 0.2
    x = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # float32 rounding of differently shaped convs, on outputs up to ~130 px
        torch.testing.assert_close(compact(x), masked(x), rtol=1e-5, atol=1e-4)
    compact.save_darknet_weights(tmp_path / "pruned.weights")
    again = Darknet(compact.cfg).eval()
    again.load_darknet_weights(tmp_path / "pruned.weights")
    with torch.no_grad():
        torch.testing.assert_close(again(x), compact(x))


def test_pruning_ties_se_scales_and_fpn_sums():
    se = Darknet(REPO / "cfg" / "se-resnet50-yolov3-tiny.cfg")
    graph = ChannelGraph(se)
    scale_index = next(i for i, b in enumerate(se.blocks) if b.name == "scale_channels")
    outs = graph.layer_outputs
    # channel c of conv3 goes with channel c of the excitation: the (bias-only) excitation fixes both
    assert all(graph.atoms.find(a) == graph.atoms.find(b) for a, b in zip(outs[scale_index - 4], outs[scale_index - 1]))
    assert all(graph.atoms.is_fixed(a) for a in outs[scale_index])
    fpn = Darknet(REPO / "cfg" / "resnet50-fpn-yolov3-tiny.cfg")
    graph = ChannelGraph(fpn)
    sums = [i for i, b in enumerate(fpn.blocks) if b.name == "shortcut" and fpn.blocks[i - 3].name == "upsample"]
    assert len(sums) == 2  # the top-down additions into P4 and P3
    for i in sums:
        upsampled, lateral = graph.layer_outputs[i - 3], graph.layer_outputs[i - 1]
        assert all(graph.atoms.find(a) == graph.atoms.find(b) for a, b in zip(upsampled, lateral))


def test_layer_pruning_removes_resnet_units(tmp_path):
    for cfg in ("resnet50-yolov3-tiny", "se-resnet50-yolov3-tiny", "res2net50-yolov3-tiny"):
        model = randomize(Darknet(REPO / "cfg" / f"{cfg}.cfg"), seed=8).eval()
        units = removable_units(model)
        assert len(units) == 2, cfg  # the second block of stages 2 and 3
        thinner, removed = remove_units(model, 1)
        assert len(thinner.layers) == len(model.layers) - len(removed[0].layers)
        with torch.no_grad():
            assert thinner(torch.rand(1, 3, 64, 64)).shape[1] == model(torch.rand(1, 3, 64, 64)).shape[1]


def test_generated_cfgs_are_up_to_date(tmp_path):
    assert make_cfgs(["--check"]) == 0


@pytest.mark.e2e
def test_train_freeze_bn_keeps_every_bn_and_its_checkpoint_loads_into_the_cfg(tmp_path):
    data = write_dataset(tmp_path / "set", train=8, valid=2, size=64, seed=1)
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n\n" + conv(8, s=2) + conv(8, s=2) + HEAD)
    start = randomize(Darknet(cfg), seed=9)
    start.save_darknet_weights(tmp_path / "start.weights")
    command = [sys.executable, "train.py", "--model_def", str(cfg), "--data_config", str(data), "--img_size", "64",
               "--batch_size", "4", "--n_cpu", "0", "--epochs", "1", "--optimizer", "adam", "--output",
               str(tmp_path / "run"), "--pretrained_weights", str(tmp_path / "start.weights"), "--freeze_bn"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    trained = torch.load(tmp_path / "run" / "last.pth", weights_only=True)["model"]
    initial = start.state_dict()
    for index in (0, 1):
        for name in ("weight", "bias", "running_mean", "running_var"):
            key = f"layers.{index}.bn.{name}"
            torch.testing.assert_close(trained[key], initial[key], rtol=0, atol=0)
        assert not torch.equal(trained[f"layers.{index}.conv.weight"], initial[f"layers.{index}.conv.weight"])
    model = Darknet(tmp_path / "run" / "model.cfg")
    load_model_state(model, trained, tmp_path / "run" / "last.pth")  # the frozen run's state fits the cfg as written

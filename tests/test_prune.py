"""Pruning: prunable channels and ties derived from the graph; masked == compact; pruned files round-trip."""
import pytest
import torch

from models import Darknet
from tests.cfgs import HEAD, NET, conv
from tests.conftest import REPO, randomize
from utils.darknet.checkpoint import save_model
from utils.pruning import ChannelGraph, PruneError, compact_model, masked_model, select
from utils.pruning.select import smallest_percent
from utils.pruning.report import latencies_ms


def tied(graph, a, b):
    return all(graph.atoms.find(x) == graph.atoms.find(y) for x, y in zip(a, b))


def test_shortcut_chains_tie_their_convs(write_cfg):
    text = conv(8, 3, 2) + (conv(4, 1, 1) + conv(8, 3, 1)
                                         + "[shortcut]\nfrom=-3\nactivation=linear\n\n") * 2 + HEAD
    model = Darknet(write_cfg(text))
    graph = ChannelGraph(model)
    outs = graph.layer_outputs
    assert tied(graph, outs[0], outs[2]) and tied(graph, outs[0], outs[5]) and tied(graph, outs[3], outs[6])
    assert not tied(graph, outs[0], outs[1])  # the 1x1 bottleneck is free
    head = graph.convs[-1]
    assert not head.prunable and all(graph.atoms.is_fixed(a) for a in head.outputs)


def test_route_groups_fix_their_source_and_spp_routes_concatenate(write_cfg):
    text = (conv(8, 3, 1) + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n" + conv(6, 3, 1)
            + "[maxpool]\nsize=5\nstride=1\n\n[route]\nlayers=-1,-2\n\n" + HEAD)
    graph = ChannelGraph(Darknet(write_cfg(text)))
    outs = graph.layer_outputs
    assert all(graph.atoms.is_fixed(a) for a in outs[0])  # halves must stay equal for Darknet
    assert not any(graph.atoms.is_fixed(a) for a in outs[2])
    assert outs[4] == outs[3] + outs[2] and outs[3] == outs[2]  # maxpool passes channels through


def test_res2net_ties_branches_and_the_residual(write_cfg):
    text = conv(16, 3, 1) + "[res2net]\nplanes=8\nbase_width=32\n\n" + HEAD
    model = Darknet(write_cfg(text))
    graph = ChannelGraph(model)
    block = model.layers[1]
    records = {id(r.conv): r for r in graph.convs}
    widened = records[id(block.split.conv1)].outputs
    for i in range(1, 3):  # branch i-1's output is added to group i
        group = widened[4 * i:4 * (i + 1)]
        assert tied(graph, records[id(block.split.convs[i - 1])].outputs, group)
    assert tied(graph, records[id(block.conv3)].outputs, graph.layer_outputs[0])  # residual
    assert not tied(graph, records[id(block.split.convs[2])].outputs, widened[12:])


@pytest.mark.parametrize("cfg", ["yolov3-tiny", "yolov3-spp", "yolov4-tiny", "res2net-yolov3-tiny",
                                 "res2net-triangle-yolov3-tiny"])
def test_compact_model_equals_masked_model_and_round_trips(cfg, tmp_path):
    model = randomize(Darknet(REPO / "cfg" / f"{cfg}.cfg"), seed=4, gain=0.9).eval()
    masked, graph, selection = masked_model(model, 0.5, layer_keep=0.01)
    compact = compact_model(masked, graph, selection)
    (tmp_path / "pruned.cfg").write_text(compact.cfg_text)
    removed = 1 - sum(p.numel() for p in compact.parameters()) / sum(p.numel() for p in model.parameters())
    assert removed > 0.3
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        expected, got = masked(x), compact(x)
    assert (got - expected).abs().max().item() <= 1e-4
    compact.save_darknet_weights(tmp_path / "pruned.weights")
    again = Darknet(tmp_path / "pruned.cfg").eval()
    again.load_darknet_weights(tmp_path / "pruned.weights")
    again.save_darknet_weights(tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == (tmp_path / "pruned.weights").read_bytes()
    with torch.no_grad():
        torch.testing.assert_close(again(x), got)


def test_channel_multiple_rounds_every_layer_up_and_keeps_the_models_equal(tmp_path):
    model = randomize(Darknet(REPO / "cfg" / "res2net-yolov3-tiny.cfg"), seed=5, gain=0.9).eval()
    plain = select(ChannelGraph(model), 0.6, layer_keep=0.01)
    with pytest.raises(PruneError, match=r"channel_multiple 8 rounds every layer back up .* choose a smaller multiple "
                                         r"or a larger percent"):
        select(ChannelGraph(model), 0.005, channel_multiple=8)  # the few channels chosen, each layer rounded back
    masked, graph, rounded = masked_model(model, 0.6, layer_keep=0.01, channel_multiple=8)
    assert set(rounded.kept) == set(plain.kept)
    assert all(rounded.kept[r] for r, kept in plain.kept.items() if kept)  # rounding only adds channels
    odd = 0
    for atoms in graph.segments:
        mask = rounded.keep_mask(graph, atoms)
        odd += int(plain.keep_mask(graph, atoms).sum()) % 8 != 0
        assert int(mask.sum()) % 8 == 0 or bool(mask.all()), f"{int(mask.sum())} of {len(atoms)} kept"
    assert odd > 0  # the plain selection had layers to round
    with pytest.raises(PruneError, match="channel_multiple must be 1 or more, got 0"):
        select(graph, 0.6, channel_multiple=0)
    with pytest.raises(PruneError, match=r"pruning 1e-09 of the \d+ prunable BN channels is less than one channel, "
                                         r"so nothing would be pruned; the smallest percent that prunes one is "
                                         r"0\.\d+") as none:
        select(graph, 1e-9)
    smallest = float(str(none.value).rsplit(" ", 1)[1])
    assert select(graph, smallest, layer_keep=0.01).pruned_share > 0  # the advice holds
    assert all(int(smallest_percent(n) * n) == 1 for n in range(2, 5000))
    with pytest.raises(PruneError, match=r"channel_multiple 100000 rounds every layer back up to all of its channels "
                                         r"\(the widest prunable one has \d+\), so nothing would be pruned"):
        select(graph, 0.4, channel_multiple=100000)
    compact = compact_model(masked, graph, rounded)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (compact(x) - masked(x)).abs().max().item() <= 1e-4


def test_gammas_tied_at_the_threshold_go_together_so_zeros_after_sparsity_training_are_pruned():
    model = randomize(Darknet(REPO / "cfg" / "yolov3-tiny.cfg"), seed=5, gain=0.9).eval()
    graph = ChannelGraph(model)
    before = select(graph, 0.3, layer_keep=0.01)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight[bn.weight.abs() < 0.9] = 0.0  # as --sr leaves them: exactly 0
    graph = ChannelGraph(model)
    zeros = sum(g == 0 for g in graph.gamma_of_atoms().values())
    selection = select(graph, 0.2, layer_keep=0.01)
    assert zeros / len(selection.gammas) > 0.2 and selection.threshold == 0.0
    assert selection.pruned_share == zeros / len(selection.gammas)
    assert sum(not kept for kept in selection.kept.values()) >= zeros - len(graph.segments)  # minus layer minimums
    assert sum(not kept for kept in before.kept.values()) == int(0.3 * len(before.gammas))  # untied: exactly 30 %


def test_channels_with_zero_gamma_and_beta_are_removed_without_changing_outputs(write_cfg, tmp_path):
    """Channels that already emit nothing (gamma = beta = 0, as sparsity training drives them) go, exactly."""
    text = conv(16, 3, 2) + conv(16, 1, 1) + "[res2net]\nplanes=8\nbase_width=32\n\n" + HEAD
    model = randomize(Darknet(write_cfg(text)), seed=1).eval()
    with torch.no_grad():
        for layer in (model.layers[0], model.layers[1]):
            layer.bn.weight[::2] = 0.0
            layer.bn.bias[::2] = 0.0
    gammas = len(ChannelGraph(model).gamma_of_atoms())
    masked, graph, selection = masked_model(model, 16 / gammas)  # the 16 zeros are the lowest 16 gammas
    compact = compact_model(masked, graph, selection)
    assert compact.layers[0].conv.out_channels == 8
    assert compact.layers[1].conv.out_channels == 16  # tied to the res2net residual, whose gammas are not 0
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compact(x), model(x), atol=1e-4, rtol=1e-4)


def test_skip_mode_leaves_tied_channels_alone(write_cfg):
    text = conv(8, 3, 2) + conv(4, 1, 1) + conv(8, 3, 1) + \
        "[shortcut]\nfrom=-3\nactivation=linear\n\n" + HEAD
    model = randomize(Darknet(write_cfg(text)), seed=2)
    graph = ChannelGraph(model)
    selection = select(graph, 0.5, layer_keep=0.01, shortcut_mode="skip")
    assert all(selection.keep_mask(graph, graph.layer_outputs[0]))
    assert not all(selection.keep_mask(graph, graph.layer_outputs[1]))


def test_a_percent_that_would_empty_a_layer_is_refused_with_the_safe_maximum(write_cfg, tmp_path):
    model = randomize(Darknet(write_cfg(conv(8, 3, 2) + conv(4, 1, 1) + HEAD)), seed=3)
    with torch.no_grad():
        model.layers[1].bn.weight.copy_(torch.tensor([0.01, 0.01, 0.01, 0.3]))  # conv 0's are in [0.5, 1.5]
    # 12 gammas; the safe threshold is conv 1's largest (0.3), with 3 of 12 below it
    with pytest.raises(PruneError,
                       match=r"would empty a layer \(.* of 4 channels\); the largest safe percent is 0\.2500"):
        masked_model(model, 0.5)
    masked, graph, selection = masked_model(model, 0.5, layer_keep=0.25)
    assert int(selection.keep_mask(graph, graph.layer_outputs[1]).sum()) == 1


def test_gammas_that_were_never_trained_are_refused(write_cfg):
    model = Darknet(write_cfg(conv(8, 3, 2) + conv(4, 1, 1) + HEAD))  # every BN gamma at its initial 1.0
    with pytest.raises(PruneError, match=r"every prunable BN \|gamma\| is 1: the scales rank no channel above another "
                                         r"\(BNs kept frozen in training, --freeze_bn, or never trained\)"):
        masked_model(model, 0.3, layer_keep=0.1)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.zero_()
    with pytest.raises(PruneError, match=r"is 0: .* \(sparsity training \(--sr\) with an --s so strong it zeroed "
                                         r"them all\)"):
        masked_model(model, 0.3, layer_keep=0.1)


@pytest.mark.e2e
def test_prune_command_writes_everything_or_nothing(tmp_path):
    import subprocess
    import sys
    from utils.data.synthetic import write_dataset
    data = write_dataset(tmp_path / "set", train=1, valid=3, size=64, seed=2)
    cfg = tmp_path / "tiny.cfg"
    from utils.darknet.cfg import read_cfg
    from utils.darknet.cfg_edit import with_classes
    cfg.write_text(with_classes(read_cfg(REPO / "cfg" / "res2net-yolov3-tiny.cfg"), 4).text)
    model = randomize(Darknet(cfg), seed=5, gain=0.9)
    model.save_darknet_weights(tmp_path / "m.weights")
    command = [sys.executable, "prune.py", "--model_def", str(cfg), "--weights_path", str(tmp_path / "m.weights"),
               "--data_config", str(data), "--img_size", "64"]
    refused = subprocess.run(command + ["--percent", "0.99", "--output", str(tmp_path / "no")], cwd=REPO,
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "largest safe percent" in refused.stderr, refused.stderr
    assert not (tmp_path / "no").exists()
    done = subprocess.run(command + ["--percent", "0.4", "--layer_keep", "0.1", "--output", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ("pruned.cfg", "pruned.weights", "pruned.pth", "report.md", "gammas.png", "channels.png"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "mAP@0.5 (valid)" in (tmp_path / "out" / "report.md").read_text()
    pruned = Darknet(tmp_path / "out" / "pruned.cfg")
    pruned.load_darknet_weights(tmp_path / "out" / "pruned.weights")
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    state = torch.load(tmp_path / "out" / "pruned.pth", weights_only=True)
    assert state["names"] == ["circle", "rectangle", "triangle", "cross"]
    assert f"--data_config {data}\n" in done.stdout  # a .weights file: train.py's default size, no --img_size
    save_model(model, tmp_path / "trained.pth", trained={"options": {"img_size": 96}})
    both = subprocess.run(command + ["--weights_path", str(tmp_path / "trained.pth"), "--layers", "2", "--percent",
                                     "0.3", "--layer_keep", "0.1", "--output", str(tmp_path / "both")],
                          cwd=REPO, capture_output=True, text=True)
    assert both.returncode == 0, both.stderr
    assert torch.load(tmp_path / "both" / "pruned.pth", weights_only=True)["options"] == {"img_size": 96}
    assert f"--pretrained_weights {tmp_path}/both/pruned.weights --data_config {data} --img_size 96" in both.stdout
    thinner = Darknet(tmp_path / "both" / "pruned.cfg")
    thinner.load_darknet_weights(tmp_path / "both" / "pruned.weights")
    assert len(thinner.layers) == len(model.layers) - 2
    assert "2 residual units removed first" in (tmp_path / "both" / "report.md").read_text()


def test_layer_pruning_removes_units_and_rewrites_every_index(write_cfg, tmp_path):
    unit = conv(4, 1, 1) + conv(8, 3, 1) + "[shortcut]\nfrom=-3\nactivation=linear\n\n"
    text = (conv(8, 3, 2) + unit * 3 + "[res2net]\nplanes=4\nbase_width=64\n\n"
            + "[route]\nlayers=-1,6\n\n[maxpool]\nsize=2\nstride=1\n\n[route]\nlayers=-2\n\n"
            + conv(8, 1, 1) + "[route]\nlayers=-1,9\n\n" + HEAD)
    # 0 conv | 1-3, 4-6, 7-9 residual units | 10 res2net | 11 route to unit 2's output (6) | ... | 15 route to 9
    model = randomize(Darknet(write_cfg(text)), seed=6).eval()
    from utils.pruning import removable_units, remove_units
    units = removable_units(model)
    assert [(u.layers.start, u.layers.stop) for u in units] == [(1, 4), (4, 7), (7, 10), (10, 11)]
    with torch.no_grad():  # which two go: the lowest mean |gamma|
        for layer in (model.layers[4], model.layers[5], model.layers[10].split.conv1):
            layer.bn.weight.mul_(0.01)
    thinner, chosen = remove_units(model, 2)
    assert [(u.layers.start, u.layers.stop) for u in chosen] == [(4, 7), (10, 11)]
    assert len(thinner.layers) == len(model.layers) - 4
    assert thinner.layers[7].sources == (6, 3)  # the route to unit 2's output now reads unit 1's
    # the same network with those residual branches adding zero
    with torch.no_grad():
        for layer in (model.layers[5], model.layers[10].conv3):
            layer.bn.weight.zero_()
            layer.bn.bias.zero_()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(thinner(x), model(x))
    with pytest.raises(PruneError, match="only 4 removable residual units"):
        remove_units(model, 5)


def test_prune_report_times_a_model_of_the_cfgs_input_channels(write_cfg):
    gray = write_cfg(NET.replace("channels=3", "channels=1") + conv(8, 3, 2) + HEAD, net=False)
    model = Darknet(gray)
    latencies = latencies_ms([model, model], 64)
    assert len(latencies) == 2 and all(ms > 0 for ms in latencies)


def test_a_pruned_model_keeps_how_its_original_was_trained(tmp_path):
    import prune
    trained = {"options": {"img_size": 96, "single_cls": True, "lr": 0.01, "epochs": 30}}
    save_model(Darknet(REPO / "cfg" / "yolov3-tiny.cfg"), tmp_path / "slim.pth", ["object"], trained)
    assert torch.load(tmp_path / "slim.pth", weights_only=True)["options"] == {"img_size": 96, "single_cls": True}
    assert prune.fine_tune_command(tmp_path, "d.data", trained) == (
        f"python train.py --model_def {tmp_path}/pruned.cfg --pretrained_weights {tmp_path}/pruned.weights "
        f"--data_config d.data --img_size 96 --single_cls")
    assert prune.fine_tune_command(tmp_path, None, None).endswith("--data_config DATA")

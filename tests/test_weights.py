"""Darknet .weights reading and writing: headers, round trips, cutoff, and every way a file can be wrong."""
import struct

import numpy as np
import pytest
import torch

from models import Darknet
from utils.darknet.weights import WeightsFileError, WeightsHeader, darknet_weights_size
from tests.cfgs import conv, head
from tests.conftest import randomize

# Every kind of weighted layer: conv with and without BN, [res2net] with a downsample, [triangle],
# a weighted [shortcut], and a [yolo] head.
MIXED = f"""
{conv(8, 3, 2)}[res2net]
planes=8
scale=4
base_width=32

[triangle]
planes=16
scale=2
base_width=32

{conv(16, 1, activation="mish")}[shortcut]
from=-3
weights_type=per_channel
weights_normalization=softmax

{head(anchors="4,5, 8,9, 12,14")}"""


@pytest.fixture
def mixed_cfg(write_cfg):
    return write_cfg(MIXED)


def float_count(model, cutoff=None):
    return sum(t.numel() for layer in list(model.layers)[:cutoff] for t in layer.darknet_tensors())


def write_file(path, header_ints, seen, floats, seen_format="<q"):
    path.write_bytes(struct.pack("<3i", *header_ints) + struct.pack(seen_format, seen)
                     + np.asarray(floats, dtype="<f4").tobytes())
    return path


def test_new_model_writes_version_0_2_0_with_int64_seen(mixed_cfg, tmp_path):
    model = randomize(Darknet(mixed_cfg))
    path = tmp_path / "m.weights"
    model.save_darknet_weights(path)
    data = path.read_bytes()
    assert struct.unpack("<3iq", data[:20]) == (0, 2, 0, 0)
    assert len(data) == 20 + 4 * float_count(model)


def test_predicted_file_size_matches_what_is_written_for_both_headers(mixed_cfg, tmp_path):
    model = randomize(Darknet(mixed_cfg))
    for header in (WeightsHeader(0, 2, 0), WeightsHeader(0, 1, 0)):
        model.weights_version.copy_(torch.tensor([header.major, header.minor, header.revision]))
        model.save_darknet_weights(tmp_path / "m.weights")
        assert darknet_weights_size(model.layers, model.weights_header) == (tmp_path / "m.weights").stat().st_size


def test_round_trip_is_byte_identical_and_restores_every_tensor(mixed_cfg, tmp_path):
    source = randomize(Darknet(mixed_cfg), seed=1)
    first, second = tmp_path / "a.weights", tmp_path / "b.weights"
    source.save_darknet_weights(first)
    copy = Darknet(mixed_cfg)
    copy.load_darknet_weights(first)
    copy.save_darknet_weights(second)
    assert first.read_bytes() == second.read_bytes()
    for (name, a), b in zip(source.state_dict().items(), copy.state_dict().values()):
        if "num_batches_tracked" not in name:
            assert torch.equal(a, b), name


def test_file_order_is_the_layers_declared_order(mixed_cfg, tmp_path):
    """The stream is each layer's darknet_tensors() in cfg order, nothing between them."""
    model = randomize(Darknet(mixed_cfg), seed=2)
    path = tmp_path / "m.weights"
    model.save_darknet_weights(path)
    floats = np.fromfile(path, dtype="<f4", offset=20)
    expected = np.concatenate([t.detach().numpy().ravel() for layer in model.layers for t in layer.darknet_tensors()])
    assert np.array_equal(floats, expected)
    shortcut = model.layers[4]
    assert shortcut.darknet_tensors()[0].shape == (2, 16)  # (inputs, channels) for per_channel


def test_old_header_with_32_bit_seen_loads_and_is_written_back_as_read(mixed_cfg, tmp_path):
    model = Darknet(mixed_cfg)
    floats = np.random.default_rng(0).random(float_count(model), dtype=np.float32)
    old = write_file(tmp_path / "old.weights", (0, 1, 0), 123456, floats, seen_format="<i")
    header = model.load_darknet_weights(old)
    assert (header.major, header.minor, header.seen, header.size) == (0, 1, 123456, 16)
    out = tmp_path / "out.weights"
    model.save_darknet_weights(out)
    assert out.read_bytes() == old.read_bytes()


def test_header_of_darknet_0_2_5_and_large_seen_survive(mixed_cfg, tmp_path):
    model = Darknet(mixed_cfg)
    floats = np.zeros(float_count(model), dtype=np.float32)
    seen = 2 ** 40 + 7
    original = write_file(tmp_path / "d.weights", (0, 2, 5), seen, floats)
    assert model.load_darknet_weights(original).seen == seen
    assert int(model.seen) == seen
    out = tmp_path / "out.weights"
    model.save_darknet_weights(out)
    assert out.read_bytes() == original.read_bytes()


def test_both_headers_give_the_same_tensors(mixed_cfg, tmp_path):
    floats = np.random.default_rng(1).random(float_count(Darknet(mixed_cfg)), dtype=np.float32)
    a, b = Darknet(mixed_cfg), Darknet(mixed_cfg)
    a.load_darknet_weights(write_file(tmp_path / "new.weights", (0, 2, 0), 5, floats))
    b.load_darknet_weights(write_file(tmp_path / "old.weights", (0, 1, 0), 5, floats, "<i"))
    for x, y in zip(a.layers.state_dict().values(), b.layers.state_dict().values()):
        assert torch.equal(x, y)


def test_cutoff_save_writes_only_leading_layers_and_cutoff_load_reads_them(mixed_cfg, tmp_path):
    full = randomize(Darknet(mixed_cfg), seed=3)
    backbone = tmp_path / "backbone.conv.2"
    full.save_darknet_weights(backbone, cutoff=2)
    assert backbone.stat().st_size == 20 + 4 * float_count(full, cutoff=2)

    fresh = Darknet(mixed_cfg)
    untouched = {k: v.clone() for k, v in fresh.layers[2:].state_dict().items()}
    fresh.load_darknet_weights(backbone, cutoff=2)
    for a, b in zip(full.layers[:2].state_dict().values(), fresh.layers[:2].state_dict().values()):
        assert torch.equal(a, b)
    for name, value in fresh.layers[2:].state_dict().items():
        assert torch.equal(value, untouched[name]), name


def test_cutoff_stops_reading_early_in_a_longer_file(mixed_cfg, tmp_path):
    full = randomize(Darknet(mixed_cfg), seed=4)
    path = tmp_path / "full.weights"
    full.save_darknet_weights(path)
    part = Darknet(mixed_cfg)
    part.load_darknet_weights(path, cutoff=3)
    assert torch.equal(part.layers[2].split.conv1.conv.weight, full.layers[2].split.conv1.conv.weight)


def test_cutoff_past_a_weightless_layer_reads_the_same_file():
    """Like darknet53.conv.74 (layer 74 is a shortcut): cutoff 74 and 75 describe the same tensors."""
    model = Darknet("cfg/yolov3.cfg")
    assert type(model.layers[74]).__name__ == "Shortcut"
    assert float_count(model, 74) == float_count(model, 75) < float_count(model)


def test_short_file_names_the_layer_and_counts_and_leaves_the_model_untouched(mixed_cfg, tmp_path):
    model = randomize(Darknet(mixed_cfg), seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    needed_first_two = float_count(model, 2)
    path = write_file(tmp_path / "short.weights", (0, 2, 0), 0, np.ones(needed_first_two + 10, np.float32))
    with pytest.raises(WeightsFileError) as info:
        model.load_darknet_weights(path)
    message = str(info.value)
    assert "ends inside" in message and "layer 2 [triangle]" in message
    assert f"the file has {needed_first_two + 10:,}" in message
    assert f"needs {float_count(model, 3):,} floats up to and including this layer" in message
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_file_ending_on_a_layer_boundary_suggests_the_cutoff(mixed_cfg, tmp_path):
    model = Darknet(mixed_cfg)
    path = write_file(tmp_path / "backbone.weights", (0, 2, 0), 0, np.ones(float_count(model, 3), np.float32))
    with pytest.raises(WeightsFileError, match=r"holds exactly layers 0\.\.2: a backbone of 3 layers \(Darknet's "
                                               r"partial\), which loads as such when named <net>\.conv\.3"):
        model.load_darknet_weights(path)


def test_the_suggested_cutoff_ends_on_the_last_layer_with_weights(write_cfg, tmp_path):
    model = Darknet(write_cfg(conv(8) + "[maxpool]\nsize=2\nstride=2\n\n" + conv(8) + head()))
    path = write_file(tmp_path / "backbone.weights", (0, 2, 0), 0, np.ones(float_count(model, 1), np.float32))
    with pytest.raises(WeightsFileError, match=r"holds exactly layers 0\.\.0: a backbone of 1 layers .* named "
                                               r"<net>\.conv\.1 or given cutoff 1$"):  # not 2: the maxpool has none
        model.load_darknet_weights(path)
    empty = write_file(tmp_path / "empty.weights", (0, 2, 0), 0, np.ones(0, np.float32))
    with pytest.raises(WeightsFileError) as nothing:
        model.load_darknet_weights(empty)
    assert "the file has 0" in str(nothing.value) and "backbone" not in str(nothing.value)


def test_leftover_floats_are_refused_without_cutoff(mixed_cfg, tmp_path):
    model = Darknet(mixed_cfg)
    n = float_count(model)
    path = write_file(tmp_path / "long.weights", (0, 2, 0), 0, np.ones(n + 3, np.float32))
    with pytest.raises(WeightsFileError, match=f"3 floats are left over .*needs {n:,}, the file has {n + 3:,}"):
        model.load_darknet_weights(path)
    model.load_darknet_weights(path, cutoff=3)  # Darknet's partial reads the leading layers of a longer file


def test_a_backbone_file_holds_exactly_the_layers_its_name_says(mixed_cfg, tmp_path):
    model = Darknet(mixed_cfg)
    exact = write_file(tmp_path / "mixed.conv.3", (0, 2, 0), 0, np.ones(float_count(model, 3), np.float32))
    model.load_darknet_weights(exact)
    longer = write_file(tmp_path / "other.conv.3", (0, 2, 0), 0, np.ones(float_count(model, 3) + 5, np.float32))
    with pytest.raises(WeightsFileError, match=r"other\.conv\.3: 5 floats are left over after layers 0\.\.2, as its "
                                               r"name says, .*: the file belongs to another cfg$"):
        model.load_darknet_weights(longer)
    nothing = tmp_path / "nothing.conv.0"
    nothing.write_bytes(struct.pack("<3iq", 0, 2, 0, 0))
    with pytest.raises(WeightsFileError, match=r"nothing\.conv\.0: a backbone of 0 layers \(<net>\.conv\.0\) holds "
                                               r"no weights"):
        model.load_darknet_weights(nothing)


def test_truncated_float_and_truncated_header(mixed_cfg, tmp_path):
    model = Darknet(mixed_cfg)
    path = tmp_path / "odd.weights"
    path.write_bytes(struct.pack("<3iq", 0, 2, 0, 0) + b"\x00" * (4 * float_count(model) + 2))
    with pytest.raises(WeightsFileError, match="not a whole number of float32"):
        model.load_darknet_weights(path)
    path.write_bytes(b"\x00" * 7)
    with pytest.raises(WeightsFileError, match="too short for a Darknet weights header"):
        model.load_darknet_weights(path)
    path.write_bytes(struct.pack("<3iq", -1, 2, 0, 0) + b"\x00" * (4 * float_count(model)))
    with pytest.raises(WeightsFileError, match=r"odd\.weights: the header's version -1\.2\.0 has a negative part"):
        model.load_darknet_weights(path)
    torch.save({"model": model.state_dict()}, path)  # a .pth renamed
    with pytest.raises(WeightsFileError, match=r"odd\.weights: a zip archive, as a PyTorch checkpoint is, not Darknet "
                                               r"weights; a \.pth loads under a \.pth name"):
        model.load_darknet_weights(path)


def test_missing_file_and_bad_cutoff(mixed_cfg, tmp_path):
    model = Darknet(mixed_cfg)
    with pytest.raises(WeightsFileError, match="cannot open weights file"):
        model.load_darknet_weights(tmp_path / "absent.weights")
    with pytest.raises(ValueError, match=r"cutoff 99 \(--cutoff\): expected 1 .. 7, the model's layer count"):
        model.save_darknet_weights(tmp_path / "x.weights", cutoff=99)
    with pytest.raises(ValueError, match=r"cutoff 0 \(--cutoff\): expected 1 .. 7"):
        model.save_darknet_weights(tmp_path / "x.weights", cutoff=0)
    longer = tmp_path / "longer.conv.9"
    longer.write_bytes(struct.pack("<3iq", 0, 2, 0, 0) + b"\x00" * (4 * float_count(model)))
    with pytest.raises(WeightsFileError, match=r"longer\.conv\.9: its name says a backbone of 9 layers "
                                               r"\(<net>\.conv\.9\), but the cfg has 7: the file belongs to a longer"):
        model.load_darknet_weights(longer)


def test_failed_save_leaves_no_file_and_keeps_the_old_one(mixed_cfg, tmp_path, monkeypatch):
    model = randomize(Darknet(mixed_cfg))
    path = tmp_path / "keep.weights"
    path.write_bytes(b"precious")

    def broken():
        raise OSError("disk full")
    monkeypatch.setattr(model.layers[2], "darknet_tensors", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save_darknet_weights(path)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.weights", "model.cfg"]


def test_failure_half_way_through_writing_leaves_nothing_behind(mixed_cfg, tmp_path, monkeypatch):
    model = randomize(Darknet(mixed_cfg))
    target = tmp_path / "out" / "new.weights"
    target.parent.mkdir()
    # A tensor that cannot be copied to the CPU: the header and layers 0-4 are written before it fails.
    monkeypatch.setattr(model.layers[5], "darknet_tensors", lambda: [torch.empty(21, device="meta")])
    with pytest.raises(NotImplementedError):
        model.save_darknet_weights(target)
    assert list(target.parent.iterdir()) == []


def test_fused_model_refuses_to_save_and_load(mixed_cfg, tmp_path):
    model = randomize(Darknet(mixed_cfg)).eval().fuse()
    with pytest.raises(RuntimeError, match="save before fuse"):
        model.save_darknet_weights(tmp_path / "x.weights")
    with pytest.raises(RuntimeError, match="load weights before fuse"):
        model.load_darknet_weights(tmp_path / "x.weights")

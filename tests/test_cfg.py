"""The cfg grammar and every way a cfg can be wrong: each error names file, line and layer."""
import re
import warnings

import pytest

from models import Darknet
from utils.darknet.cfg import CfgError, CfgWarning, read_cfg

CONV = """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
"""


def line_of(path, text, nth=1):
    """1-based number of the nth line of ``path`` that reads ``text`` (stripped)."""
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip() == text]
    return hits[nth - 1]


def error_of(path):
    with pytest.raises(CfgError) as info:
        Darknet(path)
    return str(info.value)


def test_grammar_comments_blank_lines_whitespace_and_aliases(write_cfg):
    path = write_cfg("""
        # a comment line
        ; another comment

        [conv]
          batch_normalize = 1
        filters= 8   # trailing comment
        size =3
        stride=2
        pad=1
        activation = leaky

        [max]
        size=2
        stride=2
        """)
    model = Darknet(path)
    assert [b.name for b in model.blocks] == ["convolutional", "maxpool"]
    conv = model.layers[0]
    assert conv.conv.out_channels == 8 and conv.conv.stride == (2, 2) and conv.bn is not None
    assert model.blocks[0].key_lines["filters"] == line_of(path, "filters= 8   # trailing comment")


def test_darknet_defaults_apply_when_keys_are_absent(write_cfg):
    model = Darknet(write_cfg("""
        [convolutional]
        filters=4
        """))
    conv = model.layers[0]
    assert conv.conv.kernel_size == (1, 1) and conv.conv.bias is not None and conv.bn is None
    assert type(conv.act).__name__ == "Sigmoid"  # Darknet's default activation is logistic


def test_unknown_section_names_file_line_and_layer(write_cfg):
    path = write_cfg(CONV + "\n[convolution]\nfilters=3\n")
    message = error_of(path)
    assert f"{path}:{line_of(path, '[convolution]')}: layer 1: unknown section [convolution]" in message
    assert "[convolutional]" in message


def test_malformed_line(write_cfg):
    path = write_cfg(CONV + "filters\n")
    assert f"{path}:{line_of(path, 'filters')}: expected 'key=value'" in error_of(path)


def test_malformed_header(write_cfg):
    path = write_cfg("[convolutional\nfilters=3\n")
    assert f"{path}:{line_of(path, '[convolutional')}: malformed section header" in error_of(path)


def test_option_before_any_section(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text("width=3\n[net]\nwidth=4\nheight=4\n")
    assert f"{path}:1: option 'width' appears before the first [section]" in error_of(path)


def test_first_section_must_be_net(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(CONV)
    assert f"{path}:2: the first section must be [net]" in error_of(path)


def test_repeated_key(write_cfg):
    path = write_cfg(CONV + "size=1\n")
    assert f"{path}:{line_of(path, 'size=1')}: key 'size' repeats line {line_of(path, 'size=3')}" in error_of(path)


def test_missing_required_key(write_cfg):
    path = write_cfg(CONV + "\n[route]\n")
    assert f"{path}:{line_of(path, '[route]')}: layer 1 [route]: missing required key 'layers'" in error_of(path)


def test_missing_net_size(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text("[net]\nwidth=32\n" + CONV)
    assert f"{path}:1: [net]: missing required key 'height'" in error_of(path)


@pytest.mark.parametrize("key,value,expects", [
    ("size", "3x", "an integer"),
    ("activation", "sparkly", "one of linear, leaky"),
    ("batch_normalize", "2", "one of 0, 1"),
])
def test_bad_value_names_the_key_and_its_line(write_cfg, key, value, expects):
    text = re.sub(rf"^{key}=.*$", f"{key}={value}", CONV, flags=re.M)
    path = write_cfg(text)
    line = line_of(path, f"{key}={value}")
    message = error_of(path)
    assert f"{path}:{line}: layer 0 [convolutional]: key '{key}'" in message and expects in message


def test_zero_filters_is_refused(write_cfg):
    path = write_cfg(CONV.replace("filters=8", "filters=0"))
    assert "layer 0 [convolutional]: filters must be at least 1" in error_of(path)


@pytest.mark.parametrize("section,ref", [("route", "layers=-3"), ("route", "layers=5"), ("shortcut", "from=-2"),
                                         ("route", "layers=1")])
def test_reference_out_of_range(write_cfg, section, ref):
    path = write_cfg(CONV + f"\n[{section}]\n{ref}\n")
    message = error_of(path)
    assert f"{path}:{line_of(path, ref)}: layer 1 [{section}]" in message and "valid layers are 0 .. 0" in message


def test_yolo_filters_that_do_not_fit(write_cfg):
    path = write_cfg(CONV + """
        [yolo]
        mask=0,1
        anchors=10,13,16,30
        classes=2
        num=2
        """)
    message = error_of(path)
    assert f"{path}:{line_of(path, '[yolo]')}: layer 1 [yolo]" in message
    assert "8 filters" in message and "2*(2+5) = 14" in message


def test_yolo_mask_out_of_range(write_cfg):
    path = write_cfg(CONV.replace("filters=8", "filters=7") + "\n[yolo]\nmask=3\nanchors=1,2,3,4\nclasses=2\nnum=2\n")
    assert "mask [3] must index anchors 0 .. 1" in error_of(path)


def test_groups_must_divide_channels(write_cfg):
    path = write_cfg(CONV.replace("filters=8", "filters=6") + "\n[route]\nlayers=-1\ngroups=4\ngroup_id=1\n")
    assert "layer 0 has 6 channels, not divisible by groups=4" in error_of(path)


def test_conv_groups_must_divide_input(write_cfg):
    path = write_cfg(CONV + "groups=3\n")
    assert "groups=3 must divide the 3 input channels and the 8 filters" in error_of(path)


def test_res2net_inplanes_mismatch(write_cfg):
    path = write_cfg(CONV + "\n[res2net]\ninplanes=16\nplanes=4\n")
    message = error_of(path)
    assert (f"{path}:{line_of(path, 'inplanes=16')}: layer 1 [res2net]: inplanes=16 but the layer before "
            f"outputs 8 channels") in message


def test_unknown_keys_give_one_warning_listing_them(write_cfg):
    path = write_cfg(CONV + "mystery=1\n\n[maxpool]\nsize=2\nstride=2\nsparkle=3\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Darknet(path)
    ours = [w for w in caught if issubclass(w.category, CfgWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert f"mystery (line {line_of(path, 'mystery=1')})" in message
    assert f"sparkle (line {line_of(path, 'sparkle=3')})" in message


def test_spatial_mismatch_at_run_time_names_the_layer(write_cfg):
    import torch
    path = write_cfg(CONV + "\n[maxpool]\nsize=2\nstride=2\n\n[route]\nlayers=-1,-2\n")
    model = Darknet(path)
    with pytest.raises(RuntimeError, match=rf"{re.escape(str(path))}:{line_of(path, '[route]')}: layer 2 \[route\]"):
        model.forward_heads(torch.zeros(1, 3, 16, 16))


def test_missing_file():
    with pytest.raises(CfgError, match="cannot read cfg file"):
        read_cfg("/nonexistent/model.cfg")

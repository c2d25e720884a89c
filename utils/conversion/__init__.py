"""Conversions: .weights <-> checkpoints and backbone cuts (darknet_files), plain-Darknet cfgs (native),
deployment exports (export), ImageNet classifiers as backbones (imagenet). The file formats themselves are the
Darknet core's (utils/darknet/checkpoint.py, utils/darknet/weights.py)."""

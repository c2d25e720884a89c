"""Conversions: plain-Darknet cfgs (native), deployment exports (export). Checkpoint <-> .weights
conversion is the Darknet core's own (utils/darknet/checkpoint.py)."""

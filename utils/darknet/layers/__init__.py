"""Every Darknet layer type, one class each, registered by section name (see ``base`` for the contract).

Every module of this package is imported here, so a new layer type is one new module: its ``@register``
makes it buildable, loadable, prunable, convertible and counted by the summary.
"""
import importlib
import pkgutil

from utils.darknet.layers.base import BuildContext, DarknetLayer, NotPlainDarknet, PlainLayer
from utils.darknet.layers.conv import Convolutional, convolutions
from utils.darknet.layers.yolo import YOLOLayer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BuildContext", "Convolutional", "DarknetLayer", "NotPlainDarknet", "PlainLayer", "YOLOLayer",
           "convolutions"]

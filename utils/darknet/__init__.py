"""The Darknet core: cfg text -> sections -> layers -> model, and the .weights stream through the layers.

Importing the package registers every layer type (``utils.darknet.layers``), so the registry is complete
before any cfg is read.
"""
from utils.darknet import layers  # noqa: F401  (registers the layer types)

"""Cfg snippets the tests build networks from, declared once.

``conv(8, 3, 2)`` is a BN + leaky [convolutional] of 8 filters, 3x3, stride 2; ``head()`` a linear 1x1 conv
and a [yolo] with three anchors and two classes (21 filters); ``NET`` a 64x64 RGB [net]. Tests write them
with the ``write_cfg`` fixture (tests/conftest.py), which prepends ``NET``, or parse them directly.
"""

NET = """
[net]
width=64
height=64
channels=3
"""


def conv(filters: int, size: int = 3, stride: int = 1, activation: str = "leaky", extra: str = "") -> str:
    """A BN [convolutional] with Darknet's same padding, and any extra ``key=value`` lines."""
    lines = f"{extra}\n" if extra and not extra.endswith("\n") else extra
    return (f"[convolutional]\nbatch_normalize=1\nfilters={filters}\nsize={size}\nstride={stride}\npad=1\n"
            f"activation={activation}\n{lines}\n")


def head(classes: int = 2, anchors: str = "4,4,8,8,16,16", mask: str = "0,1,2", extra: str = "") -> str:
    """A [yolo] head: the linear 1x1 conv sized for it, then the [yolo] (anchors as w,h pairs)."""
    count = len(mask.split(","))
    num = len(anchors.split(",")) // 2
    lines = f"{extra}\n" if extra and not extra.endswith("\n") else extra
    return (f"[convolutional]\nfilters={count * (classes + 5)}\nsize=1\nactivation=linear\n\n"
            f"[yolo]\nmask={mask}\nanchors={anchors}\nclasses={classes}\nnum={num}\n{lines}")


HEAD = head()

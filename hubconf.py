"""torch.hub entry points for a local clone: one per cfg in cfg/, named like it with "_" for "-" (yolov3_tiny,
res2net_yolov3, ...). Nothing is downloaded: weights come from a path you give.

    import torch
    detector = torch.hub.load("path/to/this/repo", "res2net_yolov3", source="local", weights="best.pth")
    result = detector("photo.jpg")      # Detections: boxes (x1 y1 x2 y2 in pixels), scores, classes, names

Every entry takes ``pretrained=False, weights=None, names=None, device=None, classes=None`` and the keywords
``settings=None, half=False``, and returns a ``models.Detector`` (an ``nn.Module``; its ``.model`` is the Darknet
network):

- ``weights``: a ``.pth`` checkpoint (it carries its own cfg and class names, which are used), or a Darknet
  ``.weights`` file for the entry's cfg. ``pretrained=True`` without ``weights`` is an error, since there is
  nothing to download; without either, the network is randomly initialised.
- ``names``: a ``.names`` file or a list; ``classes``: the class count the cfg is adapted to (default: the number
  of ``names`` when given, else the cfg's own), as training adapts it.
- ``device``: cpu, cuda, cuda:N (default: CUDA when available); ``settings`` (a ``DetectSettings``) and ``half``:
  as ``models.Detector`` takes them.
"""
import numbers
from pathlib import Path as _Path

dependencies = ["torch", "numpy", "cv2"]

_CFG_FOLDER = _Path(__file__).resolve().parent / "cfg"


def _detector(cfg_name: str, pretrained: bool, weights, names, classes, detector_options: dict):
    """The Detector an entry returns (imports here, so listing the entries stays cheap)."""
    from models import Darknet, Detector
    from utils.darknet.cfg import read_cfg
    from utils.darknet.cfg_edit import with_classes
    from utils.darknet.checkpoint import CHECKPOINT_SUFFIXES, ClassCountError
    from utils.data.names import read_class_names
    from utils.errors import UserError

    entry = cfg_name.replace("-", "_")
    if pretrained and weights is None:
        raise UserError(f"{entry}: pretrained=True needs weights='path/to/model.pth' (or a .weights file); "
                        f"this repo downloads nothing")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, numbers.Integral)
                                or classes < 1):
        raise UserError(f"{entry}: classes={classes!r}: expected a class count, an integer of at least 1")
    if weights is not None and not isinstance(weights, (str, _Path)):
        raise UserError(f"{entry}: weights={weights!r}: expected the path of a .pth or .weights file")
    if weights is not None and _Path(weights).suffix in CHECKPOINT_SUFFIXES:
        detector = Detector(weights, None, names, **detector_options)
        if classes is not None and classes != detector.model.num_classes:
            raise UserError(f"{weights}: the checkpoint has {detector.model.num_classes} classes, not "
                            f"classes={classes}")
        return detector
    cfg = read_cfg(_CFG_FOLDER / f"{cfg_name}.cfg")
    if classes is None and names is not None:
        classes = len(read_class_names(names) if isinstance(names, (str, _Path)) else names)
    if classes is not None:
        cfg = with_classes(cfg, classes)
    try:
        if weights is None:
            return Detector(Darknet(cfg), None, names, **detector_options)
        return Detector(weights, cfg, names, **detector_options)
    except ClassCountError as err:
        raise UserError(f"{err}: pass classes={err.classes} (or names= its {err.classes} class names)") from None


_MORE_DETECTOR_OPTIONS = ("settings", "half")  # passed on to models.Detector as they are, as device is


def _entry(cfg_name: str):
    def entry(pretrained=False, weights=None, names=None, device=None, classes=None, **more):
        unknown = sorted(set(more) - set(_MORE_DETECTOR_OPTIONS))
        if unknown:
            raise TypeError(f"{entry.__name__}() got an unexpected keyword argument {unknown[0]!r}")
        return _detector(cfg_name, pretrained, weights, names, classes, {"device": device, **more})
    entry.__name__ = entry.__qualname__ = cfg_name.replace("-", "_")
    entry.__doc__ = (f"A Detector on cfg/{cfg_name}.cfg: weights= a .pth or a .weights path (nothing is "
                     f"downloaded), names=, device=, classes=, settings=, half=; see this module's docstring.")
    return entry


for _cfg in sorted(_CFG_FOLDER.glob("*.cfg")):
    globals()[_cfg.stem.replace("-", "_")] = _entry(_cfg.stem)

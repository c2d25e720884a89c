import math
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from tests.cfgs import NET

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

torch.set_num_threads(2)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a clean skip when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


@pytest.fixture
def write_cfg(tmp_path):
    """Write a cfg (dedented) under tmp_path; ``net=True`` prepends a 64x64 [net] section."""
    def write(body: str, name: str = "model.cfg", net: bool = True) -> Path:
        path = tmp_path / name
        path.write_text((NET if net else "") + textwrap.dedent(body))
        return path
    return write


def randomize(model: torch.nn.Module, seed: int = 0, gain: float = 1.0) -> torch.nn.Module:
    """Non-trivial, well-scaled values everywhere, like Darknet-vectors' make_weights.py: conv weights
    N(0, gain^2/fan_in), BN gamma U(0.5, 1.5), beta and mean N(0, 0.1), var U(0.5, 2), biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)

    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    def uniform(t, low, high):
        t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                normal(module.weight, gain / math.sqrt(module.weight[0].numel()))
                if module.bias is not None:
                    normal(module.bias, 0.1)
            elif isinstance(module, torch.nn.BatchNorm2d):
                uniform(module.weight, 0.5, 1.5)
                normal(module.bias, 0.1)
                normal(module.running_mean, 0.1)
                uniform(module.running_var, 0.5, 2.0)
            elif getattr(module, "input_weights", None) is not None:
                normal(module.input_weights, 0.1, 1.0)
    return model


def random_tiny_model(num_classes: int, seed: int = 0) -> torch.nn.Module:
    """cfg/yolov3-tiny.cfg adapted to ``num_classes``, randomly initialised (its detections are not all misses)."""
    from models import Darknet
    from utils.darknet.cfg import read_cfg
    from utils.darknet.cfg_edit import with_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cfg's Darknet-only training keys
        return randomize(Darknet(with_classes(read_cfg(REPO / "cfg" / "yolov3-tiny.cfg"), num_classes)), seed, 0.9)


def stretched_dataset(root: Path, sizes: list[tuple[int, int]]):
    """A synthetic dataset whose valid images are stretched to ``sizes`` (width, height), a DataConfig: their
    labels, normalised, stay right."""
    import cv2
    from utils.data.config import parse_data_config, read_image_list
    from utils.data.synthetic import write_dataset
    config = parse_data_config(write_dataset(root, train=1, valid=len(sizes), size=96, seed=2))
    for path, size in zip(read_image_list(config.valid), sizes):
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), size))
    return config


def evaluate_on(model: torch.nn.Module, data_config: Path, img_size: int = 96):
    """(records, result) of the repo's evaluation of ``model`` on the valid images of ``data_config``."""
    from utils.data.batching import evaluation_loader
    from utils.data.config import parse_data_config
    from utils.data.dataset import DetectionDataset
    from utils.evaluation.evaluate import collect_detections, score
    config = parse_data_config(data_config)
    loader = evaluation_loader(DetectionDataset(config.valid, config.classes), 4, img_size, workers=0)
    records = collect_detections(model, loader, torch.device("cpu")).records
    return records, score(records, config.names)

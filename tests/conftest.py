import math
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

torch.set_num_threads(2)

NET = """
[net]
width=64
height=64
channels=3
"""


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

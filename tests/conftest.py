import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

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


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BN statistic non-trivial values (BN variances positive)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return model

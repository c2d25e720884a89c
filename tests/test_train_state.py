"""TrainState: a checkpoint holds the whole state under the keys every checkpoint has had, and loads back."""
import math
from dataclasses import replace

import pytest
import torch
from tqdm import tqdm

from models import Darknet
from tests.test_train import TINY
from utils.darknet.checkpoint import load_checkpoint
from utils.data.dataset import Batch
from utils.training.epoch import StepContext, train_epoch
from utils.training.loss import YOLOLoss
from utils.training.options import TrainOptions
from utils.training.setup import build_state
from utils.training.state import TrainState

CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "scaler", "ema", "epoch", "best_fitness", "rng_cpu",
                   "cfg_text", "names", "options"}
OPTIONS = TrainOptions(epochs=3, optimizer="adam", lr=0.01, ema=True, device="cpu")


def fresh_state(cfg, seed: int) -> TrainState:
    torch.manual_seed(seed)
    return build_state(Darknet(cfg), OPTIONS, 4, torch.device("cpu"), ["a", "b"])


def train_a_little(state: TrainState, steps: int) -> None:
    images = torch.Generator().manual_seed(7)  # the same batches for every state
    for _ in range(steps):
        heads = state.model.train()(torch.rand(2, 3, 64, 64, generator=images))
        sum(h.square().mean() for h in heads).backward()
        state.optimizer.step()
        state.optimizer.zero_grad()
        state.scheduler.step()
        state.ema.update(state.model)


def assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_save_then_load_restores_every_part(tmp_path):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    saved = fresh_state(cfg, seed=0)
    train_a_little(saved, steps=3)
    saved.epoch, saved.best_fitness = 1, 0.25
    saved.save(tmp_path / "last.pth")
    draws_after_save = torch.rand(4)

    checkpoint = torch.load(tmp_path / "last.pth", weights_only=True)
    assert set(checkpoint) == CHECKPOINT_KEYS
    assert checkpoint["names"] == ["a", "b"] and checkpoint["options"]["lr"] == 0.01
    assert "filters=255" in checkpoint["cfg_text"]

    loaded = fresh_state(cfg, seed=1)  # other initial weights, optimiser and schedule untouched
    assert not torch.equal(loaded.model.layers[0].conv.weight, saved.model.layers[0].conv.weight)
    loaded.load_state_dict(load_checkpoint(tmp_path / "last.pth"))
    assert (loaded.epoch, loaded.best_fitness) == (1, 0.25)
    assert torch.equal(torch.rand(4), draws_after_save)  # the random stream goes on where it was saved
    assert_same(loaded.model.state_dict(), saved.model.state_dict(), "model")
    assert_same(loaded.optimizer.state_dict(), saved.optimizer.state_dict(), "optimizer")
    assert_same(loaded.scheduler.state_dict(), saved.scheduler.state_dict(), "scheduler")
    assert_same(loaded.scaler.state_dict(), saved.scaler.state_dict(), "scaler")
    assert_same(loaded.ema.state_dict(), saved.ema.state_dict(), "ema")
    assert loaded.optimizer.param_groups[0]["lr"] == pytest.approx(saved.optimizer.param_groups[0]["lr"])

    train_a_little(saved, steps=2)
    train_a_little(loaded, steps=2)
    assert_same(loaded.model.state_dict(), saved.model.state_dict(), "model after more steps")


def test_a_state_without_ema_saves_none_and_loads_without_one(tmp_path):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    state = fresh_state(cfg, seed=0)
    state.ema = None
    state.save(tmp_path / "last.pth")
    assert torch.load(tmp_path / "last.pth", weights_only=True)["ema"] is None
    # an EMA with nothing saved keeps its own weights
    fresh_state(cfg, seed=1).load_state_dict(load_checkpoint(tmp_path / "last.pth"))



def _one_step(amp: bool, tmp_path) -> tuple[list[torch.dtype], TrainState]:
    """One optimiser step through the trainer's own step on a fixed batch; the dtypes layer 0 produced."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    torch.manual_seed(3)
    model = Darknet(cfg).prepare_training()
    state = build_state(model, replace(OPTIONS, amp=amp), 4, torch.device("cpu"), ["a", "b"])
    dtypes = []
    model.layers[0].register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    images = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    batch = Batch(images, torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.4]]), ["x", "y"], [0, 1], [(64, 64)] * 2, [None, None])
    ctx = StepContext(model, YOLOLoss(model.yolo_layers), torch.device("cpu"), tmp_path, amp=amp)
    with tqdm(disable=True) as bar:
        stats = train_epoch(state, [batch], ctx, bar)
    assert math.isfinite(stats.mean("total"))
    return dtypes, state


def test_amp_on_cpu_runs_the_forward_in_bfloat16_and_keeps_float32_weights_close_to_float32s(tmp_path):
    dtypes, mixed = _one_step(True, tmp_path)
    assert dtypes == [torch.bfloat16] and not mixed.scaler.is_enabled()  # bfloat16 needs no loss scaling
    plain_dtypes, plain = _one_step(False, tmp_path)
    assert plain_dtypes == [torch.float32]
    for name, value in plain.model.state_dict().items():
        assert mixed.model.state_dict()[name].dtype == value.dtype, name
    moved = [(mixed.model.state_dict()[n] - v).abs().max() for n, v in plain.model.state_dict().items()
             if v.dtype.is_floating_point]
    assert max(moved) < OPTIONS.lr / 2  # Adam's first step moves every weight by about lr, in both the same way

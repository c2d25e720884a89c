"""Speed against the hardware's limit, on CPU (2 threads), every case measured in its own process.

    python -m benchmarks.bench_speed                              # inference, detection and training
    python -m benchmarks.bench_speed --only inference --sizes 416
    python -m benchmarks.bench_speed --models --original runs/x/best.pth --pruned runs/prune/x/pruned.pth
    python -m benchmarks.bench_speed --only step --baseline ../baseline  # one step, before/after, interleaved
    python -m benchmarks.bench_speed --only layers --models --original A.pth --pruned B.pth --sizes 320
    python -m benchmarks.bench_speed --only profile --models yolov3-tiny --pruned B.pth --sizes 416

- inference: per-image forward time of the prepared model (what test.py, detect.py and the API run) at batch 1
  and 8, the compute floor measured in the same process (convolution FLOPs / this machine's fp32 matmul rate,
  1024^3 matmuls timed beside the model), their ratio, and the process's peak memory: medians over
  ``--rounds`` rounds that each run every row once, with the spread (lowest and highest ratio). ``--half``
  adds batch 1 in half precision ("1 h"); ``--compile`` batch 1 after torch.compile ("1 c", an experiment that
  did not pay); ``--baseline`` times each row on another checkout too; ``--pruned`` with ``--original`` adds
  the pruned model's speed-up beside its FLOPs reduction;
- detection: one decoded image -> final boxes (letterbox, forward, NMS) for yolov3-tiny at 416;
- training: images per second with the real loader (augmentation, 2 workers), and the split of a step into
  data wait, forward, loss, backward, optimiser and EMA;
- step: one training step (forward, loss, backward, optimiser; synthetic batch and targets, no data
  loading), its float32 floor (three times the forward's convolution FLOPs at the matmul rate) and the ratio,
  of this checkout against another (``--baseline DIR``, e.g. a clone of an older main), the two
  run alternately in rounds of fresh processes so a machine whose speed drifts hits both alike;
- layers (only with ``--only layers``): each layer of each model at batch 1, its time beside its FLOPs and the
  shares of both, to find the layers whose time does not follow their FLOPs (after pruning, say);
- profile (only with ``--only profile``): the operators that take the time, by own time, in each model's batch 1
  pass and in the default training step of the training cases among ``--models``.

Each case runs in a child process (``--case``), which prints one JSON line: that gives every case its own
peak memory, and lets the step case run unchanged against an older checkout (it uses only APIs both have).
These machines are noisy (±15 %): compare ratios from one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
INFERENCE_MODELS = ("yolov3", "yolov3-tiny", "res2net-yolov3", "res2net-yolov3-tiny")
TRAINING_CASES = (("yolov3-tiny", 416, 8), ("res2net-yolov3-tiny", 416, 8), ("yolov3", 320, 4))


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_seconds(fn) for _ in range(repeats))


def _matmul_flops_per_second() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024 ** 3 / _median_seconds(lambda: a @ b, repeats=5, warmup=2)


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _run_until_steady(fn, most: int = 6) -> None:
    """Run ``fn`` until a run faults in next to no memory (at most a hundredth of the first run's page faults), at
    most ``most`` times. The heap takes more than one pass to reach what a pass needs: at batch 8 and 416 the
    second pass of yolov3 still faults 100,000 pages in and runs 20 % slower than the third, yolov3-tiny's
    23,000 and 10 %, so timing from the second pass on put batch 8 behind batch 1."""
    before = _page_faults()
    fn()
    first = _page_faults() - before
    for _ in range(most - 1):
        before = _page_faults()
        fn()
        if _page_faults() - before <= first // 100:
            return


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(source: str):
    """A Darknet model from a cfg name under cfg/, a .cfg path or a .pth checkpoint."""
    from models import Darknet
    if source.endswith((".pth", ".pt")):
        from utils.darknet.checkpoint import model_from_file
        return model_from_file(source)[0]
    return Darknet(source if source.endswith(".cfg") else REPO / "cfg" / f"{source}.cfg")


def _convolution_flops(model, size: int) -> int:
    """2 * weights * output positions over every nn.Conv2d, blocks' inner ones included, at batch 1."""
    flops = []
    hooks = [m.register_forward_hook(lambda mod, args, out: flops.append(2 * mod.weight.numel() * out.shape[-2]
                                                                         * out.shape[-1]))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model.forward_heads(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return sum(flops)


def case_inference(source: str, size: int, batch: int, variant: str = "") -> dict:
    """``variant``: "half" for prepare_inference(half=True); "compile" for the prepared model after
    torch.compile (inductor, weights frozen), an experiment that did not pay (the README's speed section)."""
    model = _model(source).eval()
    flops = _convolution_flops(model, size)
    if variant == "half":
        model.prepare_inference(half=True)
    else:
        model.prepare_inference()  # as an older --baseline checkout has it too
    if variant == "compile":
        model = torch.compile(model, dynamic=False, options={"freezing": True})
    x = torch.rand(batch, 3, size, size)
    rates, times = [], []
    with torch.inference_mode():
        _run_until_steady(lambda: model(x))
        for _ in range(3 if batch == 1 else 2):  # the floor is measured between the model's runs
            rates.append(_matmul_flops_per_second())
            times.append(_median_seconds(lambda: model(x), repeats=3 if batch == 1 else 1, warmup=0))
    per_image = statistics.median(times) / batch
    floor = flops / statistics.median(rates)
    return {"ms_per_image": per_image * 1e3, "floor_ms": floor * 1e3, "ratio": per_image / floor,
            "gflops": flops / 1e9, "peak_mb": _peak_mb()}


def case_layers(source: str, size: int, passes: int = 30) -> dict:
    """Batch 1 of the prepared model, each of its layers timed on its own (hooks around every layer, medians over
    ``passes``), with the layer's FLOPs; what the layers leave of a whole pass is the [yolo] decode and the
    forward's own work."""
    from utils.darknet.summary import summarize
    model = _model(source).eval()
    rows = summarize(model, (size, size))
    model.prepare_inference()
    started: dict[int, float] = {}
    seconds: dict[int, list[float]] = {row.index: [] for row in rows}
    hooks = []
    for index, layer in enumerate(model.layers):
        hooks.append(layer.register_forward_pre_hook(lambda *_, i=index: started.__setitem__(i, time.perf_counter())))
        hooks.append(layer.register_forward_hook(
            lambda *_, i=index: seconds[i].append(time.perf_counter() - started[i])))
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        _run_until_steady(lambda: model(x))
        for times in seconds.values():
            times.clear()
        whole = [_seconds(lambda: model(x)) for _ in range(passes)]
    for hook in hooks:
        hook.remove()
    layers = [[row.index, row.kind, row.detail, row.output_shape, row.flops,
               statistics.median(seconds[row.index]) * 1e3 if seconds[row.index] else 0.0] for row in rows]
    return {"layers": layers, "forward_ms": statistics.median(whole) * 1e3}


def case_detect(source: str, size: int) -> dict:
    import numpy as np
    from utils.inference.load import detect, preprocess
    model = _model(source).eval()
    flops = _convolution_flops(model, size)  # before prepare_inference: its packed convs bypass nn.Conv2d's hooks
    model.prepare_inference()
    image = (np.random.default_rng(0).random((576, 768, 3)) * 255).astype(np.uint8)  # dog.jpg's size

    def boxes():
        batch, letterboxes = preprocess([image], size)
        return detect(model, batch, letterboxes, [image.shape[:2]])  # NmsFilter's defaults: 0.25, 0.45
    seconds = _median_seconds(boxes, repeats=7, warmup=2)
    floor = flops / _matmul_flops_per_second()
    return {"ms": seconds * 1e3, "floor_ms": floor * 1e3, "ratio": seconds / floor, "peak_mb": _peak_mb()}


def _synthetic_targets(batch: int, count: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randint(0, batch, (count, 1), generator=g).float(),
                      torch.randint(0, 80, (count, 1), generator=g).float(),
                      torch.rand(count, 2, generator=g) * 0.8 + 0.1, torch.rand(count, 2, generator=g) * 0.3 + 0.05], 1)


def _training_parts(model):
    """(loss, optimiser, EMA) from whichever layout this checkout has (utils/training/ or older utils/)."""
    try:
        from utils.training.loss import YOLOLoss
        from utils.training.optim import ModelEMA, build_optimizer
    except ImportError:  # an older checkout, run by --baseline
        from utils.loss import YOLOLoss
        from utils.optim import ModelEMA, build_optimizer
    return YOLOLoss(model.yolo_layers), build_optimizer(model, "sgd", 1e-4, 0.9, 5e-4), ModelEMA(model)


STEP_MODES = {"default": (False, False), "channels_last": (True, False), "channels_last_bf16": (True, True)}


def _training_step(source: str, size: int, batch: int, mode: str = "default"):
    """(model, one training step on a synthetic batch as train.py runs it): ``default`` (no flags),
    ``channels_last`` (--channels_last: ``prepare_training``) or ``channels_last_bf16`` (--channels_last --amp
    on CPU)."""
    channels_last, bf16 = STEP_MODES[mode]
    model = _model(source).train()
    if channels_last:
        model.prepare_training()
    loss_fn, optimizer, _ = _training_parts(model)
    x, targets = torch.rand(batch, 3, size, size), _synthetic_targets(batch)

    def step():
        with torch.autocast("cpu", enabled=bf16):
            heads = [h.float() for h in model(x)]
        loss = loss_fn(heads, targets, (size, size))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    return model, step


def case_step(source: str, size: int, batch: int, mode: str = "default", steps: int = 4) -> dict:
    """One training step (``_training_step``), timed once the heap has grown to what a step needs."""
    model, step = _training_step(source, size, batch, mode)
    _run_until_steady(step)
    seconds = _median_seconds(step, repeats=steps, warmup=0)
    # forward, input gradient and weight gradient: three times the forward's convolution FLOPs
    floor = 3 * batch * _convolution_flops(model, size) / _matmul_flops_per_second()
    return {"ms": seconds * 1e3, "img_per_s": batch / seconds, "floor_ms": floor * 1e3, "peak_mb": _peak_mb()}


def _top_operators(profiler, passes: int, count: int = 12) -> list[list]:
    """[operator, own ms a pass, share of all operators' own time, calls a pass] for the ``count`` costliest."""
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    return [[event.key, event.self_cpu_time_total / passes / 1e3, event.self_cpu_time_total / total,
             event.count / passes] for event in events[:count]]


def case_profile(source: str, size: int, batch: int, part: str = "inference") -> dict:
    """The operators that take the time in a pass through the prepared model (``inference``, 10 passes) or in a
    default training step (``step``, 3 steps), profiled once the heap is steady: while it still grows, the page
    faults land in the memory-bound operators (in a yolov3-tiny step profiled from its fourth step, the
    first layer's batch norm backward and zero-filling took 3.5x their steady time)."""
    from torch.profiler import profile
    if part == "step":
        _, run = _training_step(source, size, batch)
        passes = 3
    else:
        model = _model(source).eval()
        model.prepare_inference()
        x = torch.rand(batch, 3, size, size)
        passes = 10

        def run():
            with torch.inference_mode():
                model(x)
    _run_until_steady(run, most=10)
    before = _page_faults()
    with profile() as profiler:
        whole = [_seconds(run) for _ in range(passes)]
    return {"operators": _top_operators(profiler, passes), "ms": statistics.median(whole) * 1e3,
            "faults": (_page_faults() - before) / passes}


def _timed(split: dict[str, float], part: str, fn):
    start = time.perf_counter()
    result = fn()
    split[part] = split.get(part, 0.0) + time.perf_counter() - start
    return result


def _train_loader(size: int, batch: int, folder: Path):
    from utils.data.augment import Augment
    from utils.data.batching import BatchPlan, create_dataloader
    from utils.data.dataset import DetectionDataset
    from utils.data.synthetic import write_dataset
    data = write_dataset(folder, train=64, valid=1, size=size)
    dataset = DetectionDataset(data.parent / "train.txt", 4, Augment())
    return create_dataloader(dataset, BatchPlan(len(dataset), batch, [size], seed=0), workers=2)


def case_train(source: str, size: int, batch: int, steps: int = 6) -> dict:
    """Training as train.py --channels_last runs it, with the real loader: img/s and the mean split of a step."""
    from utils.darknet.cfg_edit import with_classes
    model = _model(source)
    from models import Darknet
    model = Darknet(with_classes(model.cfg, 4)).train()
    if hasattr(model, "prepare_training"):
        model.prepare_training()
    loss_fn, optimizer, ema = _training_parts(model)
    split: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        batches = iter(_train_loader(size, batch, Path(tmp)))
        for step in range(steps + 2):
            if step == 2:
                split.clear()  # the first steps warm up the workers and the allocator
            data = _timed(split, "data", lambda: next(batches))
            images = data.images.float() / 255
            heads = _timed(split, "forward", lambda: model(images))
            loss = _timed(split, "loss", lambda: loss_fn(heads, data.targets, (size, size)))
            _timed(split, "backward", lambda: (optimizer.zero_grad(), loss.total.backward()))
            _timed(split, "optimiser", optimizer.step)
            _timed(split, "ema", lambda: ema.update(model))
    split = {part: seconds / steps for part, seconds in split.items()}
    total = sum(split.values())
    return {"img_per_s": batch / total, **{f"{k}_ms": v * 1e3 for k, v in split.items()},
            "wait_share": split["data"] / total, "peak_mb": _peak_mb()}


CASES = {"inference": case_inference, "detect": case_detect, "step": case_step, "train": case_train,
         "layers": case_layers, "profile": case_profile}


def run_case(kind: str, args: list, repo: Path = REPO) -> dict:
    """One case in a fresh process of ``repo`` (this checkout, or --baseline's)."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, str(Path(__file__).resolve()), "--case", kind, *map(str, args)]
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"{kind} {args} in {repo} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _medians(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _inference_line(label: str, runs: list[dict], before: list[dict]) -> str:
    """One table row: medians over ``runs`` (and over ``before``, the baseline's), the ratio's spread."""
    r = _medians(runs)
    ratios = [run["ratio"] for run in runs]
    line = (f"{label}{r['ms_per_image']:>9.1f}{r['floor_ms']:>8.1f}{r['ratio']:>7.2f}"
            f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>11}{r['gflops']:>8.2f}{r['peak_mb']:>9.0f}")
    if before:
        b = _medians(before)
        line += f"{b['ms_per_image']:>9.1f}{b['ratio']:>7.2f}{r['ms_per_image'] / b['ms_per_image'] - 1:>+8.0%}"
    return line


def report_inference(models: list[str], sizes: list[int], variants: list[str], baseline: Path | None,
                     rounds: int) -> dict:
    """Each model at each size, batch 1 and 8, and batch 1 of each of ``variants`` ("half", "compile"), in
    ``rounds`` rounds that each run every row once (and, with ``baseline``, that checkout's right after it,
    in its own process with its own floor), so a drift of the machine's speed hits every row alike; prints
    medians and the spread of the ratio, and returns each row's median results."""
    rows = [(model, size, batch, variant) for model in models for size in sizes
            for batch, variant in [(1, ""), (8, "")] + [(1, variant) for variant in variants]]
    ours: dict[tuple, list[dict]] = {row: [] for row in rows}
    theirs: dict[tuple, list[dict]] = {row: [] for row in rows}
    for _ in range(rounds):
        for row in rows:
            model, size, batch, variant = row
            ours[row].append(run_case("inference", [model, size, batch] + ([variant] if variant else [])))
            if baseline and not variant:
                theirs[row].append(run_case("inference", [model, size, batch], baseline))
    print(f"{'model':<32}{'size':>5}{'batch':>6}{'ms/img':>9}{'floor':>8}{'ratio':>7}{'spread':>11}{'BFLOPs':>8}"
          f"{'peak MB':>9}" + (f"{'before':>9}{'ratio':>7}{'change':>8}" if baseline else ""))
    for (model, size, batch, variant), runs in ours.items():
        label = f"{batch} {variant[0]}" if variant else f"{batch}"  # h: half, c: compiled
        name = f"{Path(model).name:<32}{size:>5}{label:>6}"
        print(_inference_line(name, runs, theirs[model, size, batch, variant]))
    return {row: _medians(runs) for row, runs in ours.items()}


def report_pruning_speedup(medians: dict, original: str, pruned: str) -> None:
    """The pruned model's speed-up over its original next to its FLOPs reduction, per size and batch."""
    for (model, size, batch, variant), after in medians.items():
        before = medians.get((original, size, batch, variant))
        if model != pruned or before is None:
            continue
        speedup, cut = before["ms_per_image"] / after["ms_per_image"], before["gflops"] / after["gflops"]
        print(f"pruned @{size} batch {batch}{' ' + variant if variant else ''}: {speedup:.2f}x faster for "
              f"{cut:.2f}x fewer FLOPs, the speed-up {speedup / cut:.0%} of the FLOPs cut")


def report_layers(models: list[str], sizes: list[int]) -> None:
    """Per model and size: each layer's batch 1 time beside its FLOPs, and their shares of the whole, so the
    layers whose time does not follow their FLOPs (thin channels, large maps, call overhead) stand out."""
    for model in models:
        for size in sizes:
            r = run_case("layers", [model, size])
            total_ms, total_flops = r["forward_ms"], sum(layer[4] for layer in r["layers"])
            print(f"\n{Path(model).name} @{size}, batch 1: {total_ms:.2f} ms, {total_flops / 1e9:.3f} BFLOPs")
            print(f"{'layer':>5}  {'type':<14}{'detail':<13}{'output':>16}{'BFLOPs':>8}{'ms':>8}{'GFLOP/s':>9}"
                  f"{'time':>7}{'FLOPs':>7}")
            for index, kind, detail, (c, h, w), flops, ms in r["layers"]:
                rate = f"{flops / ms / 1e6:9.0f}" if flops and ms else f"{'':>9}"
                print(f"{index:5d}  {kind:<14}{detail:<13}{f'{w}x{h}x{c}':>16}{flops / 1e9:8.3f}{ms:8.3f}{rate}"
                      f"{ms / total_ms:7.1%}{flops / total_flops:7.1%}")
            rest = total_ms - sum(layer[5] for layer in r["layers"])
            print(f"{'':>5}  {'decode, glue':<14}{'':<13}{'':>16}{'':>8}{rest:8.3f}{'':>9}{rest / total_ms:7.1%}")


def _print_operators(title: str, result: dict) -> None:
    # the profiler's own allocations can make the heap grow again, and an operator that faults its output
    # in looks slower than it is: the faults say how far to trust the memory-bound rows
    print(f"\n{title}: {result['ms']:.1f} ms a pass (profiled), {result['faults']:.0f} page faults a pass")
    print(f"{'operator':<48}{'ms':>9}{'share':>8}{'calls':>7}")
    for name, ms, share, calls in result["operators"]:
        print(f"{name[:47]:<48}{ms:9.2f}{share:8.1%}{calls:7.0f}")


def report_profile(models: list[str], sizes: list[int]) -> None:
    """Top operators of each model's batch 1 pass at each size, and of a default training step for those of
    TRAINING_CASES among ``models``."""
    for model in models:
        for size in sizes:
            _print_operators(f"{Path(model).name} @{size}, batch 1, prepared",
                             run_case("profile", [model, size, 1, "inference"]))
    for model, size, batch in TRAINING_CASES:
        if model in models:
            _print_operators(f"{model} @{size}, batch {batch}, default training step",
                             run_case("profile", [model, size, batch, "step"]))


def report_train() -> None:
    print(f"{'model':<22}{'size':>5}{'batch':>6}{'img/s':>7}  split per step (ms)"
          f"{'':>38}{'wait':>6}{'peak MB':>9}")
    for model, size, batch in TRAINING_CASES:
        r = run_case("train", [model, size, batch])
        split = "  ".join(f"{k} {r[f'{k}_ms']:.0f}" for k in ("data", "forward", "loss", "backward", "optimiser",
                                                             "ema"))
        print(f"{model:<22}{size:>5}{batch:>6}{r['img_per_s']:>7.2f}  {split:<56}{r['wait_share']:>6.1%}"
              f"{r['peak_mb']:>9.0f}")


def report_steps(baseline: Path | None, rounds: int) -> None:
    """Step time per case: this checkout as train.py runs it by default, with --channels_last, and with
    --channels_last --amp (bfloat16), and (interleaved) the baseline's; medians over rounds."""
    runs = [("default", REPO, "default"), ("--channels_last", REPO, "channels_last"),
            ("--channels_last --amp (bf16)", REPO, "channels_last_bf16")]
    runs += [("baseline", baseline, "default")] if baseline else []
    for model, size, batch in TRAINING_CASES:
        times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        floors = []
        for _ in range(rounds):
            for name, repo, mode in runs:
                result = run_case("step", [model, size, batch, mode], repo)
                times[name].append(result["ms"])
                floors.append(result["floor_ms"])
        medians = {name: statistics.median(values) for name, values in times.items()}
        floor = statistics.median(floors)
        line = f"step {model:<20} @{size} b{batch}, fp32 floor {floor:.0f} ms: " + ", ".join(
            f"{name} {ms:.0f} ms ({batch / ms * 1e3:.2f} img/s, {ms / floor:.2f}x)" for name, ms in medians.items())
        if baseline:
            line += "; shorter than the baseline: " + ", ".join(
                f"{name} {1 - medians[name] / medians['baseline']:+.0%}" for name, _, _ in runs[:-1])
        print(line)


def _tune_allocator_as_the_scripts_do() -> None:
    """Every command line of a checkout that has utils/allocator.py runs with it (an older --baseline runs
    without, as its scripts did)."""
    try:
        from utils.allocator import tune_allocator
    except ImportError:
        return
    tune_allocator()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("inference", "detect", "train", "step", "layers", "profile"),
                        help="one part; layers (per-layer batch 1 times and FLOPs) and profile (top operators) "
                             "run only when named")
    parser.add_argument("--models", nargs="*", default=list(INFERENCE_MODELS),
                        help="cfg names or paths (none: only --original and --pruned)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[416, 320])
    parser.add_argument("--pruned", help="a pruned .pth (prune.py's pruned.pth) to add to the inference table")
    parser.add_argument("--original", help="the .pth it was pruned from, to compare speed-up with FLOPs")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare steps and inference with")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 100), metavar="N",
                        help="rounds of the inference table and of the step comparison (medians over them)")
    parser.add_argument("--half", action="store_true", help="add batch 1 with prepare_inference(half=True)")
    parser.add_argument("--compile", action="store_true", help="add batch 1 after torch.compile (an experiment)")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")  # the shipped cfgs' Darknet-only training keys
    if args.case:
        _tune_allocator_as_the_scripts_do()
        kind, *rest = args.case
        print(json.dumps(CASES[kind](rest[0], *(int(a) if a.isdigit() else a for a in rest[1:]))))
        return
    print(f"torch {torch.__version__}, 2 threads; each case in its own process")
    models = args.models + [m for m in (args.original, args.pruned) if m]
    if args.only in (None, "inference"):
        variants = [name for name, on in (("half", args.half), ("compile", args.compile)) if on]
        medians = report_inference(models, args.sizes, variants, args.baseline, args.rounds)
        if args.original and args.pruned:
            report_pruning_speedup(medians, args.original, args.pruned)
    if args.only in (None, "detect"):
        r = run_case("detect", ["yolov3-tiny", 416])
        print(f"detect yolov3-tiny @416, 768x576 image -> boxes: {r['ms']:.1f} ms, floor {r['floor_ms']:.1f} ms, "
              f"ratio {r['ratio']:.2f}")
    if args.only in (None, "train"):
        report_train()
    if args.only in (None, "step"):
        report_steps(args.baseline, args.rounds)
    if args.only == "layers":
        report_layers(models, args.sizes)
    if args.only == "profile":
        report_profile(models, args.sizes)


if __name__ == "__main__":
    main()

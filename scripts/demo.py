"""The main job on the embedded default.

Until training lands (issue 3) this exercises the Darknet core end to end: build res2net-yolov3 from
its cfg, print its layer table, save and reload its .weights byte for byte, check the fused,
channels-last inference path against the plain one, and, where ../shared is present, compare every
[yolo] tensor with the real Darknet program's output.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import Darknet  # noqa: E402

VECTORS = REPO.parent / "shared" / "darknet-vectors"


def compare_with_darknet() -> None:
    if not VECTORS.is_dir():
        print(f"(skipping the Darknet comparison: {VECTORS} is absent)")
        return
    for case in ("yolov3-tiny", "yolov3", "yolov3-spp"):
        folder = VECTORS / case
        index = json.loads((folder / "index.json").read_text())
        model = Darknet(folder / "model.cfg")
        model.load_darknet_weights(folder / "model.weights")
        x = torch.from_numpy(np.fromfile(folder / "input.f32", dtype="<f4").reshape(index["input"]["shape"]))
        with torch.no_grad():
            heads = model.eval().forward_heads(x)
        worst = 0.0
        for meta, head, yolo in zip(index["yolo"], heads, model.yolo_layers):
            ref = np.fromfile(folder / meta["output_file"], dtype="<f4").reshape(meta["shape_chw"])
            worst = max(worst, float(np.abs(yolo.activate(head)[0].numpy() - ref).max()))
        print(f"{case:<12} vs Darknet: {len(heads)} [yolo] outputs, max |difference| {worst:.2e}")


def main() -> None:
    torch.set_num_threads(2)
    model = Darknet(REPO / "cfg" / "res2net-yolov3.cfg").eval()
    print(model.summary((416, 416)).splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp) / "a.weights", Path(tmp) / "b.weights"
        model.save_darknet_weights(first)
        copy = Darknet(REPO / "cfg" / "res2net-yolov3.cfg")
        copy.load_darknet_weights(first)
        copy.save_darknet_weights(second)
        same = first.read_bytes() == second.read_bytes()
        print(f".weights round trip ({first.stat().st_size / 1e6:.0f} MB): byte-identical: {same}")
    x = torch.rand(1, 3, 416, 416)
    with torch.inference_mode():
        plain = model(x)
        model.prepare_inference()(x)
        start = time.perf_counter()
        fast = model(x)
        ms = (time.perf_counter() - start) * 1e3
    print(f"detections tensor {tuple(fast.shape)}; prepare_inference matches: "
          f"{torch.allclose(fast, plain, atol=1e-3, rtol=1e-3)}; {ms:.0f} ms per 416x416 image on CPU")
    compare_with_darknet()


if __name__ == "__main__":
    main()

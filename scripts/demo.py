"""The main job on the embedded default: generate the synthetic shapes dataset, train the small Res2Net
detector on it, evaluate it, and write annotated detections for the held-out images.

About 7 minutes on 2 CPU cores. Outputs go to runs/demo/expN (checkpoints, .weights, results.csv/png,
detections/). Where ../shared/darknet-vectors is present it also checks the Darknet core against the
real Darknet program's outputs.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

import detect
from models import Darknet
from utils.cli import ArgumentParser, claim_run_dir, run_main
from utils.errors import UserError
from utils.output_files import removed_on_failure
from utils.training.options import DEFAULT_DATA
from utils.training.run_files import BEST_CHECKPOINT, BEST_WEIGHTS, RESULTS, RESULTS_PLOT, RESULTS_TABLE
from utils.training.trainer import Trainer, TrainOptions

VECTORS = REPO.parent / "shared" / "darknet-vectors"


def compare_with_darknet() -> None:
    for case in ("yolov3-tiny", "yolov3", "yolov3-spp"):
        folder = VECTORS / case
        index = json.loads((folder / "index.json").read_text())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Darknet's own cfgs: their training-only keys are not news here
            model = Darknet(folder / "model.cfg")
        model.load_darknet_weights(folder / "model.weights")
        x = torch.from_numpy(np.fromfile(folder / "input.f32", dtype="<f4").reshape(index["input"]["shape"]))
        with torch.no_grad():
            heads = model.eval().forward_heads(x)
        worst = max(float(np.abs(yolo.activate(head)[0].numpy()
                                 - np.fromfile(folder / meta["output_file"], dtype="<f4").reshape(meta["shape_chw"])
                                 ).max())
                    for meta, head, yolo in zip(index["yolo"], heads, model.yolo_layers))
        print(f"  {case:<12} vs Darknet: every [yolo] output within {worst:.1e}")


def main() -> int:
    ArgumentParser(description=__doc__).parse_args()  # no options: --help describes the job, anything else is refused
    return run_main(run_demo)


def run_demo() -> int:
    start = time.perf_counter()
    torch.set_num_threads(2)
    run = claim_run_dir(Path("runs/demo"))
    # the default data: the trainer generates it on first use (400 train + 100 held-out images, seed 0)
    options = TrainOptions(model_def="cfg/res2net-yolov3-tiny.cfg", data_config=DEFAULT_DATA,
                           epochs=10, img_size=256, batch_size=16, optimizer="adam", lr=0.002, lr_policy="cosine",
                           evaluation_interval=5, output=str(run), n_cpu=2, seed=0)
    with removed_on_failure(run, RESULTS, claimed=True):
        summary = Trainer(options).run()
    trained = time.perf_counter() - start
    if detect.main(["--image_folder", detect.DEMO_IMAGES, "--weights_path", str(run / BEST_CHECKPOINT),
                    "--img_size", "256", "--output", str(run / "detections")]) != 0:
        raise UserError(f"detection with {run / BEST_CHECKPOINT} failed (its error is above)")
    print(f"\nmain job done in {time.perf_counter() - start:.0f} s (training and evaluation {trained:.0f} s): "
          f"res2net-yolov3-tiny reached mAP@0.5 {summary['best_map50']:.3f} on the held-out images")
    print(f"outputs: {run}/ ({', '.join((BEST_CHECKPOINT, BEST_WEIGHTS, RESULTS_TABLE, RESULTS_PLOT))}, detections/)")
    if VECTORS.is_dir():
        print("Darknet compatibility:")
        compare_with_darknet()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A seeded cfg fuzzer: mutations of the shipped cfgs, each built, class-adapted and run forward.

Every failure must be the project's own named error: a CfgError (file, line, layer) while building or
adapting, a ForwardError naming the layer while running. Anything else is a bug in the repo.

    python -m tests.cfg_fuzz --cases 4000        # the counts per outcome, and the first few bugs
"""
from __future__ import annotations

import argparse
import random
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.darknet.cfg import CfgError, parse_cfg
from utils.darknet.cfg_edit import with_classes
from utils.darknet.model import Darknet, ForwardError

REPO = Path(__file__).resolve().parents[1]
SEEDS = ("yolov3-tiny", "yolov4-tiny", "res2net-yolov3-tiny", "res2net-triangle-yolov3-tiny")
VALUES = ("0", "-1", "1", "2", "3", "7", "-3", "99999", "2147483648", "9223372036854775808", "1_6", "0x10",
          "\u0661\u0666", "nan", "inf", "-inf", "1e400", "0.5", "-0.5", "abc", "3,3", "1,,2", ",", "1e3",
          "linear", "leaky", "stage", "normal", "per_channel", "1,2,3,4,5,6,7,8,9", "10,13,nan,30", "0,0",
          "5,5", "-1,-2", "100", "-100", "32", "64", "1.5", "+4")
SECTIONS = ("convolutional", "route", "shortcut", "maxpool", "upsample", "yolo", "res2net", "triangle",
            "avgpool", "dropout", "netz")


@dataclass
class Case:
    text: str
    description: str


def _set_value(lines: list[str], rng: random.Random) -> str:
    keyed = [i for i, line in enumerate(lines) if "=" in line and not line.startswith("#")]
    i = rng.choice(keyed)
    key = lines[i].split("=")[0]
    lines[i] = f"{key}={rng.choice(VALUES)}"
    return f"line {i + 1}: {lines[i]}"


def _drop_line(lines: list[str], rng: random.Random) -> str:
    i = rng.randrange(len(lines))
    return f"dropped line {i + 1}: {lines.pop(i)}"


def _add_key(lines: list[str], rng: random.Random) -> str:
    headers = [i for i, line in enumerate(lines) if line.startswith("[")]
    i = rng.choice(headers)
    key = rng.choice(("filters", "size", "stride", "groups", "layers", "from", "mask", "num", "classes", "scale",
                      "planes", "stype", "padding", "scale_x_y", "anchors", "group_id", "widths", "inplanes"))
    lines.insert(i + 1, f"{key}={rng.choice(VALUES)}")
    return f"added after line {i + 1}: {lines[i + 1]}"


def _rename_section(lines: list[str], rng: random.Random) -> str:
    headers = [i for i, line in enumerate(lines) if line.startswith("[")]
    i = rng.choice(headers[1:])
    lines[i] = f"[{rng.choice(SECTIONS)}]"
    return f"line {i + 1}: {lines[i]}"


def _move_section(lines: list[str], rng: random.Random) -> str:
    headers = [i for i, line in enumerate(lines) if line.startswith("[")] + [len(lines)]
    k = rng.randrange(1, len(headers) - 1)
    section = lines[headers[k]:headers[k + 1]]
    del lines[headers[k]:headers[k + 1]]
    at = rng.choice([i for i, line in enumerate(lines) if line.startswith("[")][1:] + [len(lines)])
    lines[at:at] = section
    return f"moved {section[0]} from line {headers[k] + 1} to {at + 1}"


MUTATIONS = (_set_value, _set_value, _set_value, _drop_line, _add_key, _rename_section, _move_section)


def mutate(text: str, rng: random.Random) -> Case:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    done = [rng.choice(MUTATIONS)(lines, rng) for _ in range(rng.choice((1, 1, 2, 3)))]
    return Case("\n".join(lines) + "\n", "; ".join(done))


def outcome(case: Case, rng: random.Random) -> str:
    """'built', 'named cfg error', 'named forward error' — or 'BUG: ...' for anything else."""
    cfg = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = parse_cfg(case.text, "fuzz.cfg")
            adapted = with_classes(cfg, rng.choice((1, 3, 80)))  # train.py adapts before it builds
            model = Darknet(adapted if rng.random() < 0.5 else cfg).eval()
            with torch.no_grad():
                model(torch.rand(1, model.input_channels, 64, 64))
    except CfgError as err:
        return "named cfg error" if re.match(r"fuzz\.cfg(:\d+)?: ", str(err)) else f"BUG: unlocated {err}"
    except ForwardError as err:
        return "named forward error" if re.search(r"fuzz\.cfg:\d+: layer \d+ \[", str(err)) else f"BUG: {err}"
    except Exception as err:  # noqa: BLE001 - the point is to find what escapes unnamed
        return f"BUG: {type(err).__name__}: {err}"
    return "built"


def run(cases: int, seed: int = 0) -> tuple[Counter, list[tuple[Case, str]]]:
    rng = random.Random(seed)
    texts = {name: (REPO / "cfg" / f"{name}.cfg").read_text() for name in SEEDS}
    counts: Counter = Counter()
    bugs = []
    for _ in range(cases):
        case = mutate(texts[rng.choice(SEEDS)], rng)
        result = outcome(case, rng)
        counts[result if not result.startswith("BUG") else "BUG"] += 1
        if result.startswith("BUG"):
            bugs.append((case, result))
    return counts, bugs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    counts, bugs = run(args.cases, args.seed)
    print(f"{args.cases} mutations (seed {args.seed}): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for case, result in bugs[:20]:
        print(f"- {case.description}\n  {result[:300]}")


if __name__ == "__main__":
    main()

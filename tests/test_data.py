"""Datasets: .data files, label validation (every bad-data path), letterbox, augmentations that keep boxes
on their objects (checked against the transformed pixels), batching, multi-scale and DDP splits."""

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import REPO, stretched_dataset
from utils.boxes import Letterbox
from utils.data.augment import Augment, letterbox_image
from utils.data.batching import BatchPlan, RectPlan, evaluation_loader, multiscale_sizes, rect_size
from utils.data.config import DataError, DataWarning, parse_data_config
from utils.data.dataset import DetectionDataset, collate
from utils.data.labels import label_path, read_labels
from utils.data.synthetic import write_dataset
from utils.errors import UserError


def write_labels(tmp_path, text, name="a.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("line,problem", [
    ("0 0.5 0.5 0.2", "expected 5 fields"),
    ("4 0.5 0.5 0.2 0.2", "class 4 is not an integer in 0 .. 3"),
    ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not an integer"),
    ("-1 0.5 0.5 0.2 0.2", "class -1"),
    ("0 nan 0.5 0.2 0.2", "non-finite"),
    ("0 0.5 0.5 inf 0.2", "non-finite"),
    ("0 1.2 0.5 0.2 0.2", "normalised to [0, 1]"),
    ("0 0.5 0.5 0.0 0.2", "w, h > 0"),
    ("0 0.5 zero 0.2 0.2", "not a number"),
])
def test_malformed_label_lines_are_refused_with_file_and_line(tmp_path, line, problem):
    path = write_labels(tmp_path, f"1 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DataError, match=rf"{path}:2: .*{__import__('re').escape(problem)}"):
        read_labels(path, 4)


def test_labels_tolerate_float_noise_and_blank_lines(tmp_path):
    path = write_labels(tmp_path, "\n2 1.0000001 0.5 0.2 0.3\n\n")
    np.testing.assert_allclose(read_labels(path, 4), [[2, 1.0, 0.5, 0.2, 0.3]], rtol=1e-6)
    assert read_labels(tmp_path / "absent.txt", 4).shape == (0, 5)  # a negative image


def test_label_path_follows_darknet():
    assert str(label_path(__import__("pathlib").Path("/d/images/train/x.jpg"))) == "/d/labels/train/x.txt"
    assert str(label_path(__import__("pathlib").Path("/voc/JPEGImages/a.b.png"))) == "/voc/labels/a.b.txt"


def test_data_config_resolves_paths_next_to_it_and_checks_names(tmp_path):
    data = write_dataset(tmp_path / "set", train=3, valid=2, size=64)
    config = parse_data_config(data)
    assert config.classes == 4 and config.train == tmp_path / "set" / "train.txt"
    assert config.names == ["circle", "rectangle", "triangle", "cross"]
    data.write_text(data.read_text().replace("classes=4", "classes=5"))
    with pytest.raises(DataError, match="classes=5 but .*lists 4 names"):
        parse_data_config(data)
    data.write_text("classes=4\ntrain=train.txt\n")
    with pytest.raises(DataError, match="missing 'valid='"):
        parse_data_config(data)
    for key in ("names", "train", "valid"):  # an empty value would be the working directory
        data.write_text(f"classes=4\ntrain=train.txt\nvalid=valid.txt\nnames=shapes.names\n{key}=\n".replace(
            f"{key}={key}.txt\n" if key != "names" else "names=shapes.names\n", "", 1))
        with pytest.raises(DataError, match=rf"shapes\.data:4: {key}= is empty; name a file or folder"):
            parse_data_config(data)


def test_a_data_entry_found_in_the_working_directory_and_beside_the_data_file_is_warned_of(tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "set", train=3, valid=2, size=64)  # its .data says train=train.txt
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_data_config(data).train == tmp_path / "set" / "train.txt"  # only beside it: no warning
    (tmp_path / "train.txt").write_text("elsewhere.jpg\n")
    with pytest.warns(DataWarning, match=r"set/shapes\.data:\d+: train=train\.txt is read from the working "
                                         r"directory \(.*\), not from beside the \.data file"):
        assert parse_data_config(data).train == Path("train.txt")


def test_data_config_comments_are_whole_lines_or_after_a_space(tmp_path):
    data = write_dataset(tmp_path / "set#1", train=3, valid=2, size=64)
    text = data.read_text()
    data.write_text("# my set\n; as Darknet allows\n" + text.replace("classes=4", "classes=4  # four shapes")
                    .replace("train=", f"train={tmp_path / 'set#1'}/"))
    config = parse_data_config(data)
    assert config.classes == 4 and config.train == tmp_path / "set#1" / "train.txt"
    data.write_text(text + "classes=5\n")
    with pytest.raises(DataError, match=r"shapes\.data:\d+: classes= is given again \(first on line 1\)"):
        parse_data_config(data)


def test_data_config_warns_of_keys_it_does_not_know_and_not_of_darknets_own(tmp_path):
    data = write_dataset(tmp_path / "set", train=3, valid=2, size=64)
    data.write_text(data.read_text() + "eval=coco\nnmaes=shapes.names\ncolour=red\n")
    with pytest.warns(DataWarning) as caught:
        assert parse_data_config(data).classes == 4
    assert [str(w.message) for w in caught] == [
        f"{data}:7: unknown key nmaes= is ignored; did you mean names=?",
        f"{data}:8: unknown key colour= is ignored; the keys read are classes, train, valid, names"]
    data.write_text(data.read_text().replace("names=shapes.names\n", "", 1))
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"missing 'names='.*; nmaes= on line 6 looks "
                                                                   r"like a typo of it"):
        parse_data_config(data)


def test_empty_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "list.txt").write_text("\n\n")
    with pytest.raises(DataError, match="the image list is empty"):
        DetectionDataset(tmp_path / "list.txt", 1)


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_unreadable_image_is_skipped_with_a_warning(tmp_path, mosaic):
    root = tmp_path / "set"
    write_dataset(root, train=2, valid=1, size=64)
    (root / "images" / "train" / "00001.jpg").write_bytes(b"not a jpeg")
    augment = Augment(mosaic=mosaic) if mosaic else None
    dataset = DetectionDataset(root / "train.txt", 4, augment)
    with pytest.warns(UserWarning, match="skipping unreadable image .*00001.jpg"):
        batch = collate([dataset[(0, (64, 64), 0)], dataset[(1, (64, 64), 0)]])
    assert len(batch) == 1 and batch.skipped == [str(root / "images" / "train" / "00001.jpg")]


@pytest.mark.parametrize("augment", [None, Augment(mosaic=0.0), Augment(mosaic=1.0)])
def test_cached_images_give_the_same_samples_and_stay_unchanged(tmp_path, augment):
    root = tmp_path / "set"
    write_dataset(root, train=4, valid=1, size=64, seed=3)
    (root / "images" / "train" / "00002.jpg").write_bytes(b"not a jpeg")
    plain, cached = (DetectionDataset(root / "train.txt", 4, augment) for _ in range(2))
    with pytest.warns(UserWarning, match="skipping unreadable image .*00002.jpg"):
        held = cached.cache_images("train", budget=None)
    assert held == sum(cv2.imread(str(path)).nbytes for path in cached.images if path.name != "00002.jpg")
    assert all(not image.flags.writeable for image in cached.cached if image is not None)
    copies = [image.copy() for image in cached.cached if image is not None]
    items = [(index, (side, side), seed) for index in range(4) for side, seed in ((64, 1), (96, 2))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the unreadable image, read again by the plain dataset
        for item in items:
            want, got = plain[item], cached[item]
            assert (want.image is None) == (got.image is None) and (want.targets == got.targets).all(), item
            assert want.image is None or (want.image == got.image).all(), item
    assert all((copy == image).all() for copy, image in zip(copies, [i for i in cached.cached if i is not None]))


def test_caching_shows_its_progress_only_where_asked(tmp_path, capsys):
    root = tmp_path / "set"
    write_dataset(root, train=2, valid=1, size=64)
    DetectionDataset(root / "train.txt", 4).cache_images("train", budget=None)
    assert "caching train images" in capsys.readouterr().err
    DetectionDataset(root / "train.txt", 4).cache_images("train", budget=None, show_progress=False)  # DDP rank > 0
    assert capsys.readouterr().err == ""


def test_the_memory_available_is_the_machines_or_a_containers_limit_if_lower(tmp_path, monkeypatch):
    from utils.data import cache
    (tmp_path / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    (tmp_path / "max").write_text("max\n")  # cgroup v2 without a limit
    (tmp_path / "current").write_text("1000\n")
    monkeypatch.setattr(cache, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(cache, "CGROUP_FILES", ((str(tmp_path / "max"), str(tmp_path / "current")),))
    assert cache.memory_available() == 4000000 * 1024
    (tmp_path / "max").write_text("2000000000\n")
    assert cache.memory_available() == 2000000000 - 1000
    monkeypatch.setattr(cache, "MEMINFO", tmp_path / "absent")
    monkeypatch.setattr(cache, "CGROUP_FILES", ())
    assert cache.memory_available() is None


def test_a_cache_past_its_memory_budget_is_refused_and_not_kept(tmp_path):
    root = tmp_path / "set"
    write_dataset(root, train=3, valid=1, size=64)
    dataset = DetectionDataset(root / "train.txt", 4)
    with pytest.raises(UserError, match=r"--cache_images: the first 2 of 3 train images already take 0\.00 GB "
                                        r"decoded, more than the 0\.00 GB left to the cache \(70% of the memory "
                                        r"available at start, shared among this machine's training processes"):
        dataset.cache_images("train", budget=64 * 64 * 3 + 1)
    assert dataset.cached is None


def test_letterbox_places_the_image_and_inverts_exactly():
    image = np.zeros((50, 100, 3), np.uint8)
    image[10:20, 30:60] = 255
    canvas, box = letterbox_image(image, (64, 64))
    assert canvas.shape == (64, 64, 3) and (box.pad_x, box.pad_y) == (0.0, 16.0)
    ys, xs = np.nonzero(canvas[..., 0] > 200)
    mapped = box.to_network(torch.tensor([[30.0, 10, 60, 20]]))[0]
    assert abs(xs.min() - mapped[0]) <= 1 and abs(xs.max() + 1 - mapped[2]) <= 1
    assert abs(ys.min() - mapped[1]) <= 1 and abs(ys.max() + 1 - mapped[3]) <= 1
    back = box.to_original(mapped[None])[0]
    torch.testing.assert_close(back, torch.tensor([30.0, 10, 60, 20]))
    stretched = Letterbox.fit((50, 100), (64, 64), keep_ratio=False)
    torch.testing.assert_close(stretched.to_original(stretched.to_network(torch.tensor([[1.0, 2, 3, 4]]))),
                               torch.tensor([[1.0, 2, 3, 4]]))


@pytest.fixture
def white_boxes(tmp_path):
    """Images with white rectangles on black, labels exact: any transform must keep boxes on the white."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    names = []
    for i in range(6):
        h, w = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        image = np.zeros((h, w, 3), np.uint8)
        lines = []
        for _ in range(2):
            bw, bh = int(rng.integers(12, w // 2)), int(rng.integers(12, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            image[y:y + bh, x:x + bw] = 255
            lines.append(f"0 {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}")
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), image)
        (tmp_path / "labels" / f"{i}.txt").write_text("\n".join(lines))
        names.append(f"images/{i}.png")
    (tmp_path / "list.txt").write_text("\n".join(names))
    return tmp_path / "list.txt"


def white_inside(image, target, size):
    _, cx, cy, w, h = target * np.array([1, size, size, size, size])
    x1, y1, x2, y2 = int(round(cx - w / 2)), int(round(cy - h / 2)), int(round(cx + w / 2)), int(round(cy + h / 2))
    margin = 1 if min(x2 - x1, y2 - y1) > 4 else 0  # interpolation blurs one pixel at the edges
    inner = image[:, y1 + margin:y2 - margin, x1 + margin:x2 - margin]
    return (inner > 200).mean() if inner.size else 0.0


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_augmented_boxes_stay_on_their_objects(white_boxes, mosaic):
    augment = Augment(hue=0, saturation=1, exposure=1, flip=True, scale=0.3, translate=0.2, mosaic=mosaic)
    dataset = DetectionDataset(white_boxes, 1, augment)
    checked = 0
    for seed in range(12):
        sample = dataset[(seed % 6, (96, 96), seed)]
        assert sample.image.shape == (3, 96, 96)
        for target in sample.targets:
            assert 0 <= target[1] - target[3] / 2 + 1e-6 and target[1] + target[3] / 2 <= 1 + 1e-6
            # overlapping rectangles can put black inside only where boxes of this image do not overlap
            small = min(target[3], target[4]) * 96 < 8  # a pixel of rounding is a large share of a tiny box
            assert white_inside(sample.image, target, 96) > (0.8 if small else 0.9), (seed, target)
            checked += 1
    assert checked > 12


def test_colour_jitter_keeps_the_geometry(white_boxes):
    geometry = dict(flip=False, scale=0.3, translate=0.2)
    plain = DetectionDataset(white_boxes, 1, Augment(hue=0, saturation=1, exposure=1, **geometry))[(0, (96, 96), 3)]
    jittered = DetectionDataset(white_boxes, 1, Augment(hue=0.1, saturation=1.5, exposure=1.5,
                                                        **geometry))[(0, (96, 96), 3)]
    np.testing.assert_array_equal(jittered.targets, plain.targets)
    assert not np.array_equal(jittered.image, plain.image)


def test_batches_share_one_size_and_multiscale_changes_it():
    plan = BatchPlan(100, 4, multiscale_sizes(320), seed=1, size_every=2)
    batches = list(plan)
    assert len(batches) == 25
    assert all(len({size for _, size, _ in batch}) == 1 for batch in batches)
    sizes = [batch[0][1][0] for batch in batches]
    assert all(batch[0][1] == (s, s) for batch, s in zip(batches, sizes))
    assert all(s % 32 == 0 and 224 <= s <= 480 for s in sizes) and len(set(sizes)) > 1
    assert sizes[0] == sizes[1] and sizes[2] == sizes[3]
    again = list(BatchPlan(100, 4, multiscale_sizes(320), seed=1, size_every=2))
    assert again == batches  # seeds and sizes do not depend on anything but (seed, epoch)
    plan.set_epoch(1)
    assert list(plan) != batches


def test_ranks_split_each_epoch_and_agree_on_sizes():
    plans = [BatchPlan(10, 2, [320, 416], seed=3, rank=r, world_size=2) for r in range(2)]
    per_rank = [[i for batch in plan for i, _, _ in batch] for plan in plans]
    assert len(per_rank[0]) == len(per_rank[1]) == 5
    assert sorted(per_rank[0] + per_rank[1]) == list(range(10))
    assert [b[0][1] for b in plans[0]] == [b[0][1] for b in plans[1]]


def test_rect_batches_hold_images_of_like_shape_at_the_square_letterbox_scale(tmp_path):
    assert rect_size(0.5, 0.75, 416) == (320, 416)  # landscape: 416 * 0.75 = 312, up to a multiple of 32
    assert rect_size(2.0, 4.0, 416) == (416, 224)  # portrait: 416 / 2 = 208
    assert rect_size(0.5, 2.0, 416) == (416, 416) == rect_size(1.0, 1.0, 416)  # a mix, or squares
    sizes = [(96, 96), (96, 48), (48, 96), (96, 72), (64, 96)]  # width, height
    config = stretched_dataset(tmp_path / "set", sizes)
    dataset = DetectionDataset(config.valid, config.classes)
    assert dataset.shapes() == [(h, w) for w, h in sizes]
    batches = list(RectPlan(dataset.shapes(), 2, 192))
    assert [[i for i, _, _ in batch] for batch in batches] == [[1, 3], [0, 4], [2]]  # by height / width
    assert [batch[0][1] for batch in batches] == [(160, 192), (192, 192), (192, 96)]
    for batch in batches:
        for index, size, seed in batch:
            square, rect = dataset[(index, (192, 192), seed)], dataset[(index, size, seed)]
            assert rect.image.shape[1:] == size
            assert (rect.letterbox.scale_x, rect.letterbox.scale_y) == (square.letterbox.scale_x,
                                                                        square.letterbox.scale_y)
    loaded = list(evaluation_loader(dataset, 2, 192, workers=0, rect=True))
    assert [batch.indices for batch in loaded] == [[1, 3], [0, 4], [2]]
    assert [tuple(batch.images.shape[-2:]) for batch in loaded] == [(160, 192), (192, 192), (192, 96)]


def test_rect_training_batches_are_fixed_shuffled_and_the_same_shape_on_every_rank():
    shapes = [(h, w) for h, w in [(90, 160), (160, 90), (100, 100), (120, 160), (300, 100), (150, 200), (60, 160),
                                  (200, 150), (140, 160), (80, 160)]] + [None]  # the last one unreadable
    plan = BatchPlan(len(shapes), 2, [320], seed=4)
    plan.use_shapes(shapes)
    epochs = []
    for epoch in range(3):
        plan.set_epoch(epoch)
        epochs.append(list(plan))
    assert len(plan) == 6 and all(len(batches) == 6 for batches in epochs)
    for batches in epochs:
        assert sorted(i for batch in batches for i, _, _ in batch) == list(range(len(shapes)))
        for batch in batches:
            assert len({size for _, size, _ in batch}) == 1
            height, width = batch[0][1]
            for index, _, _ in batch:  # each image fits at its square letterbox scale, with less padding
                h, w = shapes[index] or (1, 1)
                assert min(height / h, width / w) * max(h, w) >= 320 - 1e-6
            assert height * width <= 320 * 320 and height % 32 == width % 32 == 0
    compositions = [sorted(tuple(i for i, _, _ in batch) for batch in batches) for batches in epochs]
    assert compositions[0] == compositions[1] == compositions[2]  # fixed batches, as sorted by aspect ratio
    assert [batch[0][0] for batch in epochs[0]] != [batch[0][0] for batch in epochs[1]]  # in another order
    # height / width sorted: .375 .5 | .5625 .75 | .75 .875 | 1 1.33 | 1.78 3 | unreadable (last, and square)
    assert plan.rect_shapes(320) == [(160, 320), (256, 320), (288, 320), (320, 320), (320, 192), (320, 320)]
    assert sorted(batch[0][1] for batch in epochs[0]) == sorted(plan.rect_shapes(320))
    assert plan.rect_shapes(416) == [(224, 416), (320, 416), (384, 416), (416, 416), (416, 256), (416, 416)]
    ranks = [BatchPlan(len(shapes), 2, [320, 416], seed=4, rank=r, world_size=2) for r in range(2)]
    for rank in ranks:
        rank.use_shapes(shapes)
    per_rank = [list(p) for p in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == 3
    assert [b[0][1] for b in per_rank[0]] == [b[0][1] for b in per_rank[1]]  # one shape a step on every rank
    assert set(i for batches in per_rank for batch in batches for i, _, _ in batch) == set(range(len(shapes)))
    alone = BatchPlan(1, 2, [320], world_size=3, rank=2)
    alone.use_shapes([(10, 20)])
    assert next(iter(alone))[0][:2] == (0, (160, 320))  # a rank past the one image repeats it
    with pytest.raises(ValueError, match="2 shapes for a plan of 1 samples"):
        alone.use_shapes([(10, 20), None])
    mixed = BatchPlan(4, 4, [320])
    mixed.use_shapes([(90, 160), None, (90, 160), (90, 160)])  # an unreadable image does not widen the shape
    assert next(iter(mixed))[0][1] == (192, 320)


def test_collate_builds_targets_with_image_indices(tmp_path):
    write_dataset(tmp_path / "set", train=3, valid=1, size=64, seed=4)
    dataset = DetectionDataset(tmp_path / "set" / "train.txt", 4)
    samples = [dataset[(i, (64, 64), 0)] for i in range(3)]
    batch = collate(samples)
    assert batch.images.shape == (3, 3, 64, 64) and batch.images.dtype == torch.uint8
    counts = [len(s.targets) for s in samples]
    assert batch.targets[:, 0].tolist() == [i for i, n in enumerate(counts) for _ in range(n)]


@pytest.mark.parametrize("encode,problem", [
    (lambda text: text.encode("utf-16"), r"a.txt:1: the label file is not UTF-8 text \(it looks like UTF-16\)"),
    (lambda text: ("# caf\xe9\n" + text).encode("latin-1"), r"a.txt:1: the label file is not UTF-8 text: byte 0xe9"),
    (lambda text: b"PK\x03\x04\x80" + text.encode(),
     r"a.txt: the label file is a zip archive, as a PyTorch \.pth is, not text"),
])
def test_text_files_must_be_utf8_and_say_so(tmp_path, encode, problem):
    path = tmp_path / "a.txt"
    path.write_bytes(encode("0 0.5 0.5 0.2 0.2\n"))
    with pytest.raises(DataError, match=problem):
        read_labels(path, 4)


def test_a_byte_order_mark_is_accepted_everywhere(tmp_path):
    data = write_dataset(tmp_path / "set", train=2, valid=1, size=64)
    for path in [data, tmp_path / "set" / "train.txt", tmp_path / "set" / "shapes.names",
                 *(tmp_path / "set" / "labels" / "train").glob("*.txt")]:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    config = parse_data_config(data)
    assert config.names[0] == "circle" and config.classes == 4
    dataset = DetectionDataset(config.train, config.classes)
    assert sum(len(labels) for labels in dataset.labels) > 0


def test_folders_and_python_only_numbers_are_refused_by_name(tmp_path):
    (tmp_path / "labels.txt").mkdir()
    with pytest.raises(DataError, match=r"labels.txt: is a folder, expected a label file"):
        read_labels(tmp_path / "labels.txt", 4)
    path = write_labels(tmp_path, "0 0.2_5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"a.txt:1: not a number in '0 0.2_5 0.5 0.2 0.2'"):
        read_labels(path, 4)
    data = write_dataset(tmp_path / "set", train=1, valid=1, size=64)
    data.write_text(data.read_text().replace("classes=4", "classes=\u0664"))
    with pytest.raises(DataError, match="classes must be a positive integer"):
        parse_data_config(data)


def test_letterbox_takes_any_aspect_ratio():
    strip = np.full((20, 20000, 3), 200, np.uint8)
    canvas, box = letterbox_image(strip, (64, 64))
    assert canvas.shape == (64, 64, 3) and box.scale_y > 0
    tall = np.full((5000, 3, 3), 10, np.uint8)
    assert letterbox_image(tall, (32, 32))[0].shape == (32, 32, 3)


def test_the_synthetic_set_command_checks_its_flags_and_never_writes_into_an_earlier_set(tmp_path, capsys):
    from utils.data.synthetic import main
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--train", "2", "--valid", "1", "--size", "64"]) == 0
    listed = (out / "train.txt").read_text()
    assert listed.count("\n") == 2 and (out / "shapes.data").is_file()
    assert main(["--out", str(out), "--train", "1", "--valid", "1", "--size", "64"]) == 1
    assert f"error: --out {out} already holds results" in capsys.readouterr().err
    assert (out / "train.txt").read_text() == listed
    assert main(["--out", str(out), "--train", "1", "--valid", "1", "--size", "64", "--exist_ok"]) == 0
    assert (out / "train.txt").read_text().count("\n") == 1
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "other"), "--size", "0"])
    assert stop.value.code == 2 and "--size: expected an integer in 32 .. 8192, got 0" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_the_shipped_coco_names_fit_the_shipped_coco_cfgs():
    from models import Darknet
    from utils.inference.load import class_names
    names = class_names(REPO / "data" / "coco.names", None, 80)  # as detect.py --class_path reads it
    assert names[0] == "person" and names[79] == "toothbrush" and len(set(names)) == 80
    with torch.device("meta"):
        assert Darknet(REPO / "cfg" / "yolov3.cfg").num_classes == len(names)


def test_shared_work_joins_every_processes_share_in_item_order(monkeypatch):
    from utils.training import distributed
    from utils.training.distributed import Distributed
    world = [Distributed(world_size=3, rank=rank) for rank in range(3)]
    computed = {}

    def square(indices):
        computed[tuple(indices)] = True
        return [i * i for i in indices]

    def all_gather_object(parts, mine):  # what each of the three processes computes for its share
        parts[:] = [square(range(rank, 8, 3)) for rank in range(3)]
    monkeypatch.setattr(distributed.dist, "all_gather_object", all_gather_object)
    assert world[1].shared_work(8, square) == [i * i for i in range(8)]
    assert {(0, 3, 6), (1, 4, 7), (2, 5)} <= set(computed)  # each process its every third item
    assert Distributed().shared_work(5, square) == [0, 1, 4, 9, 16]

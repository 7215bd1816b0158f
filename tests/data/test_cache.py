"""`inception prepare`: the pre-resized cache round trip, in both layouts and from every source."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inception.bench import bench_pipeline, format_pipeline
from inception.cli import main
from inception.config import DataCfg
from inception.data import build_datasets
from inception.data.cache import MANIFEST, prepare
from inception.errors import UserError

from .conftest import IDENTITY

IMAGEWOOF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imagewoof-sample.tar.gz"


def _tree(root: Path, sizes=((48, 40), (40, 56))) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for c in ("cat", "dog", "eel"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=92)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).convert("CMYK").save(root / "train/eel/cmyk.jpg")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


@pytest.mark.parametrize("layout", ["folder", "shards"])
def test_round_trip_gives_the_same_classes_and_images(tmp_path, layout):
    src = _tree(tmp_path / "src")
    summary = prepare(src, tmp_path / "cache", max_size=64, layout=layout, workers=2, progress=False)
    assert summary["splits"] == {"train": 10, "val": 6} and summary["skipped"] == 1   # 9 + cmyk; broken skipped
    assert "broken.jpg" in (tmp_path / "cache" / "skipped.txt").read_text()
    (src / "train" / "dog" / "broken.jpg").unlink()
    cfg = dict(dataset="folder", image_size=None, augment="none", pipeline="torchvision")
    a_train, a_val = build_datasets(DataCfg(data_dir=str(src), **cfg), IDENTITY)
    b_train, b_val = build_datasets(DataCfg(data_dir=str(tmp_path / "cache"), **cfg), IDENTITY)
    assert a_train.classes == b_train.classes == ["cat", "dog", "eel"]
    for a, b in ((a_train, b_train), (a_val, b_val)):
        assert sorted(a.targets) == sorted(b.targets) and len(a) == len(b)
    ours = {}
    for i in range(len(b_train)):
        x, y = b_train[i]
        ours.setdefault(y, []).append(x)
    theirs = {}
    for i in range(len(a_train)):
        x, y = a_train[i]
        theirs.setdefault(y, []).append(x)
    inexact = 0
    for y in theirs:      # every cached image equals one source image (order-free)
        assert len(ours[y]) == len(theirs[y])
        for x2 in ours[y]:
            best = min((x1 - x2).abs().max().item() for x1 in theirs[y] if x1.shape == x2.shape)
            assert best < 0.2
            inexact += best > 1e-6
    assert inexact <= 1      # only the CMYK JPEG was re-encoded (as RGB); the rest are byte copies


def test_images_are_resized_to_max_size_and_training_reads_the_cache(tmp_path):
    src = _tree(tmp_path / "src", sizes=((200, 120),))
    (src / "train" / "dog" / "broken.jpg").unlink()
    prepare(src, tmp_path / "c", max_size=60, layout="shards", workers=1, progress=False)
    train, val = build_datasets(DataCfg(dataset="folder", data_dir=str(tmp_path / "c"), image_size=32), IDENTITY)
    assert train.normalize is not None and train.classes == ["cat", "dog", "eel"]
    x, _ = val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    shapes = set()
    for i in range(len(train)):
        with Image.open(io.BytesIO(bytes(train.encoded(i)))) as im:
            shapes.add(im.size)
    assert (100, 60) in shapes and all(min(s) <= 60 for s in shapes)
    # list-dataset view of the same cache, and a split it does not have
    with pytest.raises(UserError, match="has no split 'test'"):
        build_datasets(DataCfg(dataset="list", data_dir=str(tmp_path / "c"), val_split="test"), IDENTITY)


def test_list_source_keeps_numeric_label_order_and_archive_source(tmp_path):
    """A list dataset with 12 classes: folder names '10' sort before '2', but labels stay."""
    root = tmp_path / "lst"
    rng = np.random.default_rng(1)
    lines = []
    for label in range(12):
        p = root / "imgs" / f"{label}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        smooth = np.linspace(0, 255, 20 * 20 * 3).reshape(20, 20, 3) * rng.uniform(0.3, 1, 3)   # JPEG-friendly
        Image.fromarray(smooth.astype(np.uint8)).save(p)
        lines.append(f"imgs/{label}.png {label}")
    (root / "train_list.txt").write_text("\n".join(lines) + "\n")
    (root / "val_list.txt").write_text("\n".join(lines[:3]) + "\n")
    prepare(root, tmp_path / "c", max_size=64, workers=1, progress=False)
    train, _ = build_datasets(DataCfg(dataset="list", data_dir=str(tmp_path / "c"), pipeline="torchvision",
                                      augment="none", image_size=20), IDENTITY)
    src, _ = build_datasets(DataCfg(dataset="list", data_dir=str(root), pipeline="torchvision",
                                    augment="none", image_size=20), IDENTITY)
    assert train.classes == src.classes == [str(i) for i in range(12)]
    for i in range(12):
        assert train[i][1] == src[i][1] == i
        assert (train[i][0] - src[i][0]).abs().mean() < 0.03     # PNG re-encoded as JPEG q90
    # the same folders inside a .tar.gz, read as a stream
    tar_path = tmp_path / "d.tar.gz"
    tree = _tree(tmp_path / "t")
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(tree, arcname="top")
    s = prepare(tar_path, tmp_path / "from-tar", max_size=64, workers=2, progress=False)
    assert s["splits"] == {"train": 10, "val": 6} and s["classes"] == 3 and s["skipped"] == 1


def test_prepare_errors_and_cli(tmp_path, capsys):
    src = _tree(tmp_path / "src")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(UserError, match="is not an inception cache"):
        prepare(src, tmp_path / "full", progress=False)
    with pytest.raises(UserError, match="does not exist"):
        prepare(tmp_path / "nowhere", tmp_path / "c", progress=False)
    assert main(["prepare", str(src), str(tmp_path / "c"), "--max-size", "32", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "train 10, val 6 images in 3 classes" in out and "skipped 1 unreadable" in out
    assert (tmp_path / "c" / MANIFEST).is_file()
    assert main(["prepare", str(src), str(tmp_path / "c"), "--format", "shards", "--workers", "1"]) == 0   # redo
    assert not (tmp_path / "c" / "train").exists() and (tmp_path / "c" / "train-00000.bin").is_file()


def test_bench_pipeline_against_the_torchvision_baseline(tmp_path, capsys):
    src = _tree(tmp_path / "src", sizes=((64, 48), (48, 64)))
    (src / "train" / "dog" / "broken.jpg").unlink()
    r = bench_pipeline(src, pipeline="train", image_size=32, batch_size=4, workers=1, steps=2, rounds=2)
    for key in ("inception", "inception+normalize", "torchvision"):
        assert r[key]["img_per_s"] > 0 and len(r[key]["rounds"]) == 2
    assert r["ratio"] > 0 and r["inception"]["img_per_s_per_worker"] == r["inception"]["img_per_s"]
    # same seeds, same crops: the normalized outputs agree with the baseline's
    assert r["max_mean_diff"] < 0.05 and r["max_std_diff"] < 0.05 and r["max_class_share_diff"] < 1e-9
    assert "x the torchvision baseline" in format_pipeline(r)
    assert main(["bench", "--data", str(src), "--pipeline", "eval", "--image-size", "32", "--batch-size", "3",
                 "--workers", "0", "--rounds", "1", "--data-steps", "2"]) == 0
    assert "per worker" in capsys.readouterr().out
    assert main(["bench", "--pipeline", "train"]) == 2
    assert main(["bench"]) == 2


@pytest.mark.skipif(not IMAGEWOOF.is_file(), reason="needs ../shared/data/imagewoof-sample.tar.gz")
def test_real_photographs_match_the_baseline_statistics(tmp_path):
    """Imagewoof (real photographs, short side 320): the cache from the archive, then the
    fast pipeline's eval outputs against torchvision's, and the train class balance."""
    s = prepare(IMAGEWOOF, tmp_path / "iw", max_size=320, workers=2, progress=False)   # no resizing: copies
    assert s["splits"] == {"train": 1000, "val": 500} and s["skipped"] == 0
    r = bench_pipeline(tmp_path / "iw", pipeline="eval", batch_size=50, workers=2, steps=2, rounds=1)
    assert r["max_mean_diff"] < 0.01 and r["max_std_diff"] < 0.01 and r["max_class_share_diff"] < 1e-9
    r = bench_pipeline(tmp_path / "iw", pipeline="train", batch_size=50, workers=2, steps=2, rounds=1)
    assert r["max_mean_diff"] < 0.05 and r["max_std_diff"] < 0.05
    assert all(abs(v - 0.1) < 0.02 for v in r["inception+normalize"]["class_share"].values())

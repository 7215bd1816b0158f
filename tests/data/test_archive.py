"""CIFAR-style class folders read whole into memory: from a .tar.gz archive or extracted folders."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inception.config import DataCfg
from inception.data import build_datasets, build_eval_dataset, build_loaders
from inception.data.archive import ArchiveDataset
from inception.data.memory import MemoryDataset
from inception.errors import UserError

from .conftest import IDENTITY, to_uint8, write_image

CIFAR_JPG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def _write_tree(root: Path, size=(32, 32), odd: bool = False) -> dict:
    rng = np.random.default_rng(0)
    pixels = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                if odd and split == "train" and cls == "dog" and i == 0:
                    arr = arr[:20]
                path = root / "cifar" / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)
                pixels[(split, cls, i)] = arr
    return pixels


def _tar(root: Path) -> Path:
    archive = root / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "cifar", arcname="cifar")
    return archive


def test_archive_is_read_into_memory_with_exact_pixels(tmp_path):
    pixels = _write_tree(tmp_path)
    archive = _tar(tmp_path)
    train, val = build_datasets(DataCfg(dataset="cifar10", data_dir=str(archive), augment="none"), IDENTITY)
    assert isinstance(train, MemoryDataset) and isinstance(val, MemoryDataset)
    # val falls back to test
    assert train.classes == val.classes == ["cat", "dog"] and len(train) == 6 and len(val) == 4
    assert train.images.shape == (6, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[0], torch.from_numpy(pixels[("train", "cat", 0)]).permute(2, 0, 1))
    image, label = val[3]
    assert label == 1 and torch.equal(to_uint8(image), torch.from_numpy(pixels[("test", "dog", 1)]).permute(2, 0, 1))


def test_extracted_cifar_folders_are_held_in_memory(tmp_path):
    _write_tree(tmp_path)
    train, val = build_datasets(DataCfg(dataset="cifar10", data_dir=str(tmp_path / "cifar")), IDENTITY)
    assert isinstance(train, MemoryDataset) and len(val) == 4


def test_mixed_sizes(tmp_path):
    _write_tree(tmp_path, odd=True)
    archive = _tar(tmp_path)
    with pytest.raises(UserError, match="different sizes.*use --dataset folder"):
        build_datasets(DataCfg(dataset="cifar10", data_dir=str(archive)), IDENTITY)
    # extracted folders of mixed sizes stay a per-file dataset
    train, _ = build_datasets(DataCfg(dataset="cifar10", data_dir=str(tmp_path / "cifar"), augment="none"), IDENTITY)
    assert not isinstance(train, MemoryDataset) and len(train) == 6


def test_bad_archives(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="cannot be read"):
        build_datasets(DataCfg(dataset="cifar10", data_dir=str(bad)), IDENTITY)
    _write_tree(tmp_path)
    with tarfile.open(tmp_path / "only.tar", "w") as tar:
        tar.add(tmp_path / "cifar" / "test", arcname="x/test")
    with pytest.raises(UserError, match="no split 'train' \\(found: test\\)"):
        build_datasets(DataCfg(dataset="cifar10", data_dir=str(tmp_path / "only.tar")), IDENTITY)


@pytest.mark.slow
def test_real_cifar10_archive():
    if not CIFAR_JPG.is_file():
        pytest.skip(f"{CIFAR_JPG} is not present")
    train, val = build_datasets(DataCfg(dataset="cifar10", data_dir=str(CIFAR_JPG)), IDENTITY)
    assert (len(train), len(val)) == (50000, 10000) and train.images.shape[1:] == (3, 32, 32)
    assert train.classes[0] == "airplane" and train.classes[-1] == "truck"
    assert torch.bincount(train.labels).tolist() == [5000] * 10


def test_training_reads_the_archive_device_resident(tmp_path):
    from inception.config import load_config
    from inception.data.pipeline import Preprocessing, resident
    from inception.engine.loop import train

    _write_tree(tmp_path)
    archive = _tar(tmp_path)
    cfg = load_config(None, {"data.dataset": "cifar10", "data.data_dir": str(archive), "model.name": "googlenet_cifar",
                             "data.image_size": 8, "train.epochs": 1, "train.batch_size": 4, "optim.lr": 0.01,
                             "train.output_dir": str(tmp_path / "run")})
    train_set, _ = build_datasets(cfg.data, IDENTITY)
    assert resident(train_set, cfg.data, Preprocessing.from_config(cfg.data, IDENTITY))
    result = train(cfg, progress=False)
    assert result.last_metrics["val_count"] == 4


# --------------------------------------------------------------------------------------
# --dataset folder --data-dir ARCHIVE: class folders read from the archive, kept encoded

IMAGENETTE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imagenette-160.tar.gz"


def _folder_archive(tmp_path: Path) -> tuple[Path, Path]:
    """top/{train,val}/<class>/ JPEGs of mixed sizes (val lacks a class), as a folder and as a .tar.gz."""
    root = tmp_path / "top"
    for split, classes, n in (("train", "abc", 3), ("val", "ab", 2)):
        for c, cls in enumerate(classes):
            for i in range(n):
                write_image(root / split / cls / f"{i}.jpg", size=(30 + 4 * i, 24 + c), seed=10 * c + i)
    (root / "train" / "README.txt").write_text("not an image")
    archive = tmp_path / "top.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="top")
    return root, archive


@pytest.mark.parametrize("pipeline", ["fast", "torchvision"])
def test_folder_archive_reads_like_the_extracted_folder(tmp_path, pipeline):
    root, archive = _folder_archive(tmp_path)
    common = dict(dataset="folder", image_size=16, pipeline=pipeline, workers=0)
    train, val = build_datasets(DataCfg(data_dir=str(archive), **common), IDENTITY)
    ftrain, fval = build_datasets(DataCfg(data_dir=str(root), **common), IDENTITY)
    assert isinstance(train, ArchiveDataset) and train.classes == ["a", "b", "c"] == val.classes   # val conformed
    assert (len(train), len(val)) == (9, 4) and train.targets == ftrain.targets and val.targets == fval.targets
    for ds, ref in ((train, ftrain), (val, fval)):
        for i in (0, len(ds) // 2, len(ds) - 1):
            torch.manual_seed(i)
            a = ds[i][0]
            torch.manual_seed(i)
            assert torch.equal(a, ref[i][0])            # the same pixels (and crops) as the files give
    assert isinstance(train._data, np.ndarray) and train._data.nbytes == sum(   # held encoded, not decoded
        p.stat().st_size for p in root.rglob("*.jpg"))
    ev = build_eval_dataset(DataCfg(data_dir=str(archive), **common), IDENTITY)
    assert ev.classes == ["a", "b", "c"]                  # eval alone follows the archive's train classes


def test_folder_archive_trains_with_workers(tmp_path):
    _, archive = _folder_archive(tmp_path)
    cfg = DataCfg(dataset="folder", data_dir=str(archive), image_size=16, workers=2)
    train, _ = build_loaders(cfg, IDENTITY, batch_size=3, seed=0, device=torch.device("cpu"))
    train.set_epoch(0)
    batches = list(train)                                 # forked workers decode from the shared buffer
    assert len(batches) == 3 and all(b.images.shape == (3, 3, 16, 16) for b in batches)
    assert sorted(y for b in batches for y in b.labels.tolist()) == [0] * 3 + [1] * 3 + [2] * 3


def test_folder_archive_errors(tmp_path):
    _, archive = _folder_archive(tmp_path)
    with pytest.raises(UserError, match=r"has no split 'test' \(found: train, val\); set data.train_split"):
        build_datasets(DataCfg(dataset="folder", data_dir=str(archive), val_split="test"), IDENTITY)
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="archive '.*bad.tgz' cannot be read"):
        build_datasets(DataCfg(dataset="folder", data_dir=str(bad)), IDENTITY)


def test_tar_bombs_are_refused_before_reading(tmp_path, monkeypatch):
    import gzip

    from inception.data import archive as archive_module
    info = tarfile.TarInfo("top/train/cat/huge.png")
    info.size = 10 * 2**30                          # declared 10 GiB; the file itself is 1 kB
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(info.tobuf() + b"\0" * 1024)
    assert bomb.stat().st_size < 2000
    for kind in ("cifar10", "folder"):
        with pytest.raises(UserError, match=r"bomb.tar.gz': member 'top/train/cat/huge.png' is 10,737,418,240 "
                                            r"bytes, more than the 256 MiB an image may take"):
            build_datasets(DataCfg(dataset=kind, data_dir=str(bomb)), IDENTITY)
    _, archive = _folder_archive(tmp_path)
    monkeypatch.setattr(archive_module, "max_archive_bytes", lambda: 2000)    # the total: half the memory
    with pytest.raises(UserError, match=r"holds more than 2,000 bytes of images \(at member '.*'\), more than half "
                                        r"this machine's memory; extract it"):
        build_datasets(DataCfg(dataset="folder", data_dir=str(archive)), IDENTITY)


def test_real_imagenette_archive():
    if not IMAGENETTE.is_file():
        pytest.skip(f"{IMAGENETTE} is not present")
    train, val = build_datasets(DataCfg(dataset="folder", data_dir=str(IMAGENETTE), image_size=128), IDENTITY)
    assert (len(train), len(val)) == (9469, 3925) and len(train.classes) == 10 == len(val.classes)
    assert train.classes == sorted(train.classes) and train.classes[0] == "n01440764"
    for ds, i in ((train, 0), (train, 9468), (val, 3924)):
        image, label = ds[i]
        assert image.shape == (3, 128, 128) and image.dtype == torch.uint8 and label == ds.targets[i]

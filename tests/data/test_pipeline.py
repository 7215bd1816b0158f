"""The one pipeline builder: which loader a config gets, and that every kind behaves alike."""

import logging

import pytest
import torch

from inception.config import DataCfg
from inception.data import Batch, FileLoader, Preprocessing, ResidentLoader, build_eval_loader, build_loaders
from inception.data.loader import cap_workers, usable_cores
from inception.data.pipeline import eval_preprocessing, uses_fast_decoder
from inception.errors import UserError
from inception.spec import DataConfig

from .conftest import IDENTITY

CPU = torch.device("cpu")


def _kinds(cfg, **kw):
    train, val = build_loaders(cfg, IDENTITY, batch_size=4, seed=3, device=CPU, **kw)
    return train, val


def test_the_config_decides_the_loader_kind(folder):
    train, val = _kinds(DataCfg(dataset="digits", workers=0))
    assert isinstance(train, ResidentLoader) and isinstance(val, ResidentLoader)
    assert len(train.dataset) == 1437 and train.dataset.classes == [str(i) for i in range(10)]
    train, _ = _kinds(DataCfg(dataset="digits", workers=0, device_resident=False))
    assert isinstance(train, FileLoader) and train.normalize is None           # torchvision presets, float samples
    fast = DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16)
    train, val = _kinds(fast)
    assert isinstance(train, FileLoader) and train.normalize == (IDENTITY.mean, IDENTITY.std)
    assert train.dataset[(0, 0)][0].dtype == torch.uint8                       # the fast decoder's uint8 crops
    for tv in (DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16, pipeline="torchvision"),
               DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16, color_jitter=0.2)):
        train, _ = _kinds(tv)
        assert train.normalize is None and train.dataset[(0, 0)][0].dtype == torch.float32
    assert uses_fast_decoder(fast) and not uses_fast_decoder(DataCfg(dataset="cifar10"))
    with pytest.raises(UserError, match="data.gpu_decode needs the fast pipeline"):
        uses_fast_decoder(DataCfg(dataset="folder", pipeline="torchvision", gpu_decode=True))


@pytest.mark.parametrize("cfg", [
    DataCfg(dataset="digits", workers=0, image_size=16),
    DataCfg(dataset="digits", workers=0, image_size=16, device_resident=False),
    "fast", "torchvision"])
def test_every_loader_kind_yields_batches_and_resumes_mid_epoch(folder, cfg):
    if isinstance(cfg, str):
        cfg = DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16, pipeline=cfg)
    train, val = _kinds(cfg)
    train.set_epoch(1)
    whole = list(train)
    assert all(isinstance(b, Batch) and b.images.shape[1:] == (3, 16, 16) and b.images.dtype == torch.float32
               and b.labels.dtype == torch.int64 and b.skipped == [] for b in whole)
    train.set_epoch(1, start_batch=2)                                          # a resumed epoch: the same tail
    tail = list(train)
    assert len(tail) == len(whole) - 2
    assert all(torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) for a, b in zip(whole[2:], tail))
    train.set_epoch(2)
    assert not torch.equal(torch.cat([b.labels for b in train]), torch.cat([b.labels for b in whole]))
    val.set_epoch(0)
    assert sum(len(b.labels) for b in val) == len(val.dataset)               # every val image once, in order


def test_distributed_shards(folder):
    cfg = DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16)
    seen = []
    for rank in range(2):
        dist = type("Dist", (), {"rank": rank, "world_size": 2})()
        _, val = build_loaders(cfg, IDENTITY, dist, batch_size=2, seed=0, device=CPU)
        seen += [y for b in val for y in b.labels.tolist()]
    assert sorted(seen) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(UserError, match="train.batch_size 12 x 2 processes is larger than the training set"):
        build_loaders(cfg, IDENTITY, type("Dist", (), {"rank": 0, "world_size": 2})(), batch_size=12, device=CPU)


def test_crop_pct_sets_the_eval_resize(folder):
    dc = IDENTITY
    default = Preprocessing.from_config(DataCfg(dataset="folder", image_size=16), dc)
    assert default.crop_pct == dc.crop_pct and default.resize_size == 16
    wider = Preprocessing.from_config(DataCfg(dataset="folder", image_size=16, crop_pct=0.5), dc)
    assert wider.resize_size == 32 and wider.eval_dict()["resize_size"] == 32
    assert Preprocessing.from_config(DataCfg(dataset="digits"), dc).crop_pct == 1.0     # cifar preset: whole images
    cfg = DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16, crop_pct=0.5)
    loader = build_eval_loader(cfg, dc, batch_size=3, device=CPU)
    full = build_eval_loader(DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16), dc,
                             batch_size=3, device=CPU)
    a, b = next(iter(loader)), next(iter(full))
    assert a.images.shape == b.images.shape == (3, 3, 16, 16) and not torch.equal(a.images, b.images)


@pytest.mark.parametrize("pipeline", ["fast", "torchvision"])
def test_eval_image_size_changes_evaluation_only(folder, pipeline):
    """data.eval_image_size (torchvision's --val-crop-size): the eval loader, the resize and
    the exported preprocessing take it; training crops stay at image_size; below the model's
    minimum it is refused."""
    base = dict(dataset="folder", data_dir=str(folder), workers=0, image_size=16, pipeline=pipeline)
    pre = Preprocessing.from_config(DataCfg(**base, eval_image_size=24, crop_pct=0.75), IDENTITY)
    assert (pre.size, pre.eval_size, pre.resize_size) == (16, 24, 32)
    assert pre.eval_dict()["image_size"] == 24 and pre.eval_dict()["resize_size"] == 32
    cfg = DataCfg(**base, eval_image_size=24)
    train, val = build_loaders(cfg, IDENTITY, batch_size=2, seed=0, device=CPU)
    assert next(iter(train)).images.shape[-2:] == (16, 16)
    assert next(iter(val)).images.shape[-2:] == (24, 24)
    assert next(iter(build_eval_loader(cfg, IDENTITY, batch_size=3, device=CPU))).images.shape[-2:] == (24, 24)
    assert eval_preprocessing(cfg, IDENTITY)["image_size"] == 24
    small = DataConfig(input_size=(3, 16, 16), min_input_size=12, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(UserError, match="data.eval_image_size 8 is below the model's minimum input size 12"):
        Preprocessing.from_config(DataCfg(**base, eval_image_size=8), small)


def test_workers_are_capped_at_the_usable_cores(caplog):
    cores = usable_cores()
    assert cap_workers(0) == 0 and cap_workers(cores) == cores
    with caplog.at_level(logging.INFO, logger="inception"):
        assert cap_workers(cores + 7919) == cores
        assert cap_workers(cores + 7919) == cores
    assert sum("capped at the" in r.message for r in caplog.records) == 1     # noted once per value


# --------------------------------------------------------------------------------------
# data.holdout: validate on a held-out part of the train split

def test_holdout_indices_are_stratified_fixed_and_independent_of_anything_else():
    from inception.data.datasets import holdout_indices

    targets = [0] * 50 + [1] * 30 + [2] * 3 + [3] * 1
    held = holdout_indices(targets, 0.2, seed=0)
    per_class = {y: sum(1 for i in held if targets[i] == y) for y in range(4)}
    assert per_class == {0: 10, 1: 6, 2: 1, 3: 0}          # round(0.2 n), at least one, never a class's last
    assert held == sorted(set(held)) and held == holdout_indices(targets, 0.2, seed=0)
    other = holdout_indices(targets, 0.2, seed=1)
    assert len(other) == len(held) and other != held           # another fold
    shuffled = holdout_indices(list(reversed(targets)), 0.2, seed=0)
    assert len(shuffled) == len(held)
    pairs = [0, 0, 1, 1]
    assert sorted(pairs[i] for i in holdout_indices(pairs, 0.5, seed=3)) == [0, 1]   # one of each class


def test_folder_holdout_validates_on_train_images_with_eval_preprocessing(tmp_path):
    from .conftest import write_image

    for c, cls in enumerate("ab"):                     # a train split only: no val folder at all
        for i in range(10):
            write_image(tmp_path / "train" / cls / f"{i}.jpg", size=(40, 30), seed=100 * c + i)
    cfg = DataCfg(dataset="folder", data_dir=str(tmp_path), workers=0, image_size=16, holdout=0.2)
    train, val = _kinds(cfg)
    assert (len(train.dataset), len(val.dataset)) == (16, 4)
    train_files = {path for path, _ in train.dataset.samples}
    val_files = {path for path, _ in val.dataset.samples}
    assert not train_files & val_files and len(train_files | val_files) == 20
    assert sorted(val.dataset.targets) == [0, 0, 1, 1] and val.dataset.classes == ["a", "b"]
    assert "held out" in val.dataset.source
    # the held-out images get the eval preprocessing: the same tensor every time, whatever the epoch
    a, b = val.dataset[(0, 0)][0], val.dataset[(5, 0)][0]
    assert torch.equal(a, b) and a.shape == (3, 16, 16)
    labels = torch.cat([b.labels for b in val])
    assert labels.tolist() == val.dataset.targets
    # the same images for any training seed, another set with data.holdout_seed
    again = build_loaders(cfg, IDENTITY, batch_size=4, seed=99, device=CPU)[1]
    assert {p for p, _ in again.dataset.samples} == val_files
    fold = _kinds(DataCfg(dataset="folder", data_dir=str(tmp_path), workers=0, image_size=16, holdout=0.2,
                          holdout_seed=1))[1]
    assert {p for p, _ in fold.dataset.samples} != val_files
    for cls in "ab":                                     # one image per class: nothing can be held out
        write_image(tmp_path / "single" / "train" / cls / "0.jpg", size=(40, 30))
    with pytest.raises(UserError, match="holds out no image"):
        build_loaders(DataCfg(dataset="folder", data_dir=str(tmp_path / "single"), workers=0, image_size=16,
                              holdout=0.5), IDENTITY, batch_size=1, device=CPU)


def test_in_memory_holdout_stays_on_the_device_batcher():
    train, val = _kinds(DataCfg(dataset="digits", workers=0, holdout=0.1))
    assert isinstance(train, ResidentLoader) and isinstance(val, ResidentLoader)
    assert len(train.dataset) + len(val.dataset) == 1437 and len(val.dataset) == 142    # a tenth of each class
    assert val.dataset.labels.tolist() == val.dataset.targets
    assert torch.equal(val.dataset.images[0], val.dataset.dataset.images[val.dataset.indices[0]])
    seen = torch.cat([b.labels for b in val])
    assert sorted(seen.tolist()) == sorted(val.dataset.targets)

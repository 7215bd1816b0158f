import torch

from inception.config import DataCfg
from inception.data import build_datasets, build_eval_dataset
from inception.data.digits import digits_dataset

from .conftest import IDENTITY


def test_sizes_shapes_and_classes():
    train, val = build_datasets(DataCfg(), IDENTITY)
    assert (len(train), len(val)) == (1437, 360)
    assert train.classes == val.classes == [str(d) for d in range(10)]
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert set(train.labels.tolist()) == set(val.labels.tolist()) == set(range(10))


def test_normalized_with_model_mean_std():
    dc = IDENTITY.replace(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    _, val = build_datasets(DataCfg(), dc)
    x = torch.stack([val[i][0] for i in range(20)])
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.99 and x.max() > 0.5


def test_split_is_deterministic_disjoint_and_stratified():
    a, b = digits_dataset(True), digits_dataset(True)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    train, test = digits_dataset(True), digits_dataset(False)
    train_rows = {bytes(r) for r in train.images[:, 0].reshape(len(train), -1).numpy()}
    test_rows = [bytes(r) for r in test.images[:, 0].reshape(len(test), -1).numpy()]
    assert not any(r in train_rows for r in test_rows)
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~36 per class


def test_eval_dataset_splits_and_class_names():
    cfg = DataCfg()
    assert len(build_eval_dataset(cfg, IDENTITY)) == 360
    assert len(build_eval_dataset(cfg, IDENTITY, split="train")) == 1437
    names = [str(d) for d in reversed(range(10))]
    ds = build_eval_dataset(cfg, IDENTITY, class_names=names)
    plain = build_eval_dataset(cfg, IDENTITY)
    assert ds.classes == names
    assert torch.equal(ds.labels, 9 - plain.labels)

import pytest
import torch

from inception.config import DataCfg
from inception.data import build_datasets, build_loader
from inception.errors import UserError

from .conftest import IDENTITY

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return build_datasets(DataCfg(), IDENTITY)


def _first(dataset, seed, workers=0):
    loader = build_loader(dataset, 32, train=True, workers=workers, seed=seed, device=CPU)
    return next(iter(loader))


def test_same_seed_same_order(digits):
    train, _ = digits
    a, b, c = _first(train, 1), _first(train, 1), _first(train, 2)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_workers_repeat_augmentation_exactly(digits):
    train, _ = digits
    a, b = _first(train, 3, workers=2), _first(train, 3, workers=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_loader_options(digits):
    train, val = digits
    tl = build_loader(train, 100, train=True, workers=1, seed=0, device=CPU)
    assert tl.drop_last and tl.persistent_workers and not tl.pin_memory and len(tl) == len(train) // 100
    vl = build_loader(val, 100, train=False, workers=0, seed=0, device=torch.device("cuda"))
    assert not vl.drop_last and not vl.persistent_workers and vl.pin_memory and len(vl) == 4
    labels = torch.cat([b.labels for b in build_loader(val, 100, train=False, workers=0, seed=0, device=CPU)])
    assert torch.equal(labels, val.labels)  # eval order is the dataset order
    with pytest.raises(UserError, match="fewer than one batch of 2000"):
        build_loader(train, 2000, train=True, workers=0, seed=0, device=CPU)

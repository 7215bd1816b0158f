import pytest
import torch

from inception.data.memory import MemoryDataset
from inception.data.resident import ResidentLoader
from inception.data.transforms import eval_transform
from inception.errors import UserError

from .conftest import to_uint8

CPU = torch.device("cpu")
ID = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))       # identity normalization: to_uint8 inverts it exactly
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _data(n: int, size: int = 8, seed: int = 0, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images with no zero pixel (so zeros are padding), labelled by their index."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, 3, size, width or size), dtype=torch.uint8, generator=g)
    return images, torch.arange(n)


def _loader(images, labels, **kw) -> ResidentLoader:
    args = dict(batch_size=16, train=True, device=CPU, size=images.shape[-1], **ID)
    return ResidentLoader(images, labels, **{**args, **kw})


def _epoch(loader, epoch=0, start_batch=0):
    """The epoch's (images, labels) pairs (every batch also lists no skipped images)."""
    loader.set_epoch(epoch, start_batch)
    batches = list(loader)
    assert all(b.skipped == [] for b in batches)
    return [b[:2] for b in batches]


def _recover(out: torch.Tensor, sources: torch.Tensor, padding: int) -> torch.Tensor:
    """For each augmented image, the (row offset, column offset, flip) of the one padded crop
    (optionally mirrored) of its source that equals it exactly; fails if there is not one."""
    s = out.shape[-1]
    k = 2 * padding + 1
    padded = torch.nn.functional.pad(sources, (padding,) * 4)
    windows = padded.unfold(2, s, 1).unfold(3, s, 1).permute(0, 2, 3, 1, 4, 5)   # B x k x k x C x s x s
    got = to_uint8(out)[:, None, None]
    match = torch.stack([(windows == got).flatten(3).all(-1), (windows == got.flip(-1)).flatten(3).all(-1)], -1)
    assert torch.all(match.flatten(1).sum(1) == 1), "an output is not exactly one crop (+ flip) of its source"
    where = match.flatten(1).float().argmax(1)
    return torch.stack([where // (2 * k), where // 2 % k, where % 2], 1)


def test_shapes_dtypes_and_values():
    images, labels = _data(100)
    batches = _epoch(_loader(images, labels, padding=2))
    assert len(batches) == 6                                  # drop_last in training: 100 // 16
    x, y = batches[0]
    assert x.shape == (16, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs = torch.cat([b[0] for b in batches])
    assert 0 <= xs.min() and xs.max() <= 1
    assert (xs == 0).any() and (xs == 0).flatten(1).any(1).float().mean() > 0.3   # zero padding shows, often
    x, _, _ = next(iter(_loader(images, labels, dtype=torch.bfloat16, mean=(0.5,) * 3, std=(0.5,) * 3)))
    assert x.dtype == torch.bfloat16 and -1 <= x.min() and x.max() <= 1


def test_labels_travel_with_their_images():
    labels = torch.arange(60) % 10
    images = (labels * 20 + 10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 12, 12).contiguous()
    for batch in _epoch(_loader(images, labels, padding=4, batch_size=8)):
        for x, y in zip(*batch):
            values = to_uint8(x).unique()
            assert set(values.tolist()) <= {0, int(y) * 20 + 10}
            assert (to_uint8(x) != 0).sum() >= 3 * 8 * 8     # at least the (12 - 4)^2 pixels of the image


def test_batches_are_padded_crops_and_flips_of_their_sources():
    images, labels = _data(64, size=6)
    for channels_last in (False, True):
        for x, y in _epoch(_loader(images, labels, padding=3, channels_last=channels_last)):
            _recover(x, images[y], 3)                         # every output is one exact crop (+ flip)


def test_crop_offsets_uniform_and_flips_half():
    padding, k = 4, 9
    images, labels = _data(2048, size=8)
    x, y = (torch.cat(t) for t in zip(*_epoch(_loader(images, labels, padding=padding, batch_size=256))))
    assert sorted(y.tolist()) == list(range(2048))            # one epoch: every sample once
    found = _recover(x, images[y], padding)
    expected = len(y) / k
    for axis in (0, 1):
        counts = torch.bincount(found[:, axis], minlength=k).float()
        assert counts.min() > 0 and len(counts) == k          # every offset 0..2*padding occurs
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 26.1, counts                            # 8 degrees of freedom, p = 0.001
    assert abs(found[:, 2].float().mean() - 0.5) < 0.05
    x, y = (torch.cat(t) for t in zip(*_epoch(_loader(images, labels, padding=padding, hflip=False, batch_size=256))))
    assert _recover(x, images[y], padding)[:, 2].sum() == 0


def test_eval_is_the_eval_transform_in_order():
    images, labels = _data(37, size=10)
    loader = _loader(images, labels, train=False, batch_size=8, **IMAGENET)
    batches = [b[:2] for b in loader]
    assert len(loader) == len(batches) == 5 and [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    x, y = (torch.cat(t) for t in zip(*batches))
    assert torch.equal(y, labels)
    tf = eval_transform(size=10, crop_pct=1.0, **IMAGENET)
    assert torch.equal(x, torch.stack([tf(im) for im in images]))   # bit for bit
    assert all(torch.equal(a, b) for a, b in zip(x, torch.cat([b[0] for b in loader])))  # and every pass


def test_no_augmentation_gives_whole_images():
    images, labels = _data(40)
    x, y = (torch.cat(t) for t in zip(*_epoch(_loader(images, labels, padding=0, hflip=False, batch_size=8))))
    assert torch.equal(to_uint8(x), images[y])


def test_same_seed_and_epoch_repeat_exactly():
    images, labels = _data(100)
    a = _epoch(_loader(images, labels, seed=3), epoch=2)
    b = _epoch(_loader(images, labels, seed=3), epoch=2)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    c = _epoch(_loader(images, labels, seed=3), epoch=3)
    d = _epoch(_loader(images, labels, seed=4), epoch=3)
    order = [torch.cat([y for _, y in run]) for run in (a, c, d)]
    assert not torch.equal(order[0], order[1]) and not torch.equal(order[1], order[2])
    loader = _loader(images, labels, seed=3)
    loader.set_epoch(2)
    e, f = list(loader), list(loader)                           # without set_epoch a pass repeats its epoch
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[0], r[0]) for p, q, r in zip(a, e, f))


def test_resume_mid_epoch_continues_the_same_batches():
    images, labels = _data(100)
    loader = _loader(images, labels, padding=3)
    full = _epoch(loader, epoch=5)
    resumed = _epoch(loader, epoch=5, start_batch=4)
    assert len(resumed) == len(full) - 4
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(full[4:], resumed))
    assert len(list(loader)) == len(full)                       # the skip applies to one pass only
    assert _epoch(loader, epoch=5, start_batch=len(loader)) == []
    with pytest.raises(ValueError, match="start_batch"):
        loader.set_epoch(0, start_batch=len(loader) + 1)


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_train_shards(world):
    images, labels = _data(50)
    ranks = [_loader(images, labels, batch_size=4, world_size=world, rank=r) for r in range(world)]
    assert len({len(rk) for rk in ranks}) == 1 and len(ranks[0]) == 50 // (4 * world)
    epochs = [_epoch(rk, epoch=1) for rk in ranks]
    seen = torch.cat([y for run in epochs for _, y in run])
    assert len(seen) == len(set(seen.tolist())) == len(ranks[0]) * 4 * world    # disjoint, equal shares
    # Global step k together sees what one process with batch 4 * world sees at step k, augmented alike.
    single = _epoch(_loader(images, labels, batch_size=4 * world), epoch=1)
    for k, (x1, y1) in enumerate(single):
        for r in range(world):
            x, y = epochs[r][k]
            assert torch.equal(y, y1[r::world]) and torch.equal(x, x1[r::world])
    # Without drop_last: padded (like DistributedSampler) so every sample is seen and ranks stay in step.
    ranks = [_loader(images, labels, batch_size=4, world_size=world, rank=r, drop_last=False) for r in range(world)]
    assert len({len(rk) for rk in ranks}) == 1
    seen = torch.cat([y for rk in ranks for _, y in _epoch(rk)])
    assert set(seen.tolist()) == set(range(50)) and len(seen) == -(-50 // world) * world


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_eval_partitions_exactly(world):
    images, labels = _data(49)
    ranks = [_loader(images, labels, train=False, batch_size=4, world_size=world, rank=r) for r in range(world)]
    runs = [[b[:2] for b in rk] for rk in ranks]
    assert [len(run) for run in runs] == [len(rk) for rk in ranks]
    seen = torch.cat([y for run in runs for _, y in run])
    assert sorted(seen.tolist()) == list(range(49))            # every sample exactly once, no padding
    for r, run in enumerate(runs):
        assert torch.equal(torch.cat([y for _, y in run]), torch.arange(r, 49, world))
        assert torch.equal(to_uint8(torch.cat([x for x, _ in run])), images[r::world])


def test_too_small_for_a_batch_is_a_user_error():
    images, labels = _data(10)
    with pytest.raises(UserError, match="10 images, fewer than one batch of 16; lower train.batch_size"):
        _loader(images, labels)
    with pytest.raises(UserError, match="for each of 2 processes"):
        _loader(images, labels, batch_size=8, world_size=2)
    assert len(_loader(images, labels, train=False)) == 1
    assert len(_loader(images, labels, drop_last=False)) == 1


def test_resizes_once_up_front():
    images, labels = _data(20, size=8)
    loader = _loader(images, labels, size=16, train=False, batch_size=8, **IMAGENET)
    x = torch.cat([b[0] for b in loader])
    assert x.shape == (20, 3, 16, 16)
    tf = eval_transform(size=16, crop_pct=1.0, **IMAGENET)
    assert torch.equal(x, torch.stack([tf(im) for im in images]))
    wide, _ = _data(20, size=8, width=12)                      # non-square: short side to 16, center crop
    x = torch.cat([b[0] for b in _loader(wide, labels, size=16, train=False, **IMAGENET)])
    assert torch.equal(x, torch.stack([tf(im) for im in wide]))
    x, _, _ = next(iter(_loader(images, labels, size=16, padding=4)))
    assert x.shape == (16, 3, 16, 16)


@pytest.mark.parametrize("train", [True, False])
def test_channels_last_gives_the_same_values(train):
    images, labels = _data(40)
    common = dict(train=train, batch_size=8, padding=3, **IMAGENET)
    for dtype in (torch.float32, torch.bfloat16):
        a = _epoch(_loader(images, labels, dtype=dtype, **common), epoch=1)
        b = _epoch(_loader(images, labels, dtype=dtype, channels_last=True, **common), epoch=1)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xb.is_contiguous(memory_format=torch.channels_last) and xb.dtype == dtype
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_from_dataset():
    images, labels = _data(30)
    ds = MemoryDataset(images, labels, [str(i) for i in range(30)], source="synthetic")
    loader = ResidentLoader.from_dataset(ds, batch_size=8, train=False, device=CPU, size=8, **ID)
    assert len(loader) == 4 and "30 images, eval" in repr(loader) and loader.nbytes == 30 * (3 * 8 * 8 + 8)
    assert torch.equal(torch.cat([b.labels for b in loader]), labels)


def test_preprocessing_gives_the_presets_device_arguments():
    """The pipeline derives the device-resident batches from the config, and they are the
    per-sample presets' batches, bit for bit."""
    from inception.config import DataCfg
    from inception.data.pipeline import Preprocessing
    from inception.models.layers import DataConfig

    images, labels = _data(30, size=10)
    dc = DataConfig(input_size=(3, 10, 10), min_input_size=2, mean=IMAGENET["mean"], std=IMAGENET["std"],
                    crop_pct=0.875)
    pre = Preprocessing.from_config(DataCfg(dataset="cifar10", crop_padding=2, hflip=False), dc)
    cifar = MemoryDataset(images, labels, ["x"] * 30, transform=pre.train_transform())
    loader = ResidentLoader.from_dataset(cifar, batch_size=8, train=True, device=CPU, **pre.resident_arguments(True))
    assert (loader.size, loader.padding, loader.hflip) == (10, 2, False) and loader.dataset is cifar
    flip = Preprocessing.from_config(DataCfg(dataset="cifar10", hflip=True), dc).resident_arguments(True)
    assert flip["hflip"] and flip["padding"] == 4
    # The eval transform with a crop fraction: resize the short side to 11, center crop 8, bit for bit.
    pre = Preprocessing.from_config(DataCfg(dataset="folder", image_size=8, crop_pct=0.75), dc)
    val = MemoryDataset(images, labels, ["x"] * 30, transform=pre.eval_transform())
    args = pre.resident_arguments(False)
    assert args["resize_size"] == 10
    x = torch.cat([b[0] for b in ResidentLoader.from_dataset(val, batch_size=8, train=False, device=CPU, **args)])
    assert x.shape == (30, 3, 8, 8) and torch.equal(x, torch.stack([val[i][0] for i in range(30)]))
    # The deterministic `none` preset, in training order.
    pre = Preprocessing.from_config(DataCfg(dataset="cifar10", augment="none", image_size=6), dc)
    none = MemoryDataset(images, labels, ["x"] * 30, transform=pre.train_transform())
    x, y, _ = next(iter(ResidentLoader.from_dataset(none, batch_size=8, train=True, device=CPU,
                                                    **pre.resident_arguments(True))))
    assert torch.equal(x, torch.stack([none[i][0] for i in y.tolist()]))
    # What cannot run on the device is a one-line UserError naming the fix.
    jitter = Preprocessing.from_config(DataCfg(dataset="cifar10", color_jitter=0.4), dc)
    with pytest.raises(UserError, match="color_jitter cannot run on the device; set data.device_resident: false"):
        jitter.resident_arguments(True)
    assert jitter.resident_arguments(False)["padding"] == 0         # evaluation has no jitter
    with pytest.raises(UserError, match="imagenet augmentation cannot run on the device"):
        Preprocessing.from_config(DataCfg(dataset="folder"), dc).resident_arguments(True)

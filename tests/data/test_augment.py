"""Augmentation beyond crop and flip: auto_augment policies (per sample, in the workers), random
erasing and MixUp / CutMix (per batch, on the device), progressive resizing; every loader kind."""

import dataclasses
import itertools

import pytest
import torch
from torchvision.transforms import v2

from inception.config import DataCfg
from inception.data import FileLoader, Preprocessing, ResidentLoader, build_datasets, build_loaders
from inception.data.batchaug import BatchAugment, erase, erase_boxes
from inception.data.decode import read_encoded
from inception.data.sampling import SizeSchedule
from inception.errors import UserError

from .conftest import IDENTITY

CPU = torch.device("cpu")


def _cfg(kind, folder, **kw):
    """Every loader kind: digits device-resident, digits through a DataLoader, folder fast / torchvision."""
    kw = {"workers": 0, "image_size": 16, **kw}
    if kind == "resident":
        return DataCfg(dataset="digits", **kw)
    if kind == "memory":
        return DataCfg(dataset="digits", device_resident=False, **kw)
    return DataCfg(dataset="folder", data_dir=str(folder), pipeline=kind, **kw)


KINDS = ["resident", "memory", "fast", "torchvision"]


def _first(loader, n):
    return list(itertools.islice(loader, n))


def _same(a, b):
    return all(torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------
# auto_augment policies

@pytest.mark.parametrize("name,kind", [("randaugment", v2.RandAugment), ("trivialaugment", v2.TrivialAugmentWide),
                                       ("autoaugment", v2.AutoAugment)])
def test_policies_run_on_the_uint8_crop_after_the_decoder_and_in_the_presets(folder, name, kind):
    cfg = DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16, auto_augment=name,
                  randaugment_magnitude=15, randaugment_ops=3)
    pre = Preprocessing.from_config(cfg, IDENTITY)
    policy = pre.policy()
    assert isinstance(policy, kind)
    if name == "randaugment":
        assert (policy.num_ops, policy.magnitude) == (3, 15)
    train, _ = build_datasets(cfg, IDENTITY)
    plain, _ = build_datasets(DataCfg(dataset="folder", data_dir=str(folder), workers=0, image_size=16), IDENTITY)
    image = read_encoded(train.samples[3][0])
    changed = 0
    for seed in range(8):
        torch.manual_seed(seed)
        got = train[3][0]
        torch.manual_seed(seed)
        crop = plain.transform(image)                     # the decoder's crop and flip, from the same draws ...
        expected = policy(crop)                           # ... then the policy on the uint8 crop
        assert got.dtype == torch.uint8 and torch.equal(got, expected)
        changed += not torch.equal(got, crop)
    assert changed >= 4
    ops = [type(t) for t in pre.train_transform().transforms]          # the torchvision preset: after the flip
    assert ops.index(kind) == ops.index(v2.RandomHorizontalFlip) + 1 and ops.index(kind) < ops.index(v2.ToDtype)


def test_policies_leave_the_device_and_conflicts_are_one_line_errors(folder):
    train, _ = build_loaders(_cfg("resident", folder, auto_augment="trivialaugment"), IDENTITY, batch_size=8,
                             device=CPU)
    assert isinstance(train, FileLoader)                  # the default falls back to the per-sample path
    with pytest.raises(UserError, match="set data.device_resident: false \\(or data.auto_augment: none\\)"):
        build_loaders(_cfg("resident", folder, auto_augment="randaugment", device_resident=True), IDENTITY,
                      batch_size=8, device=CPU)
    with pytest.raises(UserError, match="data.gpu_decode decodes on the device; set data.gpu_decode: false"):
        build_datasets(_cfg("fast", folder, auto_augment="randaugment", gpu_decode=True), IDENTITY)


# --------------------------------------------------------------------------------------
# random erasing

def test_erase_boxes_follow_torchvisions_random_erasing():
    n, h, w = 4000, 24, 32
    top, left, bh, bw, on = erase_boxes(n, h, w, 1.0, torch.Generator().manual_seed(0))
    ref = v2.RandomErasing(p=1.0)
    torch.manual_seed(0)
    params = [ref.make_params([torch.zeros(3, h, w)]) for _ in range(n)]
    ours = (bh * bw)[on].float() / (h * w)
    theirs = torch.tensor([p["h"] * p["w"] / (h * w) for p in params if p["v"] is not None])
    assert float(on.float().mean()) == pytest.approx(len(theirs) / n, abs=0.02)     # boxes that fit in 10 tries
    assert float(ours.mean()) == pytest.approx(float(theirs.mean()), abs=0.01)
    assert float(ours.std()) == pytest.approx(float(theirs.std()), abs=0.01)
    assert float(ours.min()) >= 0.015 and float(ours.max()) <= 0.36
    assert (top >= 0).all() and (top + bh <= h).all() and (left >= 0).all() and (left + bw <= w).all()
    quarter = erase_boxes(n, h, w, 0.25, torch.Generator().manual_seed(1))[4]
    assert float(quarter.float().mean()) == pytest.approx(0.25 * float(on.float().mean()), abs=0.03)


@pytest.mark.parametrize("channels_last", [False, True])
def test_erase_fills_one_rectangle_per_chosen_image(channels_last):
    x = torch.rand(64, 3, 12, 12) + 1.0                     # no zeros before erasing
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    before = x.clone()
    out = erase(x, 0.5, torch.Generator().manual_seed(3))
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    top, left, h, w, on = erase_boxes(64, 12, 12, 0.5, torch.Generator().manual_seed(3))
    for i in range(64):
        zero = out[i] == 0
        if on[i]:
            box = torch.zeros(12, 12, dtype=torch.bool)
            box[top[i]:top[i] + h[i], left[i]:left[i] + w[i]] = True
            assert torch.equal(zero, box.expand(3, -1, -1)) and torch.equal(out[i][~zero], before[i][~zero])
        else:
            assert torch.equal(out[i], before[i])
    assert 16 <= int(on.sum()) <= 48


# --------------------------------------------------------------------------------------
# MixUp / CutMix

def test_mixup_mixes_whole_batches_seeded_by_epoch_and_batch():
    x, y = torch.rand(8, 3, 6, 6), torch.arange(8) % 4
    aug = BatchAugment(num_classes=4, mixup_alpha=0.4, seed=5)
    state = torch.get_rng_state()
    images, labels = aug(x.clone(), y, epoch=2, batch=7)
    assert torch.equal(torch.get_rng_state(), state)           # the caller's RNG is untouched
    lam = float(labels[0, y[0]])                                # sample 0 keeps lam of itself, 1 - lam of sample 7
    assert labels.shape == (8, 4) and labels.dtype == torch.float32
    assert torch.allclose(labels.sum(1), torch.ones(8))
    assert torch.allclose(images, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)
    again, _ = aug(x.clone(), y, epoch=2, batch=7)
    other, _ = aug(x.clone(), y, epoch=2, batch=8)
    assert torch.equal(again, images) and not torch.equal(other, images)


def test_cutmix_random_choice_mix_prob_and_channels_last():
    x = torch.rand(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8) % 3
    both = BatchAugment(num_classes=3, mixup_alpha=1.0, cutmix_alpha=1.0, seed=0)
    kinds = set()
    for batch in range(12):
        images, labels = both(x.clone(), y, epoch=0, batch=batch)
        assert images.is_contiguous(memory_format=torch.channels_last) and labels.shape == (8, 3)
        pasted = (images == x.roll(1, 0)) & (images != x)       # CutMix pastes a box of the rolled batch
        kinds.add("cutmix" if pasted.any() else "mixup")
    assert kinds == {"cutmix", "mixup"}
    never = BatchAugment(num_classes=3, cutmix_alpha=1.0, mix_prob=0.0)
    images, labels = never(x.clone(), y, epoch=0, batch=0)
    assert torch.equal(images, x) and torch.equal(labels, torch.eye(3)[y])   # unmixed: one-hot targets


# --------------------------------------------------------------------------------------
# progressive resizing

def test_size_schedule_is_a_function_of_the_epoch():
    assert [SizeSchedule((96, 112, 128), 6)(e) for e in range(7)] == [96, 96, 112, 112, 128, 128, 128]
    assert [SizeSchedule((96, 112, 128), 5)(e) for e in range(5)] == [96, 96, 112, 112, 128]
    assert [SizeSchedule((8,), 3)(e) for e in range(3)] == [8, 8, 8]
    with pytest.raises(ValueError, match="needs epochs"):
        build_loaders(DataCfg(dataset="digits", progressive_sizes=[8, 16]), IDENTITY, batch_size=8, device=CPU)
    with pytest.raises(UserError, match="go below the model's minimum input size 10; start at 10"):
        Preprocessing.from_config(DataCfg(dataset="digits", progressive_sizes=[8, 16]),
                                  IDENTITY.replace(min_input_size=10))


@pytest.mark.parametrize("kind", KINDS)
def test_every_loader_kind_augments_batches_and_resumes_exactly(folder, kind):
    """Progressive sizes, random erasing and MixUp + CutMix together: each epoch at its size
    (channels_last kept), eval at image_size, and a mid-epoch restart gives the same batches."""
    cfg = _cfg(kind, folder, progressive_sizes=[8, 12, 16], random_erasing=0.5, mixup_alpha=0.4, cutmix_alpha=1.0)
    train, val = build_loaders(cfg, IDENTITY, batch_size=4, seed=3, device=CPU, channels_last=True, epochs=3)
    assert isinstance(train, ResidentLoader) == (kind == "resident")
    classes = len(train.dataset.classes)
    for epoch, size in enumerate([8, 12, 16]):
        train.set_epoch(epoch)
        whole = _first(train, 4)
        assert all(b.images.shape[1:] == (3, size, size) and b.images.is_contiguous(memory_format=torch.channels_last)
                   and b.labels.shape == (4, classes) and b.labels.dtype == torch.float32 for b in whole)
        assert any((b.images == 0).sum() > 0 for b in whole)                  # something was erased
        train.set_epoch(epoch, start_batch=2)
        assert _same(whole[2:], _first(train, 2))
    val.set_epoch(0)
    b = next(iter(val))
    assert b.images.shape[1:] == (3, 16, 16) and b.labels.dim() == 1          # eval: no augmentation, full size
    again, _ = build_loaders(cfg, IDENTITY, batch_size=4, seed=3, device=CPU, channels_last=True, epochs=3)
    again.set_epoch(1, start_batch=1)                                         # a fresh process resuming mid-epoch
    train.set_epoch(1)
    assert _same(_first(train, 3)[1:], _first(again, 2))


def test_persistent_workers_follow_the_size_schedule(folder):
    cfg = _cfg("fast", folder, progressive_sizes=[8, 16], workers=1, auto_augment="randaugment")
    train, _ = build_loaders(cfg, IDENTITY, batch_size=4, seed=0, device=CPU, epochs=2)
    shapes = []
    for epoch in range(2):
        train.set_epoch(epoch)
        shapes.append({tuple(b.images.shape) for b in train})
    assert shapes == [{(4, 3, 8, 8)}, {(4, 3, 16, 16)}]
    ref, _ = build_loaders(dataclasses.replace(cfg, workers=0), IDENTITY, batch_size=4, seed=0, device=CPU, epochs=2)
    ref.set_epoch(1)
    train.set_epoch(1)
    assert _same(list(train), list(ref))                  # workers or not: the same seeded samples

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from inception.config import DataCfg
from inception.data import augment_preset, build_datasets, eval_transform, hflip_enabled, train_transform
from inception.errors import UserError

from .conftest import IDENTITY, to_uint8

NORM = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _ops(transform):
    return [type(t) for t in transform.transforms]


@pytest.mark.parametrize("preset", ["imagenet", "cifar", "none"])
def test_train_presets_output_shape(preset):
    pil = Image.new("RGB", (40, 30), (200, 10, 60))
    tensor = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    tf = train_transform(preset=preset, size=24, color_jitter=0.4, **NORM)
    for image in (pil, tensor):
        x = tf(image)
        assert type(x) is torch.Tensor and x.shape == (3, 24, 24) and x.dtype == torch.float32
        assert -1 <= x.min() and x.max() <= 1


def test_preset_contents():
    assert v2.RandomResizedCrop in _ops(train_transform(preset="imagenet", size=8, **NORM))
    cifar = train_transform(preset="cifar", size=8, crop_padding=2, color_jitter=0.2, **NORM)
    assert {v2.RandomCrop, v2.RandomHorizontalFlip, v2.ColorJitter} <= set(_ops(cifar))
    assert v2.RandomHorizontalFlip not in _ops(train_transform(preset="cifar", size=8, hflip=False, **NORM))
    assert v2.ColorJitter not in _ops(train_transform(preset="cifar", size=8, **NORM))
    with pytest.raises(UserError, match="unknown augmentation preset 'autoaugment'"):
        train_transform(preset="autoaugment", size=8, **NORM)
    with pytest.raises(UserError, match="unknown interpolation 'cubic'"):
        eval_transform(size=8, interpolation="cubic", **NORM)


def test_eval_resize_then_center_crop_is_deterministic():
    tf = eval_transform(size=16, crop_pct=0.5, **NORM)  # resize short side to 32, crop the middle 16
    image = torch.zeros(3, 64, 96, dtype=torch.uint8)
    image[:, 12:52, 20:76] = 255  # a bit more than the middle half: the crop is all white
    a, b = tf(image), tf(image)
    assert a.shape == (3, 16, 16) and torch.equal(a, b) and torch.all(a == 1)


def test_eval_at_native_size_is_exact():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    x = eval_transform(size=32, mean=IDENTITY.mean, std=IDENTITY.std, crop_pct=1.0)(image)
    assert torch.equal(to_uint8(x), image)


def test_defaults_resolved_per_dataset():
    assert augment_preset(DataCfg()) == "cifar" and not hflip_enabled(DataCfg())
    assert augment_preset(DataCfg(dataset="folder")) == "imagenet" and hflip_enabled(DataCfg(dataset="folder"))
    assert hflip_enabled(DataCfg(hflip=True)) and augment_preset(DataCfg(augment="none")) == "none"
    train, _ = build_datasets(DataCfg(), IDENTITY)
    assert v2.RandomHorizontalFlip not in _ops(train.transform)
    assert v2.RandomCrop in _ops(train.transform)


def test_image_size_overrides_model_size():
    train, val = build_datasets(DataCfg(image_size=40), IDENTITY)
    assert train[0][0].shape == val[0][0].shape == (3, 40, 40)
    train, val = build_datasets(DataCfg(), IDENTITY.replace(input_size=(3, 48, 48), crop_pct=0.875))
    assert train[0][0].shape == val[0][0].shape == (3, 48, 48)


def test_cifar_preset_evaluates_whole_images():
    from inception.config import DataCfg
    from inception.data import Preprocessing
    from inception.models.layers import DataConfig

    dc = DataConfig(input_size=(3, 32, 32), min_input_size=2, mean=(0.0,) * 3, std=(1.0,) * 3, crop_pct=0.875)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    whole = Preprocessing.from_config(DataCfg(dataset="digits"), dc).eval_transform()(image)
    torch.testing.assert_close((whole * 255).round().byte(), image)
    cropped = Preprocessing.from_config(DataCfg(dataset="folder", data_dir="x"), dc).eval_transform()(image)
    assert cropped.shape == (3, 32, 32) and not torch.equal((cropped * 255).round().byte(), image)

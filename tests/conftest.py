import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so that
    parity tests compare more than identity normalisations."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)


# Smallest comfortable test input per model (v3/v4/irv2 need 75x75).
# The tests' model list: every registered model, and a small input size it runs at (a new
# architecture adds its line here; tests/models/test_cards.py checks that each has one).
SMALL_SIZE = {"googlenet": 64, "googlenet_cifar": 32, "googlenet_v1": 64, "inception_v3": 75, "inception_v4": 75,
              "inception_resnet_v2": 75}


def make_checkpoint(path, arch: str = "googlenet", *, size: int = 32, classes=None, dataset: str = "folder",
                    seed: int = 0, **model_options):
    """Write a checkpoint in the trainer's format for a freshly initialised model (random
    BatchNorm statistics) and return ``(path, model)``."""
    from inception.config import Config
    from inception.models import create_model
    from inception.models.pretrained import CHECKPOINT_FORMAT

    classes = list(classes or [f"class{i}" for i in range(5)])
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(classes), **model_options).eval()
    randomize_batchnorm(model)
    cfg = Config()
    cfg.model.name = arch
    cfg.model.options = dict(model_options)
    cfg.data.dataset = dataset
    cfg.data.image_size = size
    state = {"format": CHECKPOINT_FORMAT, "version": 1, "arch": arch, "model_class": type(model).__name__,
             "model_options": dict(model_options), "num_classes": len(classes), "class_names": classes,
             "data_config": model.data_config.to_dict(), "image_size": size, "model": model.state_dict(),
             "epoch": 3, "global_step": 30, "metrics": {"val_top1": 50.0}, "config": cfg.to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, model


def write_images(root, counts: dict, *, size: int = 40, seed: int = 0) -> list:
    """``counts = {"class0": 3, ...}``: random RGB JPEGs in ``root/<class>/``; returns the paths."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for name, n in counts.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
            p = d / f"{i}.jpg"
            Image.fromarray(pixels).save(p, quality=90)
            paths.append(p)
    return paths


def three_class_folder(root):
    """train/{cat,dog,fox} (8 images each) and val (2 each): 40x48 JPEGs, the fault and
    fine-tuning tests' tiny dataset."""
    write_images(root / "train", {"cat": 8, "dog": 8, "fox": 8}, size=40, seed=1)
    write_images(root / "val", {"cat": 2, "dog": 2, "fox": 2}, size=40, seed=2)
    return root

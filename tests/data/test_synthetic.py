"""The synthetic dataset: random images made in memory, for timing the trainer's own loop."""

import torch

from inception.config import load_config
from inception.data.synthetic import synthetic_dataset
from inception.engine.loop import train


def test_synthetic_images_are_seeded_and_labelled_in_turn():
    a = synthetic_dataset(True, images=25, classes=4, size=12)
    b = synthetic_dataset(True, images=25, classes=4, size=12)
    val = synthetic_dataset(False, images=25, classes=4, size=12)
    assert a.images.shape == (25, 3, 12, 12) and a.images.dtype == torch.uint8 and torch.equal(a.images, b.images)
    assert a.labels.tolist()[:6] == [0, 1, 2, 3, 0, 1] and a.classes == ["class0", "class1", "class2", "class3"]
    assert len(val) == 2 and not torch.equal(val.images, a.images[:2])
    assert len(synthetic_dataset(False, images=3, classes=12, size=4).classes[11]) == len("class11")


def test_training_on_synthetic_data_needs_no_files(tmp_path):
    """--dataset synthetic: no data_dir; the images are batched on the device at the asked size."""
    cfg = load_config(None, {"data.dataset": "synthetic", "data.image_size": 16, "data.synthetic_images": 40,
                             "data.synthetic_classes": 3, "train.epochs": 2, "train.batch_size": 8,
                             "train.output_dir": str(tmp_path / "run"), "train.threads": 1})
    result = train(cfg, progress=False)
    assert result.epochs_done == 2 and result.global_step == 10
    assert result.last_metrics["val_count"] == 4 and 0 <= result.last_metrics["val_top1"] <= 100

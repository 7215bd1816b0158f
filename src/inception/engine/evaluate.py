"""Evaluation: top-1, top-5, loss, image count and img/s of a model over a loader, or of a checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from .. import accel
from ..accel import resolve_device
from ..config import Config, apply
from ..data import Preprocessing, build_eval_loader
from ..errors import UserError
from ..models import apply_weights, create_model, eval_weights
from ..report import write_eval_report
from ..spec import DataConfig
from ..utils import atomic_write_text
from .amp import Precision
from .checkpoint import load_checkpoint, resolve_checkpoint
from .distributed import all_reduce_sum
from .metrics import topk_correct

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, criterion: nn.Module | None = None,
             progress: bool = False, desc: str = "eval", num_classes: int | None = None, flip: bool = False) -> dict:
    """Top-1, top-5, mean loss, image count and img/s of ``model`` over ``loader``.

    ``flip``: test-time augmentation by horizontal flip; the logits are the mean of those of
    each image and of its mirror (twice the compute).

    Under torch.distributed each process passes its own shard; counts and loss sums are
    summed over processes, so the figures are those of the whole dataset. With
    ``num_classes``, ``confusion`` (a ``num_classes x num_classes`` int64 numpy array, rows
    true, columns predicted) comes back too."""
    criterion = criterion or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    n = torch.zeros((), dtype=torch.long, device=device)
    c1 = torch.zeros((), dtype=torch.long, device=device)
    c5 = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes if num_classes else 1, dtype=torch.long, device=device)
    start = time.perf_counter()
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        images, target = batch[0], batch[1]      # a third item lists skipped unreadable images
        if images is None:
            continue
        images = images.to(device, non_blocking=True)     # no-ops for our loaders (already there)
        target = target.to(device, non_blocking=True)
        logits = model(images)
        if flip:
            logits = (logits + model(images.flip(-1))) / 2
        loss_sum += criterion(logits, target).double() * target.shape[0]
        a, b = topk_correct(logits, target)
        c1 += a
        c5 += b
        n += target.shape[0]
        if num_classes:
            confusion += torch.bincount(target * num_classes + logits.argmax(1), minlength=num_classes ** 2)
    all_reduce_sum(n, c1, c5, loss_sum, confusion)          # exact totals over processes (each saw its own shard)
    count = int(n.item())
    elapsed = time.perf_counter() - start
    model.train(was_training)
    extra = {"confusion": confusion.view(num_classes, num_classes).cpu().numpy()} if num_classes else {}
    if count == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "count": 0, "img_per_s": 0.0, **extra}
    return {**extra,
        "top1": 100.0 * c1.item() / count,
        "top5": 100.0 * c5.item() / count,
        "loss": loss_sum.item() / count,
        "count": count,
        "img_per_s": count / max(elapsed, 1e-9),
    }


class Restored(NamedTuple):
    model: nn.Module
    ckpt: dict
    cfg: Config
    path: Path
    data_config: DataConfig           # the run's preprocessing: the card's, with the checkpoint's mean/std


def restore_model(checkpoint: str | Path) -> Restored:
    """``(model, checkpoint dict, Config, path, data config)`` for a checkpoint file or run
    directory: the model rebuilt with its options and weights, on the CPU, in eval mode, and the
    preprocessing the run used. The weights are the EMA's when the checkpoint says they scored
    higher (``best_source``)."""
    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    cfg = apply(Config(), ckpt["config"], f" in {path}")
    model = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], **ckpt.get("model_options", {}))
    loaded = apply_weights(model, eval_weights(ckpt), ckpt, path=path)
    return Restored(model.eval(), ckpt, cfg, path, loaded.data_config)


def evaluate_checkpoint(checkpoint: str | Path, *, data_dir: str | None = None, dataset: str | None = None,
                        split: str | None = None, batch_size: int | None = None, device: str = "auto",
                        workers: int | None = None, json_path: str | Path | None = None,
                        progress: bool = False, report_dir: str | Path | None = None,
                        tta_flip: bool | None = None, precision: str = "auto",
                        channels_last: bool | None = None, image_size: int | None = None,
                        crop_pct: float | None = None) -> dict:
    """Evaluate ``checkpoint`` (a file or a run directory) on the data it was trained on,
    or on ``data_dir`` / ``dataset`` / ``split`` when given (``split="holdout"``: the part of
    the train split a run with ``data.holdout`` validated on). Labels follow the checkpoint's
    class names, so any folder with the same classes (or a subset) can be used. With
    ``report_dir``, a confusion-matrix PNG, a per-class CSV and a JSON report are written
    there, and ``report_lines`` (the per-class table) comes back. ``tta_flip``: average each
    image's logits with its mirror's (default: as the run was evaluated, ``train.tta_flip``).
    ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``) and ``channels_last`` (None: the
    device's default) as in training: ``auto`` is bf16 autocast where the device has native
    bf16 (:func:`~inception.accel.speed_defaults`); ``speed`` in the result names the choice.
    ``image_size`` and ``crop_pct`` replace the run's eval preprocessing (resize the short side
    to ``image_size / crop_pct``, crop ``image_size``), as timm's ``validate.py --img-size
    --crop-pct``: a model trained on random crops often scores higher on larger test images
    (Touvron et al., "Fixing the train-test resolution discrepancy", 2019)."""
    model, ckpt, cfg, path, data_config = restore_model(checkpoint)
    if dataset:
        apply(cfg, {"data": {"dataset": dataset}}, " (command line)")
    if data_dir:
        apply(cfg, {"data": {"data_dir": data_dir}}, " (command line)")
    if workers is not None:
        apply(cfg, {"data": {"workers": workers}}, " (command line)")
    if image_size is not None:
        if image_size < data_config.min_input_size:
            raise UserError(f"--image-size {image_size} is below {ckpt['arch']}'s minimum input size "
                            f"{data_config.min_input_size}; use {data_config.min_input_size} or more")
        apply(cfg, {"data": {"eval_image_size": image_size}}, " (command line)")
    if crop_pct is not None:
        if not 0 < crop_pct <= 1:
            raise UserError(f"--crop-pct {crop_pct} must be in (0, 1]: the fraction of the resized image "
                            "that is cropped (1.0 = the whole image)")
        apply(cfg, {"data": {"crop_pct": crop_pct}}, " (command line)")
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is not valid; choose {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    defaults = accel.speed_defaults(dev)
    precision = defaults.precision if precision == "auto" else precision
    channels_last = defaults.channels_last if channels_last is None else channels_last
    amp = Precision(precision, dev)
    model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    loader = build_eval_loader(cfg.data, data_config, split=split, class_names=ckpt["class_names"],
                               batch_size=batch_size or cfg.train.batch_size, device=dev, channels_last=channels_last)
    classes = list(ckpt["class_names"])
    flip = cfg.train.tta_flip if tta_flip is None else tta_flip
    with amp.autocast():
        result = evaluate(model, loader, dev, progress=progress, num_classes=len(classes) if report_dir else None,
                          flip=flip)
    pre = Preprocessing.from_config(cfg.data, data_config)
    result.update(image_size=pre.eval_size, crop_pct=pre.crop_pct, tta_flip=flip, precision=precision,
                  channels_last=channels_last, speed=defaults.describe(precision, channels_last),
                  checkpoint=str(path), arch=ckpt["arch"], epoch=ckpt.get("epoch"),
                  weights=ckpt.get("best_source", "model"), dataset=cfg.data.dataset, split=split or cfg.data.val_split)
    if report_dir:
        confusion = result.pop("confusion")
        result["report_lines"] = write_eval_report(result, confusion, classes, report_dir)
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    return result

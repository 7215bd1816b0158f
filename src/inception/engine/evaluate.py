"""Evaluate a checkpoint: top-1, top-5, loss, image count and img/s."""

from __future__ import annotations

import json
from pathlib import Path


from ..config import Config, apply
from ..data import build_eval_dataset, build_loader
from ..models import apply_weights, create_model
from ..utils import atomic_write_text, resolve_device
from .checkpoint import load_checkpoint, resolve_checkpoint
from .metrics import evaluate


def restore_model(checkpoint: str | Path) -> tuple:
    """``(model, checkpoint dict, Config, path)`` for a checkpoint file or run directory:
    the model rebuilt with its options and weights (and data config), on the CPU, in eval mode."""
    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    cfg = apply(Config(), ckpt["config"], f" in {path}")
    model = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], **ckpt.get("model_options", {}))
    apply_weights(model, ckpt["model"], ckpt, path=path)
    return model.eval(), ckpt, cfg, path


def evaluate_checkpoint(checkpoint: str | Path, *, data_dir: str | None = None, dataset: str | None = None,
                        split: str | None = None, batch_size: int | None = None, device: str = "auto",
                        workers: int | None = None, json_path: str | Path | None = None,
                        progress: bool = False, report_dir: str | Path | None = None) -> dict:
    """Evaluate ``checkpoint`` (a file or a run directory) on the data it was trained on,
    or on ``data_dir`` / ``dataset`` / ``split`` when given. Labels follow the checkpoint's
    class names, so any folder with the same classes (or a subset) can be used. With
    ``report_dir``, a confusion-matrix PNG, a per-class CSV and a JSON report are written
    there, and ``report_lines`` (the per-class table) comes back."""
    model, ckpt, cfg, path = restore_model(checkpoint)
    if dataset:
        apply(cfg, {"data": {"dataset": dataset}}, " (command line)")
    if data_dir:
        apply(cfg, {"data": {"data_dir": data_dir}}, " (command line)")
    if workers is not None:
        apply(cfg, {"data": {"workers": workers}}, " (command line)")
    dev = resolve_device(device)
    model.to(dev)
    ds = build_eval_dataset(cfg.data, model.data_config, split=split, class_names=ckpt["class_names"])
    loader = build_loader(ds, batch_size or cfg.train.batch_size, train=False, workers=cfg.data.workers,
                          seed=0, device=dev)
    classes = list(ckpt["class_names"])
    result = evaluate(model, loader, dev, progress=progress, num_classes=len(classes) if report_dir else None)
    result.update(checkpoint=str(path), arch=ckpt["arch"], epoch=ckpt.get("epoch"),
                  dataset=cfg.data.dataset, split=split or cfg.data.val_split)
    if report_dir:
        from ..report import write_eval_report

        confusion = result.pop("confusion")
        result["report_lines"] = write_eval_report(result, confusion, classes, report_dir)
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    return result

"""The training loop: one function, readable top to bottom.

    train(cfg) -> datasets + model -> optimizer + per-step LR schedule -> epochs of
    (forward, loss with label smoothing and aux heads, backward, clip, step) -> periodic
    checkpoints, logs and metrics.jsonl -> eval every epoch -> last/best checkpoints.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import __version__
from ..config import Config, apply, set_key, validate
from ..data import build_datasets, build_loader
from ..errors import UserError
from ..models import AuxOutputs, create_model, read_weights, weights_data_config, apply_weights
from ..models.pretrained import CHECKPOINT_FORMAT
from ..utils import resolve_device, seed_everything
from .checkpoint import CheckpointManager, load_checkpoint, resolve_checkpoint
from .metrics import MetricsLog, evaluate, topk_correct
from .optim import build_optimizer, build_scheduler

log = logging.getLogger("inception")


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    global_step: int
    best_top1: float
    last_metrics: dict
    losses: list[float]          # training loss at every log step (for tests and plots)


def _run_dir(cfg: Config) -> Path:
    if cfg.train.output_dir:
        return Path(cfg.train.output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model.name}-{cfg.data.dataset}-{stamp}"


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory '{run_dir}' is not writable ({e.strerror}); choose another --output-dir") from None


def _file_logger(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def compute_loss(out: Tensor | AuxOutputs, target: Tensor, criterion: nn.Module, aux_weight: float) -> tuple[Tensor, Tensor]:
    """``(loss, main_logits)``: cross-entropy of the main logits plus ``aux_weight`` times
    that of each auxiliary head."""
    if isinstance(out, AuxOutputs):
        loss = criterion(out.logits, target)
        for aux in out.aux:
            loss = loss + aux_weight * criterion(aux, target)
        return loss, out.logits
    return criterion(out, target), out


def checkpoint_state(*, cfg: Config, model, optimizer, scheduler, class_names, epoch: int, epoch_step: int,
                     global_step: int, best_top1: float, metrics: dict | None) -> dict:
    """Everything a checkpoint holds: enough to resume, evaluate or export on its own."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "inception_version": __version__,
        "arch": cfg.model.name,
        "model_class": type(model).__name__,
        "model_options": dict(cfg.model.options),
        "num_classes": model.num_classes,
        "class_names": list(class_names),
        "data_config": model.data_config.to_dict(),
        "image_size": cfg.data.image_size or model.data_config.input_size[1],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "epoch_step": epoch_step,
        "global_step": global_step,
        "best_top1": best_top1,
        "metrics": metrics or {},
        "config": cfg.to_dict(),
    }


def resume_config(resume: str | os.PathLike, overrides: dict | None = None) -> Config:
    """The config of the run that wrote checkpoint ``resume`` (a file or a run directory),
    with ``overrides`` (e.g. more epochs, another device) on top. The run continues in the
    same run directory unless ``train.output_dir`` is overridden."""
    path = resolve_checkpoint(resume)
    ckpt = load_checkpoint(path)
    cfg = apply(Config(), ckpt["config"], f" in {path}")
    cfg.train.output_dir = str(path.parent.parent if path.parent.name == "checkpoints" else path.parent)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


def train(cfg: Config, *, resume: str | os.PathLike | None = None, progress: bool | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; return where the run went and how it ended.

    With ``resume`` (a checkpoint or run directory), model, optimizer, scheduler, epoch and
    step are restored from it; build ``cfg`` with :func:`resume_config` to continue the
    same run."""
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    progress = sys.stderr.isatty() if progress is None else progress

    ckpt = None
    if resume:
        resume = resolve_checkpoint(resume)
        ckpt = load_checkpoint(resume)

    # Model preprocessing (and pretrained weights, which may change mean/std), then data.
    weights = read_weights(cfg.model.pretrained) if cfg.model.pretrained and ckpt is None else None
    with torch.device("meta"):
        probe = create_model(cfg.model.name, num_classes=1, **cfg.model.options)
    data_config = weights_data_config(probe, weights[1]) if weights else probe.data_config
    if ckpt is not None:
        data_config = weights_data_config(probe, ckpt)
    image_size = cfg.data.image_size or data_config.input_size[1]
    if image_size < data_config.min_input_size:
        raise UserError(f"data.image_size {image_size} is below {cfg.model.name}'s minimum "
                        f"{data_config.min_input_size}; use --set data.image_size={data_config.min_input_size} or more")
    train_set, val_set = build_datasets(cfg.data, data_config)
    class_names = list(train_set.classes)
    num_classes = cfg.model.num_classes or len(class_names)
    if num_classes != len(class_names):
        raise UserError(f"model.num_classes is {num_classes} but the data has {len(class_names)} classes; "
                        f"remove model.num_classes or set it to {len(class_names)}")
    if len(train_set) < cfg.train.batch_size:
        raise UserError(f"train.batch_size {cfg.train.batch_size} is larger than the training set "
                        f"({len(train_set)} images); lower --batch-size")

    model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model.options)
    if weights:
        apply_weights(model, *weights, path=cfg.model.pretrained)
    model.data_config = data_config
    model.to(device)

    train_loader = build_loader(train_set, cfg.train.batch_size, train=True, workers=cfg.data.workers,
                                seed=cfg.train.seed, device=device)
    val_loader = build_loader(val_set, cfg.train.batch_size, train=False, workers=cfg.data.workers,
                              seed=cfg.train.seed, device=device)
    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()

    start_epoch, start_step, global_step, best_top1, last_metrics = 0, 0, 0, -1.0, {}
    if ckpt is not None:
        apply_weights(model, ckpt["model"], ckpt, path=resume)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, start_step = int(ckpt["epoch"]), int(ckpt["epoch_step"])
        global_step, best_top1 = int(ckpt["global_step"]), float(ckpt["best_top1"])
        last_metrics = ckpt.get("metrics", {})
        if start_epoch >= cfg.train.epochs:
            raise UserError(f"run in '{resume}' already finished {start_epoch} epochs; raise --epochs to train longer")

    run_dir = _run_dir(cfg)
    _check_writable(run_dir)
    handler = _file_logger(run_dir)
    try:
        cfg.save(run_dir / "config.yaml")
        metrics_log = MetricsLog(run_dir / "metrics.jsonl")
        ckpts = CheckpointManager(run_dir, cfg.train.keep_checkpoint_max)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("run %s: %s (%.2fM params) on %s, %d train / %d val images, %d classes, %dx%d, %d steps/epoch",
                 run_dir, cfg.model.name, n_params / 1e6, device, len(train_set), len(val_set), num_classes,
                 image_size, image_size, steps_per_epoch)
        if ckpt is not None:
            log.info("resumed from %s at epoch %d, step %d", resume, start_epoch + 1, global_step)

        def save(epoch: int, epoch_step: int, best: bool = False) -> None:
            state = checkpoint_state(cfg=cfg, model=model, optimizer=optimizer, scheduler=scheduler,
                                     class_names=class_names, epoch=epoch, epoch_step=epoch_step,
                                     global_step=global_step, best_top1=best_top1, metrics=last_metrics)
            ckpts.save(state, global_step, best=best)

        losses: list[float] = []
        for epoch in range(start_epoch, cfg.train.epochs):
            model.train()
            if getattr(train_loader, "generator", None) is not None:
                train_loader.generator.manual_seed(cfg.train.seed + epoch)   # the order depends on the epoch only
            skip = start_step if epoch == start_epoch else 0
            batches = itertools.islice(iter(train_loader), skip, None)
            bar = tqdm(batches, total=steps_per_epoch, initial=skip, disable=not progress, dynamic_ncols=True,
                       desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen, epoch_start = 0, time.perf_counter()
            window_start, window_images = time.perf_counter(), 0
            for i, (images, target) in enumerate(bar, start=skip):
                images = images.to(device, non_blocking=True)
                target = target.to(device, non_blocking=True)
                loss, logits = compute_loss(model(images), target, criterion, cfg.model.aux_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                scheduler.step()
                global_step += 1
                loss_sum += loss.detach()
                correct += topk_correct(logits.detach(), target, (1,))[0]
                seen += target.shape[0]
                window_images += target.shape[0]

                if global_step % cfg.train.log_interval == 0 or i + 1 == steps_per_epoch:
                    loss_value = loss.item()                                   # the only sync, at log steps
                    if not math.isfinite(loss_value):
                        raise UserError(f"training loss became {loss_value} at step {global_step}; "
                                        "lower --lr or enable optim.grad_clip")
                    now = time.perf_counter()
                    ips = window_images / max(now - window_start, 1e-9)
                    lr = optimizer.param_groups[0]["lr"]
                    losses.append(loss_value)
                    record = {"kind": "step", "epoch": epoch + 1, "step": global_step, "loss": loss_value,
                              "lr": lr, "img_per_s": ips}
                    metrics_log.write(record)
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}", ips=f"{ips:.0f}")
                    # With a progress bar the console shows these figures in the bar; train.log always gets them.
                    log.info("epoch %d step %d loss %.4f lr %.5g %.1f img/s", epoch + 1, global_step, loss_value,
                             lr, ips, extra={"in_progress_bar": progress})
                    window_start, window_images = now, 0
                if cfg.train.ckpt_interval and global_step % cfg.train.ckpt_interval == 0 and i + 1 < steps_per_epoch:
                    save(epoch, i + 1)
            bar.close()

            epoch_time = time.perf_counter() - epoch_start
            steps_run = steps_per_epoch - skip
            record = {"kind": "epoch", "epoch": epoch + 1, "step": global_step, "epoch_time_s": epoch_time,
                      "ms_per_step": 1000 * epoch_time / max(steps_run, 1),
                      "train_loss": loss_sum.item() / max(steps_run, 1),
                      "train_top1": 100.0 * correct.item() / max(seen, 1),
                      "img_per_s": seen / max(epoch_time, 1e-9), "lr": optimizer.param_groups[0]["lr"]}
            is_best = False
            if (epoch + 1) % cfg.train.eval_interval == 0 or epoch + 1 == cfg.train.epochs:
                val = evaluate(model, val_loader, device, criterion=eval_criterion, progress=progress)
                last_metrics = {"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"],
                                "val_count": val["count"]}
                record.update(last_metrics)
                is_best = val["top1"] > best_top1
                best_top1 = max(best_top1, val["top1"])
            metrics_log.write(record)
            log.info("epoch %d/%d: %.1fs, %.1f ms/step, %.0f img/s, train loss %.4f, train top-1 %.2f%%%s",
                     epoch + 1, cfg.train.epochs, epoch_time, record["ms_per_step"], record["img_per_s"],
                     record["train_loss"], record["train_top1"],
                     (f", val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}% "
                      f"loss {record['val_loss']:.4f}") if "val_top1" in record else "")
            save(epoch + 1, 0, best=is_best)
        log.info("finished: best val top-1 %.2f%%, run directory %s", best_top1, run_dir)
        return TrainResult(run_dir=run_dir, epochs_done=cfg.train.epochs, global_step=global_step,
                           best_top1=best_top1, last_metrics=last_metrics, losses=losses)
    finally:
        log.removeHandler(handler)
        handler.close()

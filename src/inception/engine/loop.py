"""The training loop, in the shape of torchvision's reference scripts.

    train(cfg)
      state = setup(cfg)                 model, optimizer, schedule, precision, loaders, counters
      for each epoch:
        train_one_epoch(state)           forward, loss (+ aux heads), backward, clip, step;
                                         maybe_stop(state) after each step (signal, time limit)
        end_epoch(state, tally)          totals, evaluation, metrics.jsonl, last/best checkpoints
      finish(state)                      the result, whichever way the run ended

Exact resume, checkpoints, run status, logging and stopping are small helpers in
:mod:`.checkpoint`, :mod:`inception.runs`, :mod:`.metrics` and :mod:`.stopping`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import accel
from ..accel import resolve_device
from ..config import Config
from ..data import build_datasets, build_loaders
from ..errors import UserError
from ..models import apply_weights, create_model, model_data_config, read_weights, weights_data_config
from ..runs import check_writable, new_run_dir, write_status
from ..utils import seed_everything
from . import distributed as dist_utils
from . import ema as ema_utils
from .amp import Precision
from .checkpoint import CheckpointManager, find_resume, load_own_state, resume_config, save_checkpoint, set_rng_state
from .evaluate import evaluate
from .finetune import freeze_backbone, freeze_batchnorm
from .metrics import MetricsLog, epoch_line, file_logger, log_step
from .optim import build_optimizer, build_scheduler
from .state import EpochTally, TrainResult, TrainState
from .step import TrainStep, compute_loss
from .stopping import Deadline, StopRequest

__all__ = ["TrainResult", "TrainState", "compute_loss", "resume_config", "setup", "train"]

log = logging.getLogger("inception")


# --------------------------------------------------------------------------------------

def train(cfg: Config, *, resume: str | os.PathLike | None = None, progress: bool | None = None,
          auto_resume: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; return where the run went and how it ended.

    With ``resume`` (a checkpoint or run directory), model, optimizer, scheduler, grad
    scaler, epoch, step and every RNG are restored from it, so the run continues exactly
    as if it had never stopped; build ``cfg`` with :func:`resume_config` to continue the
    same run. With ``auto_resume`` and an explicit ``train.output_dir`` that already holds
    checkpoints, the newest good one (checksum verified) is resumed. Under torchrun, each
    process trains on its shard of every batch (DDP).

    SIGTERM or SIGINT stops the run after the current step (under torchrun: at the next
    sync step, where the processes agree) with a checkpoint, as does ``train.time_limit``;
    the result then has ``stopped_by`` and ``exit_code`` set."""
    owns_group = not dist_utils.is_initialized()
    info, device = dist_utils.init_distributed(resolve_device(cfg.train.device))
    handler, state = None, None
    run_dir = Path(cfg.train.output_dir) if cfg.train.output_dir else new_run_dir(cfg.model.name, cfg.data.dataset)
    restore_speed = accel.tune_for_speed(device)   # cuDNN autotuning and TF32 on CUDA, put back when done
    try:
        with StopRequest() as stop:
            if info.is_main:   # an unwritable output directory is an error now, not after the first epoch
                check_writable(run_dir)
                handler = file_logger(run_dir, log)
            state = setup(cfg, run_dir=run_dir, resume=resume, auto_resume=auto_resume, progress=progress,
                          info=info, device=device, stop=stop)
            while state.epoch < cfg.train.epochs and not state.finished:
                tally = train_one_epoch(state)
                if state.stopped:
                    break
                end_epoch(state, tally)
                state.epoch += 1
            return finish(state)
    except BaseException as e:
        if info.is_main and state is not None and not isinstance(e, KeyboardInterrupt):
            write_status(run_dir, "failed", error=str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
        raise
    finally:
        restore_speed()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if state is not None and state.metrics_log is not None:
            state.metrics_log.close()
        if owns_group:            # leave a process group the caller set up alone
            dist_utils.cleanup()


def setup(cfg: Config, *, run_dir: Path, resume, auto_resume: bool, progress: bool | None,
          info: dist_utils.DistInfo, device: torch.device, stop: StopRequest) -> TrainState:
    """Model, data, optimizer, schedule and precision for ``cfg``, restored from a
    checkpoint when the run resumes one."""
    deadline = Deadline(cfg.train.time_limit)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)            # the same on every rank: identical initial weights
    defaults = accel.speed_defaults(device)
    channels_last = defaults.channels_last if cfg.train.channels_last is None else cfg.train.channels_last
    precision_name = defaults.precision if cfg.train.precision == "auto" else cfg.train.precision
    resume, ckpt, auto = find_resume(resume, run_dir, auto_resume=auto_resume, arch=cfg.model.name,
                                     explicit_dir=bool(cfg.train.output_dir))

    # The run's preprocessing: the model card's, with the mean/std of the checkpoint or pretrained weights.
    weights = read_weights(cfg.model.pretrained) if cfg.model.pretrained and ckpt is None else None
    data_config = model_data_config(cfg.model.name, cfg.model.options)
    source = ckpt if ckpt is not None else weights[1] if weights else None
    if source is not None:
        data_config = weights_data_config(data_config, source)
    image_size = cfg.data.image_size or data_config.input_size[1]
    if image_size < data_config.min_input_size:
        raise UserError(f"data.image_size {image_size} is below {cfg.model.name}'s minimum "
                        f"{data_config.min_input_size}; use --set data.image_size={data_config.min_input_size} or more")
    datasets = build_datasets(cfg.data, data_config)
    class_names = list(datasets[0].classes)
    num_classes = cfg.model.num_classes or len(class_names)
    if num_classes != len(class_names):
        raise UserError(f"model.num_classes is {num_classes} but the data has {len(class_names)} classes; "
                        f"remove model.num_classes or set it to {len(class_names)}")
    train_loader, val_loader = build_loaders(cfg.data, data_config, info, batch_size=cfg.train.batch_size,
                                             seed=cfg.train.seed, device=device, channels_last=channels_last,
                                             datasets=datasets, epochs=cfg.train.epochs)

    model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model.options)
    if weights:
        apply_weights(model, *weights, path=cfg.model.pretrained)
    if cfg.model.freeze_backbone:
        log.info("frozen backbone: %.2fM parameters; training the classifier only", freeze_backbone(model) / 1e6)
    if ckpt is not None:
        load_own_state(model, ckpt["model"], resume)     # strict: a run resumes only its own model
    if cfg.train.sync_bn and info.enabled:
        dist_utils.check_sync_bn(device)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ema = ema_utils.ModelEma(model, cfg.train.ema_decay, warmup=cfg.train.ema_warmup) if cfg.train.ema_decay else None
    optimizer = build_optimizer(model, cfg.optim, device, backbone_lr_scale=cfg.model.backbone_lr_scale)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch=len(train_loader), epochs=cfg.train.epochs)
    device_ids = [device.index] if accel.is_discrete(device) else None
    wrapped = DistributedDataParallel(model, device_ids=device_ids) if info.enabled else model
    precision = Precision(precision_name, device, cfg.train.loss_scale, dynamic=cfg.train.dynamic_loss_scale,
                          guard=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    compiled = accel.compile_default(device) if cfg.train.compile is None else cfg.train.compile
    step = TrainStep(wrapped, criterion, precision, optimizer, [p for p in model.parameters() if p.requires_grad],
                     aux_weight=cfg.model.aux_weight, grad_clip=cfg.optim.grad_clip, compile=compiled,
                     compile_mode=cfg.train.compile_mode, distributed=info.enabled)
    state = TrainState(
        cfg=cfg, info=info, device=device, run_dir=run_dir, model=wrapped, step=step, raw_model=model,
        optimizer=optimizer, scheduler=scheduler, precision=precision, criterion=criterion, train_loader=train_loader,
        val_loader=val_loader, class_names=class_names, data_config=data_config, stop=stop, deadline=deadline, ema=ema,
        progress=(sys.stderr.isatty() if progress is None else progress) and info.is_main)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.precision.load_state_dict(ckpt.get("scaler", {}))
        if ema is not None:
            ema_utils.restore(ema, ckpt, resume)
        state.epoch, state.start_step = int(ckpt["epoch"]), int(ckpt["epoch_step"])
        state.global_step, state.best_top1 = int(ckpt["global_step"]), float(ckpt["best_top1"])
        state.last_metrics = ckpt.get("metrics", {})
        if state.epoch >= cfg.train.epochs:
            if not auto:
                raise UserError(f"run in '{resume}' already finished {state.epoch} epochs; raise --epochs to "
                                "train longer")
            log.info("run %s already finished %d epochs; nothing to do (raise --epochs to train longer, or "
                     "--no-resume to start over)", run_dir, state.epoch)
            state.finished = True
            return state

    if state.main:
        cfg.save(run_dir / "config.yaml")
        state.metrics_log = MetricsLog(run_dir / "metrics.jsonl",
                                       tensorboard=run_dir / "tensorboard" if cfg.train.tensorboard else None)
        state.ckpts = CheckpointManager(run_dir, cfg.train.keep_checkpoint_max)
        write_status(run_dir, "running", model=cfg.model.name, dataset=cfg.data.dataset, epochs=cfg.train.epochs)
        log.info("run %s: %s (%.2fM params) on %s x%d, %d train / %d val images, %d classes, %dx%d, "
                 "%d steps/epoch of %d images; %s step%s", run_dir, cfg.model.name,
                 sum(p.numel() for p in model.parameters()) / 1e6, device, info.world_size,
                 len(train_loader.dataset), len(val_loader.dataset), num_classes, image_size, image_size,
                 state.steps_per_epoch, cfg.train.batch_size * info.world_size, step.what,
                 " (the first steps compile it: a minute or two; train.compile=false turns it off)"
                 if step.compiled is not None and cfg.train.compile is None else "")
        log.info("speed: %s%s", defaults.describe(precision_name, channels_last),
                 "; for fp32 NCHW: --precision fp32 --set train.channels_last=false"
                 if (precision_name, channels_last) != ("fp32", False) else "")
        if cfg.data.holdout:
            log.info("validation: %d images held out of the train split '%s' (data.holdout %g, data.holdout_seed "
                     "%d), not data.val_split '%s': for tuning; report on val with data.holdout 0",
                     len(val_loader.dataset), cfg.data.train_split, cfg.data.holdout, cfg.data.holdout_seed,
                     cfg.data.val_split)
        if ckpt is not None:
            log.info("resumed from %s at epoch %d, step %d", resume, state.epoch + 1, state.global_step)
    if ckpt is not None:
        set_rng_state(ckpt.get("rng", {}))   # after everything that draws at start-up: the run continues exactly
    return state


def train_one_epoch(state: TrainState) -> EpochTally:
    """One epoch (from ``state.start_step`` on); stops early, with a checkpoint, when
    :func:`maybe_stop` says so (``state.stopped`` is then set)."""
    cfg, model = state.cfg, state.model
    model.train()
    if cfg.model.freeze_bn or cfg.model.freeze_backbone:
        freeze_batchnorm(state.raw_model, backbone_only=not cfg.model.freeze_bn)
    tally = EpochTally(state.device, start=state.start_step)
    state.train_loader.set_epoch(state.epoch, start_batch=tally.start)   # the order is a function of (seed, epoch)
    state.start_step = 0
    check_every = min(cfg.train.log_interval, cfg.train.max_bad_steps)
    bar = tqdm(state.train_loader, total=state.steps_per_epoch, initial=tally.start, disable=not state.progress,
               dynamic_ncols=True, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", leave=False)
    for i, (images, target, skipped) in enumerate(bar, start=tally.start):
        _note_skipped(state, tally, images, skipped)
        loss, logits, applied = state.step(images, target)   # a non-finite step is skipped, not applied
        if state.ema is not None:
            state.ema.update(state.raw_model, applied)                          # ... and leaves the EMA alone
        state.scheduler.step()
        state.global_step += 1
        tally.add(loss, logits, target)

        last = i + 1 == state.steps_per_epoch
        log_now = state.global_step % cfg.train.log_interval == 0 or last
        state.stopped = maybe_stop(state, tally, loss, sync=log_now or state.global_step % check_every == 0)
        if state.stopped:
            state.stop_step, state.stop_loss = i + 1, tally.loss
            save_checkpoint(state, *((state.epoch + 1, 0) if last else (state.epoch, i + 1)))
            break
        if log_now:
            log_step(state, tally, bar)
        if cfg.train.ckpt_interval and state.global_step % cfg.train.ckpt_interval == 0 and not last:
            save_checkpoint(state, state.epoch, i + 1)
    bar.close()
    return tally


def maybe_stop(state: TrainState, tally: EpochTally, loss: Tensor, *, sync: bool) -> str | None:
    """``"signal"`` or ``"time limit"`` when the run must stop after this step, else None.

    One process checks after every step (a flag and a clock read: no device sync). Several
    must stop at the same step, so they decide at sync steps only, through the loop's one
    all-reduce, which also carries the loss for the log line and the streak of non-finite
    losses (too long a streak stops the run with an error)."""
    if sync:
        flags = torch.stack([loss.detach().float(), tally.bad_streak.float(),
                             torch.tensor(float(state.stop.requested), device=state.device),
                             torch.tensor(float(state.deadline.passed()), device=state.device)])
        dist_utils.all_reduce_sum(flags)
        loss_sum, streak, stopping, timed_out = flags.tolist()
        tally.loss = loss_sum / state.info.world_size
        if streak >= state.cfg.train.max_bad_steps:
            raise UserError(f"the loss was NaN/Inf for {int(streak)} consecutive steps (up to step "
                            f"{state.global_step}; each was skipped); the last good checkpoint is in "
                            f"{state.run_dir / 'checkpoints'}; lower --lr, enable optim.grad_clip, or use bf16 "
                            "instead of fp16")
    elif not state.info.enabled:
        stopping, timed_out = state.stop.requested, state.deadline.passed()
        if stopping or timed_out:
            tally.loss = float(loss.detach())
    else:
        return None
    return "signal" if stopping else "time limit" if timed_out else None


def end_epoch(state: TrainState, tally: EpochTally) -> None:
    """Totals over processes, evaluation (every ``eval_interval`` epochs and the last),
    the epoch's record in metrics.jsonl and the log, and the epoch's checkpoint."""
    cfg, info, epoch = state.cfg, state.info, state.epoch
    seconds = time.perf_counter() - tally.began
    steps = state.steps_per_epoch - tally.start
    totals = torch.stack([tally.loss_sum, tally.correct.float(), torch.tensor(float(tally.seen), device=state.device),
                          tally.bad_steps.float(), torch.tensor(float(len(tally.skipped)), device=state.device)])
    dist_utils.all_reduce_sum(totals)
    loss_total, correct, seen, bad, skipped = totals.tolist()
    if info.enabled and skipped:
        tally.skipped = dist_utils.gather_objects(tally.skipped)
    state.skipped_images += int(skipped)
    record = {"kind": "epoch", "epoch": epoch + 1, "step": state.global_step, "epoch_time_s": seconds,
              "ms_per_step": 1000 * seconds / max(steps, 1),
              "train_loss": loss_total / max(steps * info.world_size - bad, 1),
              "train_top1": 100.0 * correct / max(seen, 1), "img_per_s": seen / max(seconds, 1e-9),
              "lr": state.optimizer.param_groups[0]["lr"], "skipped_images": int(skipped), "skipped_steps": int(bad)}
    is_best = False
    if (epoch + 1) % cfg.train.eval_interval == 0 or epoch + 1 == cfg.train.epochs:
        state.last_metrics = validate(state)
        record.update(state.last_metrics)
        score = ema_utils.best_top1(state.last_metrics)       # the better of the model and its EMA
        is_best = score > state.best_top1
        state.best_top1 = max(state.best_top1, score)
    if state.main:
        if tally.skipped:
            with open(state.run_dir / "skipped_images.txt", "a", encoding="utf-8") as f:
                f.writelines(f"epoch {epoch + 1}\t{item.path}\t{item.reason}\n" for item in tally.skipped)
        state.metrics_log.write(record)
        log.info(epoch_line(record, cfg.train.epochs))
    save_checkpoint(state, epoch + 1, 0, best=is_best)


def validate(state: TrainState) -> dict:
    """``val_top1``, ``val_top5``, ``val_loss``, ``val_count`` of the plain model (no DDP
    collectives: ranks' shards may differ by a batch), with rank 0's BatchNorm statistics,
    i.e. the model the checkpoint holds; with an EMA, ``ema_val_*`` of it too, and
    ``best_source`` ("ema" or "model"), the one with the higher top-1."""
    metrics = {}
    for prefix, module in [("", state.raw_model)] + ([("ema_", state.ema.module)] if state.ema else []):
        dist_utils.broadcast_buffers(module)
        with state.precision.autocast():
            val = evaluate(module, state.val_loader, state.device, progress=state.progress, desc=f"{prefix}eval",
                           flip=state.cfg.train.tta_flip)
        metrics.update({f"{prefix}val_{k}": val[k] for k in ("top1", "top5", "loss", "count")})
    if state.ema is not None:
        metrics["best_source"] = "ema" if metrics["ema_val_top1"] > metrics["val_top1"] else "model"
    return metrics


def finish(state: TrainState) -> TrainResult:
    """The run's result: finished, stopped by a signal, or out of time (then evaluated as checkpointed)."""
    cfg, run_dir, main = state.cfg, state.run_dir, state.main
    result = TrainResult(run_dir=run_dir, epochs_done=state.epoch, global_step=state.global_step,
                         best_top1=state.best_top1, last_metrics=state.last_metrics, losses=state.losses,
                         skipped_images=state.skipped_images)
    if state.stopped == "signal":
        if main:
            write_status(run_dir, "stopped", reason=state.stop.name)
            log.warning("stopped by %s at epoch %d, step %d; checkpoint in %s; run the same command to continue",
                        state.stop.name, state.epoch + 1, state.global_step, run_dir / "checkpoints")
        result.stopped_by, result.exit_code = state.stop.name, 128 + state.stop.signum
        return result
    if state.stopped == "time limit":
        done = state.epoch + state.stop_step / state.steps_per_epoch
        metrics = {**validate(state), "train_loss": state.stop_loss,
                   "epoch_progress": done, "elapsed_s": state.deadline.elapsed()}
        if main:
            state.metrics_log.write({"kind": "time_limit", "epoch": round(done, 3), "step": state.global_step,
                                     **metrics})
            log.info("time limit %s reached after %.0f s: epoch %.2f of %d (step %d), loss %.4f, val top-1 %.2f%% "
                     "top-5 %.2f%%; checkpoint in %s (run the same command without --time-limit, or with a larger "
                     "one, to go on)", cfg.train.time_limit, metrics["elapsed_s"], done, cfg.train.epochs,
                     state.global_step, metrics["train_loss"], metrics["val_top1"], metrics["val_top5"],
                     run_dir / "checkpoints")
            write_status(run_dir, "stopped", reason="time limit", epoch=done, val_top1=metrics["val_top1"])
        result.stopped_by, result.last_metrics = "time limit", metrics
        result.best_top1 = max(state.best_top1, ema_utils.best_top1(metrics))
        return result
    if main and state.save_failed:
        raise UserError(f"training finished but its final checkpoint could not be written to {state.ckpts.dir}; "
                        "the newest checkpoint there is from an earlier step; free space and resume")
    if main and not state.finished:
        if state.skipped_images:
            log.warning("skipped %d unreadable images in all; they are listed in %s", state.skipped_images,
                        run_dir / "skipped_images.txt")
        log.info("finished: best val top-1 %.2f%%, run directory %s", state.best_top1, run_dir)
        write_status(run_dir, "finished", best_top1=state.best_top1)
    dist_utils.barrier()
    return result


# --------------------------------------------------------------------------------------

def _note_skipped(state: TrainState, tally: EpochTally, images, skipped: list) -> None:
    """Log and count the batch's unreadable images; a batch with none readable is an error."""
    tally.skipped += skipped
    for item in skipped:
        log.warning("skipped unreadable image %s: %s", item.path, item.reason)
    if images is None:
        raise UserError(f"every image of a batch at step {state.global_step + 1} was unreadable "
                        f"(e.g. {skipped[0].path}); run `inception check-data` on the dataset")

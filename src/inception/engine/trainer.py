"""The training loop: one function, readable top to bottom.

    train(cfg) -> datasets + model -> optimizer + per-step LR schedule -> epochs of
    (forward, loss with label smoothing and aux heads, backward, clip, step) -> periodic
    checkpoints, logs and metrics.jsonl -> eval every epoch -> last/best checkpoints.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import __version__
from ..config import Config, apply, parse_duration, set_key, validate
from ..data import build_datasets, build_loader
from ..errors import UserError
from ..models import AuxOutputs, create_model, read_weights, weights_data_config, apply_weights
from ..models.pretrained import CHECKPOINT_FORMAT
from ..utils import resolve_device, seed_everything
from torch.nn.parallel import DistributedDataParallel

from ..data.sampling import EpochSampler, SeededSamples, collate_skipping

from . import distributed as dist_utils
from .amp import Precision
from .checkpoint import CheckpointManager, load_checkpoint, load_latest, resolve_checkpoint
from .metrics import MetricsLog, ShardSampler, evaluate, topk_correct
from .finetune import freeze_backbone, freeze_batchnorm
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
    stopped_by: str | None = None    # "SIGTERM"/"SIGINT" when a signal stopped the run early
    exit_code: int = 0               # 128 + signal number then (143 for SIGTERM, 130 for SIGINT)
    skipped_images: int = 0


# --------------------------------------------------------------------------------------
# Exact resume: every RNG the run draws from

def rng_state() -> dict:
    """Python, NumPy, torch CPU (and CUDA) RNG states, in types ``weights_only`` loads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    if not state:
        return
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------
# Preemption: SIGTERM / SIGINT

class StopRequest:
    """The first SIGTERM/SIGINT asks the loop to stop after the current step (it writes a
    checkpoint and returns); a second one exits at once with 128 + the signal number."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        log.warning("%s received: finishing this step, writing a checkpoint, then exiting "
                    "(send it again to exit at once)", signal.Signals(signum).name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None


class _Stop(Exception):
    """Unwinds the loop after the stop checkpoint was written: ``reason`` is "signal" or
    "time limit"; ``loss`` and ``elapsed`` are the step's loss and the seconds since start."""

    def __init__(self, reason: str = "signal", loss: float = float("nan"), elapsed: float = 0.0) -> None:
        super().__init__(reason)
        self.reason, self.loss, self.elapsed = reason, loss, elapsed


def _time_limit_result(*, raw_model, val_loader, device, precision, criterion, progress, main, metrics_log, cfg,
                       run_dir, epoch, epoch_step, steps_per_epoch, global_step, best_top1, loss, losses, elapsed,
                       skipped_images) -> TrainResult:
    """The time limit's report: evaluate the model as checkpointed and say where the run got to."""
    epochs_done = epoch + (epoch_step / steps_per_epoch)
    metrics = {**_validate(raw_model, val_loader, device, precision, criterion, progress),
               "train_loss": loss, "epoch_progress": epochs_done, "elapsed_s": elapsed}
    if main:
        metrics_log.write({"kind": "time_limit", "epoch": round(epochs_done, 3), "step": global_step, **metrics})
        log.info("time limit %s reached after %.0f s: epoch %.2f of %d (step %d), loss %.4f, val top-1 %.2f%% "
                 "top-5 %.2f%%; checkpoint in %s (run the same command without --time-limit, or with a larger one, "
                 "to go on)", cfg.train.time_limit, elapsed, epochs_done, cfg.train.epochs, global_step, loss,
                 metrics["val_top1"], metrics["val_top5"], run_dir / "checkpoints")
        write_status(run_dir, "stopped", reason="time limit", epoch=epochs_done, val_top1=metrics["val_top1"])
    return TrainResult(run_dir=run_dir, epochs_done=epoch, global_step=global_step,
                       best_top1=max(best_top1, metrics["val_top1"]),
                       last_metrics=metrics, losses=losses, stopped_by="time limit", exit_code=0,
                       skipped_images=skipped_images)


def _validate(raw_model, val_loader, device, precision, criterion, progress) -> dict:
    """``val_top1``, ``val_top5``, ``val_loss``, ``val_count`` of the plain model (no DDP
    collectives: ranks' shards may differ by a batch), with rank 0's BatchNorm statistics,
    i.e. the model the checkpoint holds."""
    dist_utils.broadcast_buffers(raw_model)
    with precision.autocast():
        val = evaluate(raw_model, val_loader, device, criterion=criterion, progress=progress)
    return {"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"], "val_count": val["count"]}


def write_status(run_dir: Path, status: str, **extra) -> None:
    """``RUN/status.json``: running (with this process's pid and host), finished, stopped
    (signal or time limit) or failed; ``inception runs`` reads it."""
    import json
    import socket

    from ..utils import atomic_write_text

    record = {"status": status, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), **extra}
    try:
        atomic_write_text(run_dir / "status.json", json.dumps(record) + "\n")
    except OSError as e:           # never fail a run for its status file
        log.warning("could not write %s: %s", run_dir / "status.json", e)


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
                     global_step: int, best_top1: float, metrics: dict | None, scaler: dict | None = None) -> dict:
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
        "scaler": scaler or {},
        "epoch": epoch,
        "epoch_step": epoch_step,
        "global_step": global_step,
        "best_top1": best_top1,
        "metrics": metrics or {},
        "config": cfg.to_dict(),
        "rng": rng_state(),
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


def _train_loader(train_set, cfg: Config, info: dist_utils.DistInfo, device: torch.device, channels_last: bool,
                  image_size: int):
    """Device-resident batches for in-memory datasets (no DataLoader), else a DataLoader over a
    DistributedSampler (also with one process, so the data order is the same for any world size)."""
    if use_device_resident(train_set, cfg, image_size):
        from ..data.device import DeviceLoader

        return DeviceLoader.from_dataset(train_set, batch_size=cfg.train.batch_size, train=True, device=device,
                                         seed=cfg.train.seed, rank=info.rank, world_size=info.world_size,
                                         channels_last=channels_last)
    # The order is DistributedSampler's (the same for any world size); each sample's augmentation
    # is seeded by (seed, epoch, index), so a resumed epoch reproduces the batches exactly.
    sampler = EpochSampler(len(train_set), rank=info.rank, world_size=info.world_size, seed=cfg.train.seed)
    samples = SeededSamples(train_set, seed=cfg.train.seed, bad_image=cfg.data.bad_image)
    return build_loader(samples, cfg.train.batch_size, train=True, workers=cfg.data.workers,
                        seed=cfg.train.seed + info.rank, device=device, sampler=sampler, collate_fn=collate_skipping,
                        channels_last=channels_last)


def _val_loader(val_set, cfg: Config, info: dist_utils.DistInfo, device: torch.device, channels_last: bool,
                image_size: int):
    """Each process evaluates its own shard, without the duplicates DistributedSampler pads with."""
    if use_device_resident(val_set, cfg, image_size):
        from ..data.device import DeviceLoader

        return DeviceLoader.from_dataset(val_set, batch_size=cfg.train.batch_size, train=False, device=device,
                                         rank=info.rank, world_size=info.world_size, channels_last=channels_last)
    sampler = ShardSampler(len(val_set), info.rank, info.world_size)
    return build_loader(SeededSamples(val_set, seed=cfg.train.seed, bad_image=cfg.data.bad_image),
                        cfg.train.batch_size, train=False, workers=cfg.data.workers, seed=cfg.train.seed,
                        device=device, sampler=sampler, collate_fn=collate_skipping, channels_last=channels_last)


#: Largest dataset held on the device by default (data.device_resident unset).
DEVICE_RESIDENT_MAX_BYTES = 4 * 2**30


def use_device_resident(dataset, cfg: Config, image_size: int | None = None) -> bool:
    """Whether ``dataset`` is batched on the device (:class:`~inception.data.DeviceLoader`)."""
    from ..data import augment_preset

    in_memory = hasattr(dataset, "images") and hasattr(dataset, "labels")
    if cfg.data.device_resident is None:
        if not in_memory or augment_preset(cfg.data) not in ("cifar", "none") or cfg.data.color_jitter:
            return False
        side = (image_size or dataset.images.shape[-1]) + 2 * cfg.data.crop_padding
        return len(dataset) * dataset.images.shape[1] * side * side <= DEVICE_RESIDENT_MAX_BYTES
    if cfg.data.device_resident and not in_memory:
        raise UserError(f"data.device_resident needs an in-memory dataset (digits or CIFAR files), "
                        f"not '{cfg.data.dataset}'; set data.device_resident: false")
    return cfg.data.device_resident


def train(cfg: Config, *, resume: str | os.PathLike | None = None, progress: bool | None = None,
          auto_resume: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; return where the run went and how it ended.

    With ``resume`` (a checkpoint or run directory), model, optimizer, scheduler, grad
    scaler, epoch, step and every RNG are restored from it, so the run continues exactly
    as if it had never stopped; build ``cfg`` with :func:`resume_config` to continue the
    same run. With ``auto_resume`` and an explicit ``train.output_dir`` that already holds
    checkpoints, the newest good one (checksum verified) is resumed. Under torchrun, each
    process trains on its shard of every batch (DDP).

    SIGTERM or SIGINT stops the run after the current step (under torchrun: at the next log
    step, where the processes agree) with a checkpoint; the result then has ``stopped_by``
    and ``exit_code`` set."""
    owns_group = not dist_utils.is_initialized()
    info, device = dist_utils.init_distributed(resolve_device(cfg.train.device))
    try:
        with StopRequest() as stop:
            return _train(cfg, resume=resume, progress=progress, info=info, device=device,
                          auto_resume=auto_resume, stop=stop)
    finally:
        if owns_group:            # leave a process group the caller set up alone
            dist_utils.cleanup()


def _train(cfg: Config, *, resume, progress, info: dist_utils.DistInfo, device: torch.device, auto_resume: bool,
           stop: StopRequest) -> TrainResult:
    started = time.monotonic()
    time_limit = parse_duration(cfg.train.time_limit, "train.time_limit") if cfg.train.time_limit else None

    def out_of_time() -> bool:        # a host clock read, no device sync
        return time_limit is not None and time.monotonic() - started >= time_limit
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)            # the same on every rank: identical initial weights
    main = info.is_main
    progress = (sys.stderr.isatty() if progress is None else progress) and main
    cuda = device.type == "cuda"
    channels_last = cuda if cfg.train.channels_last is None else cfg.train.channels_last
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ckpt = None
    run_dir = _run_dir(cfg)
    if main:   # an unwritable output directory is an error now, not after the first epoch
        _check_writable(run_dir)
    auto = False
    if resume and Path(resume).is_dir():
        found = load_latest(resume)
        if found is None:
            raise UserError(f"'{resume}' holds no readable checkpoint (checkpoints/step_*.pt or last.pt); "
                            "give a checkpoint file, or start a new run")
        resume, ckpt = found
    elif resume:
        resume = resolve_checkpoint(resume)
        ckpt = load_checkpoint(resume)
    elif auto_resume and cfg.train.output_dir:
        found = load_latest(run_dir)
        if found is not None:
            resume, ckpt = found
            auto = True
            if ckpt.get("arch") != cfg.model.name:
                raise UserError(f"'{run_dir}' holds a run of {ckpt.get('arch')}, not {cfg.model.name}; choose another "
                                "--output-dir, or pass --no-resume to start over there")

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
    if len(train_set) < cfg.train.batch_size * info.world_size:
        raise UserError(f"train.batch_size {cfg.train.batch_size} x {info.world_size} processes is larger than the "
                        f"training set ({len(train_set)} images); lower --batch-size")

    model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model.options)
    if weights:
        apply_weights(model, *weights, path=cfg.model.pretrained)
    if cfg.model.freeze_backbone:
        frozen = freeze_backbone(model)
        log.info("frozen backbone: %.2fM parameters; training the classifier only", frozen / 1e6)
    model.data_config = data_config
    if ckpt is not None:
        apply_weights(model, ckpt["model"], ckpt, path=resume)
    if cfg.train.sync_bn and info.enabled:
        if not cuda:
            raise UserError("train.sync_bn needs CUDA devices (PyTorch synchronises BatchNorm only on GPUs); "
                            "set train.sync_bn: false on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    raw_model = model          # the plain module: DDP and torch.compile wrap `model` below

    train_loader = _train_loader(train_set, cfg, info, device, channels_last, image_size)
    val_loader = _val_loader(val_set, cfg, info, device, channels_last, image_size)
    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(raw_model, cfg.optim, device, backbone_lr_scale=cfg.model.backbone_lr_scale)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch, epochs=cfg.train.epochs)
    precision = Precision(cfg.train.precision, device, cfg.train.loss_scale, guard=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()

    start_epoch, start_step, global_step, best_top1, last_metrics = 0, 0, 0, -1.0, {}
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        precision.load_state_dict(ckpt.get("scaler", {}))
        start_epoch, start_step = int(ckpt["epoch"]), int(ckpt["epoch_step"])
        global_step, best_top1 = int(ckpt["global_step"]), float(ckpt["best_top1"])
        last_metrics = ckpt.get("metrics", {})
        if start_epoch >= cfg.train.epochs:
            if auto:
                log.info("run %s already finished %d epochs; nothing to do (raise --epochs to train longer, or "
                         "--no-resume to start over)", run_dir, start_epoch)
                return TrainResult(run_dir=run_dir, epochs_done=start_epoch, global_step=global_step,
                                   best_top1=best_top1, last_metrics=last_metrics, losses=[])
            raise UserError(f"run in '{resume}' already finished {start_epoch} epochs; raise --epochs to train longer")

    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if cfg.train.compile:
        model = torch.compile(model)

    handler, metrics_log = None, None
    if main:
        _check_writable(run_dir)
        handler = _file_logger(run_dir)
    try:
        if main:
            cfg.save(run_dir / "config.yaml")
        metrics_log = MetricsLog(run_dir / "metrics.jsonl",
                                 tensorboard=run_dir / "tensorboard" if cfg.train.tensorboard else None) if main else None
        if main:
            write_status(run_dir, "running", model=cfg.model.name, dataset=cfg.data.dataset, epochs=cfg.train.epochs)
        ckpts = CheckpointManager(run_dir, cfg.train.keep_checkpoint_max) if main else None
        n_params = sum(p.numel() for p in raw_model.parameters())
        if main:
            log.info("run %s: %s (%.2fM params) on %s x%d, %s, %d train / %d val images, %d classes, %dx%d, "
                     "%d steps/epoch of %d images", run_dir, cfg.model.name, n_params / 1e6, device, info.world_size,
                     cfg.train.precision, len(train_set), len(val_set), num_classes, image_size, image_size,
                     steps_per_epoch, cfg.train.batch_size * info.world_size)
            if ckpt is not None:
                log.info("resumed from %s at epoch %d, step %d", resume, start_epoch + 1, global_step)

        def save(epoch: int, epoch_step: int, best: bool = False) -> bool:
            """Rank 0 writes a checkpoint; never one of a non-finite model, and a failed write
            (disk full, permissions) is reported and leaves the previous checkpoint intact."""
            nonlocal save_failed
            if not main:
                return True
            finite = torch.stack([p.detach().isfinite().all() for p in raw_model.parameters()]).all()
            if not bool(finite):
                raise UserError(f"the model's weights became NaN/Inf by step {global_step}; no checkpoint was "
                                f"written, so the last good one stays in {run_dir / 'checkpoints'}; lower --lr "
                                "or enable optim.grad_clip")
            state = checkpoint_state(cfg=cfg, model=raw_model, optimizer=optimizer, scheduler=scheduler,
                                     class_names=class_names, epoch=epoch, epoch_step=epoch_step,
                                     global_step=global_step, best_top1=best_top1, metrics=last_metrics,
                                     scaler=precision.state_dict())
            try:
                ckpts.save(state, global_step, best=best)
                save_failed = False
            except OSError as e:
                save_failed = True
                log.error("could not write the checkpoint of step %d (%s); the previous checkpoint is intact and "
                          "training goes on; free space or fix permissions in %s", global_step,
                          e.strerror or e, ckpts.dir)
            return not save_failed

        save_failed = False
        losses: list[float] = []
        skipped_total = 0
        params = [p for p in raw_model.parameters() if p.requires_grad]
        bad_streak = torch.zeros((), dtype=torch.long, device=device)   # consecutive non-finite losses
        bad_steps = torch.zeros((), dtype=torch.long, device=device)
        check_every = min(cfg.train.log_interval, cfg.train.max_bad_steps)
        if ckpt is not None:
            set_rng_state(ckpt.get("rng", {}))   # after everything that draws at start-up: the run continues exactly
        try:
            for epoch in range(start_epoch, cfg.train.epochs):
                model.train()
                if cfg.model.freeze_bn or cfg.model.freeze_backbone:
                    freeze_batchnorm(raw_model, backbone_only=not cfg.model.freeze_bn)
                skip = start_step if epoch == start_epoch else 0
                # The data order is a function of (seed, epoch); a resumed epoch starts at its next batch.
                if hasattr(train_loader, "set_epoch"):        # device-resident loader
                    train_loader.set_epoch(epoch, start_batch=skip)
                else:
                    train_loader.sampler.set_epoch(epoch, start_batch=skip, batch_size=cfg.train.batch_size)
                bar = tqdm(train_loader, total=steps_per_epoch, initial=skip, disable=not progress,
                           dynamic_ncols=True, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False)
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), dtype=torch.long, device=device)
                seen, epoch_start = 0, time.perf_counter()
                window_start, window_images = time.perf_counter(), 0
                skipped: list = []
                for i, batch in enumerate(bar, start=skip):
                    images, target = batch[0], batch[1]
                    if len(batch) > 2 and batch[2]:
                        skipped += batch[2]
                        for item in batch[2]:
                            log.warning("skipped unreadable image %s: %s", item.path, item.reason)
                    if images is None:
                        raise UserError(f"every image of a batch at step {global_step + 1} was unreadable "
                                        f"(e.g. {batch[2][0].path}); run `inception check-data` on the dataset")
                    images = images.to(device, non_blocking=True)
                    if channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    target = target.to(device, non_blocking=True)
                    with precision.autocast():
                        loss, logits = compute_loss(model(images), target, criterion, cfg.model.aux_weight)
                    optimizer.zero_grad(set_to_none=True)
                    precision.backward(loss)
                    precision.step(optimizer, params, cfg.optim.grad_clip)   # a non-finite step is skipped
                    scheduler.step()
                    global_step += 1
                    finite = torch.isfinite(loss.detach())
                    bad_streak = torch.where(finite, 0, bad_streak + 1)
                    bad_steps += ~finite
                    loss_sum += torch.where(finite, loss.detach().float(), 0.0)
                    correct += topk_correct(logits.detach(), target, (1,))[0]
                    seen += target.shape[0]
                    window_images += target.shape[0]

                    log_step = global_step % cfg.train.log_interval == 0 or i + 1 == steps_per_epoch
                    if log_step or global_step % check_every == 0:
                        # The only host syncs of the loop: loss, bad-step streak and stop request, summed
                        # over processes so that all of them decide alike.
                        flags = torch.stack([loss.detach().float(), bad_streak.float(),
                                             torch.tensor(float(stop.signum is not None), device=device),
                                             torch.tensor(float(out_of_time()), device=device)])
                        dist_utils.all_reduce_sum(flags)
                        loss_value, streak, stopping, timed_out = flags.tolist()
                        loss_value /= info.world_size
                        if streak >= cfg.train.max_bad_steps:
                            raise UserError(
                                f"the loss was NaN/Inf for {int(streak)} consecutive steps (up to step {global_step}; "
                                f"each was skipped); the last good checkpoint is in {run_dir / 'checkpoints'}; "
                                "lower --lr, enable optim.grad_clip, or use bf16 instead of fp16")
                        if stopping or timed_out:
                            save(epoch + 1, 0) if i + 1 == steps_per_epoch else save(epoch, i + 1)
                            raise _Stop("signal" if stopping else "time limit", loss_value, time.monotonic() - started)
                        if log_step:
                            now = time.perf_counter()
                            ips = window_images * info.world_size / max(now - window_start, 1e-9)
                            lr = optimizer.param_groups[0]["lr"]
                            losses.append(loss_value)
                            if main:
                                metrics_log.write({"kind": "step", "epoch": epoch + 1, "step": global_step,
                                                   "loss": loss_value, "lr": lr, "img_per_s": ips})
                                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}", ips=f"{ips:.0f}")
                                # With a progress bar the console shows these in the bar; train.log always gets them.
                                log.info("epoch %d step %d loss %.4f lr %.5g %.1f img/s", epoch + 1, global_step,
                                         loss_value, lr, ips, extra={"in_progress_bar": progress})
                            window_start, window_images = now, 0
                    elif not info.enabled and (stop.signum is not None or out_of_time()):
                        # one process: stop right away (a time limit is checked after every step)
                        save(epoch + 1, 0) if i + 1 == steps_per_epoch else save(epoch, i + 1)
                        raise _Stop("signal" if stop.signum is not None else "time limit", float(loss.detach()),
                                    time.monotonic() - started)
                    if cfg.train.ckpt_interval and global_step % cfg.train.ckpt_interval == 0 \
                            and i + 1 < steps_per_epoch:
                        save(epoch, i + 1)
                bar.close()

                epoch_time = time.perf_counter() - epoch_start
                steps_run = steps_per_epoch - skip
                totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=device),
                                      bad_steps.float(), torch.tensor(float(len(skipped)), device=device)])
                dist_utils.all_reduce_sum(totals)
                loss_total, correct_total, seen_total, bad_total, skipped_count = totals.tolist()
                good_steps = max(steps_run * info.world_size - bad_total, 1)
                bad_steps.zero_()
                if info.enabled and skipped_count:
                    skipped = dist_utils.gather_objects(skipped)
                skipped_total += int(skipped_count)
                record = {"kind": "epoch", "epoch": epoch + 1, "step": global_step, "epoch_time_s": epoch_time,
                          "ms_per_step": 1000 * epoch_time / max(steps_run, 1),
                          "train_loss": loss_total / good_steps,
                          "train_top1": 100.0 * correct_total / max(seen_total, 1),
                          "img_per_s": seen_total / max(epoch_time, 1e-9), "lr": optimizer.param_groups[0]["lr"],
                          "skipped_images": int(skipped_count), "skipped_steps": int(bad_total)}
                if main and skipped:
                    with open(run_dir / "skipped_images.txt", "a", encoding="utf-8") as f:
                        f.writelines(f"epoch {epoch + 1}\t{item.path}\t{item.reason}\n" for item in skipped)
                is_best = False
                if (epoch + 1) % cfg.train.eval_interval == 0 or epoch + 1 == cfg.train.epochs:
                    last_metrics = _validate(raw_model, val_loader, device, precision, eval_criterion, progress)
                    record.update(last_metrics)
                    is_best = last_metrics["val_top1"] > best_top1
                    best_top1 = max(best_top1, last_metrics["val_top1"])
                if main:
                    metrics_log.write(record)
                    log.info("epoch %d/%d: %.1fs, %.1f ms/step, %.0f img/s, train loss %.4f, train top-1 %.2f%%%s%s",
                             epoch + 1, cfg.train.epochs, epoch_time, record["ms_per_step"], record["img_per_s"],
                             record["train_loss"], record["train_top1"],
                             (f", val top-1 {record['val_top1']:.2f}% top-5 {record['val_top5']:.2f}% "
                              f"loss {record['val_loss']:.4f}") if "val_top1" in record else "",
                             (f", skipped {int(skipped_count)} unreadable images" if skipped_count else "")
                             + (f", skipped {int(bad_total)} NaN/Inf steps" if bad_total else ""))
                save(epoch + 1, 0, best=is_best)
        except _Stop as why:
            if why.reason == "time limit":
                return _time_limit_result(
                    raw_model=raw_model, val_loader=val_loader, device=device, precision=precision,
                    criterion=eval_criterion, progress=progress, main=main, metrics_log=metrics_log, cfg=cfg,
                    run_dir=run_dir, epoch=epoch, epoch_step=i + 1, steps_per_epoch=steps_per_epoch,
                    global_step=global_step, best_top1=best_top1, loss=why.loss, losses=losses,
                    elapsed=why.elapsed, skipped_images=skipped_total)
            if main:
                write_status(run_dir, "stopped", reason=stop.name)
                log.warning("stopped by %s at epoch %d, step %d; checkpoint in %s; run the same command to continue",
                            stop.name, epoch + 1, global_step, run_dir / "checkpoints")
            return TrainResult(run_dir=run_dir, epochs_done=epoch, global_step=global_step, best_top1=best_top1,
                               last_metrics=last_metrics, losses=losses, stopped_by=stop.name,
                               exit_code=128 + stop.signum, skipped_images=skipped_total)
        if main and save_failed:
            raise UserError(f"training finished but its final checkpoint could not be written to {ckpts.dir}; "
                            "the newest checkpoint there is from an earlier step; free space and resume")
        if main:
            if skipped_total:
                log.warning("skipped %d unreadable images in all; they are listed in %s", skipped_total,
                            run_dir / "skipped_images.txt")
            log.info("finished: best val top-1 %.2f%%, run directory %s", best_top1, run_dir)
            write_status(run_dir, "finished", best_top1=best_top1)
        dist_utils.barrier()
        return TrainResult(run_dir=run_dir, epochs_done=cfg.train.epochs, global_step=global_step,
                           best_top1=best_top1, last_metrics=last_metrics, losses=losses,
                           skipped_images=skipped_total)
    except BaseException as e:
        if main and not isinstance(e, KeyboardInterrupt):
            write_status(run_dir, "failed", error=str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
        raise
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if metrics_log is not None:
            metrics_log.close()

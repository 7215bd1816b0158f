"""What the training loop carries: its state, one epoch's running sums, and its result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import Config
from ..spec import DataConfig
from . import distributed as dist_utils
from .amp import Precision
from .metrics import MetricsLog, topk_correct
from .stopping import Deadline, StopRequest


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    global_step: int
    best_top1: float
    last_metrics: dict
    losses: list[float]               # training loss at every log step (for tests and plots)
    stopped_by: str | None = None     # "SIGTERM"/"SIGINT" (a signal) or "time limit"
    exit_code: int = 0                # 128 + signal number after a signal (143 for SIGTERM, 130 for SIGINT)
    skipped_images: int = 0


@dataclass
class TrainState:
    """Everything the loop reads and advances. ``model`` is what the step calls (the module, or
    DDP around it); ``step`` runs one training step on it (compiled or not); ``raw_model`` is the
    plain module that is checkpointed and evaluated."""

    cfg: Config
    info: dist_utils.DistInfo
    device: torch.device
    run_dir: Path
    progress: bool
    model: nn.Module
    step: object                      # a step.TrainStep: forward, loss, backward, optimizer step
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    precision: Precision
    criterion: nn.Module
    train_loader: object
    val_loader: object
    class_names: list[str]
    data_config: DataConfig           # the run's preprocessing (the card's, with its weights' mean/std): checkpointed
    stop: StopRequest
    deadline: Deadline
    metrics_log: MetricsLog | None = None
    ckpts: object = None              # a CheckpointManager on rank 0
    ema: object = None                # an ema.ModelEma of raw_model (train.ema_decay), on every rank
    epoch: int = 0                    # the epoch being trained (0-based)
    start_step: int = 0               # the batch it starts at (a resumed epoch)
    global_step: int = 0
    best_top1: float = -1.0
    last_metrics: dict = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    skipped_images: int = 0
    save_failed: bool = False
    stopped: str | None = None        # "signal" or "time limit"
    stop_step: int = 0                # the batch of `epoch` training goes on from after a stop
    stop_loss: float = float("nan")   # the loss of the step it stopped after
    finished: bool = False            # resumed a run that had already done its epochs

    @property
    def main(self) -> bool:
        return self.info.is_main

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)


@dataclass
class EpochTally:
    """Running sums of one epoch, kept on the device (no host syncs between log steps)."""

    device: torch.device
    start: int = 0                    # first batch (a resumed epoch skips the ones it did)
    loss_sum: Tensor = None
    correct: Tensor = None
    bad_streak: Tensor = None         # consecutive non-finite losses
    bad_steps: Tensor = None
    seen: int = 0
    skipped: list = field(default_factory=list)
    loss: float = float("nan")        # the loss at the last sync step (mean over processes)
    began: float = field(default_factory=time.perf_counter)
    window: tuple = (0.0, 0)          # (start time, images) of the throughput window

    def __post_init__(self) -> None:
        zeros = lambda dtype: torch.zeros((), dtype=dtype, device=self.device)  # noqa: E731
        self.loss_sum, self.correct = zeros(torch.float32), zeros(torch.long)
        self.bad_streak, self.bad_steps = zeros(torch.long), zeros(torch.long)
        self.window = (time.perf_counter(), 0)

    def add(self, loss: Tensor, logits: Tensor, target: Tensor) -> None:
        finite = torch.isfinite(loss.detach())
        self.bad_streak = torch.where(finite, 0, self.bad_streak + 1)
        self.bad_steps += ~finite
        self.loss_sum += torch.where(finite, loss.detach().float(), 0.0)
        hard = target.argmax(1) if target.dim() == 2 else target     # soft (MixUp/CutMix) targets: their top class
        self.correct += topk_correct(logits.detach(), hard, (1,))[0]
        self.seen += target.shape[0]
        self.window = (self.window[0], self.window[1] + target.shape[0])

"""Accuracy counts and the run's metrics log (metrics.jsonl, optionally TensorBoard)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from torch import Tensor

from ..errors import UserError

log = logging.getLogger("inception")


def topk_correct(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Number of samples whose target is among the top-k predictions, for each k (as tensors,
    so no host sync). k larger than the class count counts every sample."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices                  # (N, maxk)
    hit = pred.eq(target.view(-1, 1))                         # (N, maxk)
    return [hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks]


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed at once); with
    ``tensorboard`` (a folder), also writes every number to TensorBoard there, as
    ``<kind>/<key>`` scalars against the global step."""

    def __init__(self, path: str | Path, *, tensorboard: str | Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional dependency
            except ImportError:
                raise UserError("train.tensorboard needs the tensorboard package: pip install tensorboard "
                                "(or `pip install inception[tensorboard]`), or drop --tensorboard") from None
            self.writer = SummaryWriter(str(tensorboard))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        if self.writer is not None:
            kind, step = record.get("kind", "metrics"), int(record.get("step", 0))
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def file_logger(run_dir: Path, logger: logging.Logger) -> logging.Handler:
    """Also write ``logger``'s records (INFO and up) to ``RUN/train.log``; remove the
    returned handler when the run ends."""
    handler = logging.FileHandler(Path(run_dir) / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def epoch_line(r: dict, epochs: int) -> str:
    """The log line of an epoch record of ``metrics.jsonl``."""
    line = (f"epoch {r['epoch']}/{epochs}: {r['epoch_time_s']:.1f}s, {r['ms_per_step']:.1f} ms/step, "
            f"{r['img_per_s']:.0f} img/s, train loss {r['train_loss']:.4f}, train top-1 {r['train_top1']:.2f}%")
    if "val_top1" in r:
        line += f", val top-1 {r['val_top1']:.2f}% top-5 {r['val_top5']:.2f}% loss {r['val_loss']:.4f}"
    if "ema_val_top1" in r:
        line += (f", EMA top-1 {r['ema_val_top1']:.2f}% top-5 {r['ema_val_top5']:.2f}% loss {r['ema_val_loss']:.4f} "
                 f"(best: {r['best_source']})")
    if r["skipped_images"]:
        line += f", skipped {r['skipped_images']} unreadable images"
    if r["skipped_steps"]:
        line += f", skipped {r['skipped_steps']} NaN/Inf steps"
    return line


def log_step(state, tally, bar) -> None:
    """A log step: loss, lr and img/s (since the previous one) to metrics.jsonl, the log and the bar."""
    now = time.perf_counter()
    ips = tally.window[1] * state.info.world_size / max(now - tally.window[0], 1e-9)
    tally.window = (now, 0)
    lr = state.optimizer.param_groups[0]["lr"]
    state.losses.append(tally.loss)
    if state.main:
        state.metrics_log.write({"kind": "step", "epoch": state.epoch + 1, "step": state.global_step,
                                 "loss": tally.loss, "lr": lr, "img_per_s": ips})
        bar.set_postfix(loss=f"{tally.loss:.4f}", lr=f"{lr:.3g}", ips=f"{ips:.0f}")
        # With a progress bar the console shows these in the bar; train.log always gets them.
        log.info("epoch %d step %d loss %.4f lr %.5g %.1f img/s", state.epoch + 1, state.global_step, tally.loss,
                 lr, ips, extra={"in_progress_bar": state.progress})

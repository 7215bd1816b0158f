"""Accuracy, evaluation over a loader, and the run's metrics log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler
from tqdm import tqdm


def topk_correct(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Number of samples whose target is among the top-k predictions, for each k (as tensors,
    so no host sync). k larger than the class count counts every sample."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices                  # (N, maxk)
    hit = pred.eq(target.view(-1, 1))                         # (N, maxk)
    return [hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, criterion: nn.Module | None = None,
             progress: bool = False, desc: str = "eval", num_classes: int | None = None) -> dict:
    """Top-1, top-5, mean loss, image count and img/s of ``model`` over ``loader``.

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
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        logits = model(images)
        loss_sum += criterion(logits, target).double() * target.shape[0]
        a, b = topk_correct(logits, target)
        c1 += a
        c5 += b
        n += target.shape[0]
        if num_classes:
            confusion += torch.bincount(target * num_classes + logits.argmax(1), minlength=num_classes ** 2)
    from .distributed import all_reduce_sum

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


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: every sample on exactly one process, with no
    padding duplicates (unlike ``DistributedSampler``), so summed counts are exact."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


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
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from ..errors import UserError

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

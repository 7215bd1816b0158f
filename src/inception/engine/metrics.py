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
             progress: bool = False, desc: str = "eval") -> dict:
    """Top-1, top-5, mean loss, image count and img/s of ``model`` over ``loader``.

    Under torch.distributed each process passes its own shard; counts and loss sums are
    summed over processes, so the figures are those of the whole dataset."""
    criterion = criterion or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    n = torch.zeros((), dtype=torch.long, device=device)
    c1 = torch.zeros((), dtype=torch.long, device=device)
    c5 = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
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
    from .distributed import all_reduce_sum

    all_reduce_sum(n, c1, c5, loss_sum)          # exact totals over processes (each saw its own shard)
    count = int(n.item())
    elapsed = time.perf_counter() - start
    model.train(was_training)
    if count == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "count": 0, "img_per_s": 0.0}
    return {
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
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

"""``inception bench --data PATH --pipeline train|eval``: the input pipeline against the
plain torchvision one, side by side in one run.

Both deliver the same thing: batches of ``size x size`` images, normalized float32 with the
model's mean/std, shuffled for ``train``. The baseline is what most training scripts do:
``torchvision.datasets.ImageFolder`` + PIL + ``transforms.Compose([RandomResizedCrop(size),
RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)])`` (eval: ``Resize`` +
``CenterCrop``), in a DataLoader with the same workers and batch size. Ours is the trainer's
loader (:func:`inception.data.build_loader` over :func:`inception.data.build_datasets`),
normalization on the device included in the timing.

The loaders are timed in alternating rounds, so a noisy machine slows them alike. A round
is one epoch of each (``steps`` batches at most), started afresh on workers that stay
alive, so it pays what an epoch's start costs in training and nothing a previous round
left prefetched: img/s is its images over its wall time. A first, untimed epoch starts the
workers and gathers the outputs' per-channel mean/std and class shares, which should agree
between the two. Reported: the median img/s of each (in total, and per worker) and the
median of the per-round ratios.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .config import DataCfg
from .errors import UserError
from .utils import resolve_device

log = logging.getLogger("inception")

PIPELINES = ("train", "eval")


def baseline_dataset(root: Path, *, train: bool, size: int, resize_size: int, mean, std, interpolation: str):
    """The plain torchvision pipeline over ``root/<class>/*``."""
    from torchvision import datasets, transforms as T

    interp = T.InterpolationMode(interpolation)
    if train:
        ops = [T.RandomResizedCrop(size, interpolation=interp), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(resize_size, interpolation=interp), T.CenterCrop(size)]
    return datasets.ImageFolder(str(root), transform=T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)]))


class _Stats:
    """Per-channel mean/std (over every pixel) and class counts of the batches seen."""

    def __init__(self) -> None:
        self.n, self.s, self.s2, self.classes = 0, 0.0, 0.0, Counter()

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        x = images.detach().float().transpose(0, 1).reshape(images.shape[1], -1).double()
        self.n += x.shape[1]
        self.s = self.s + x.sum(1)
        self.s2 = self.s2 + (x * x).sum(1)
        self.classes.update(labels.tolist())

    def summary(self) -> dict:
        mean = self.s / self.n
        std = (self.s2 / self.n - mean * mean).clamp_min(0).sqrt()
        total = sum(self.classes.values())
        return {"mean": [round(v, 4) for v in mean.tolist()], "std": [round(v, 4) for v in std.tolist()],
                "class_share": {int(k): v / total for k, v in sorted(self.classes.items())}}


def _timed(loader, steps: int, device: torch.device) -> tuple[int, float]:
    """Images and seconds of one pass: a new epoch of ``loader`` (its workers stay alive: the
    start of an epoch costs what it costs in training), up to ``steps`` batches."""
    start, images = time.perf_counter(), 0
    for n, batch in enumerate(loader, 1):
        images += batch[0].shape[0]
        if n == steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images, time.perf_counter() - start


def bench_pipeline(data_dir: str | Path, *, pipeline: str = "train", dataset: str = "folder",
                   model_name: str = "googlenet", image_size: int | None = None, batch_size: int = 64,
                   workers: int = 2, steps: int = 10, rounds: int = 5, device: str = "cpu",
                   baseline: bool = True, gpu_decode: bool = False, cfg: DataCfg | None = None) -> dict:
    """img/s of the trainer's input pipeline and of the plain torchvision one on ``data_dir``
    (a folder dataset, or a pre-resized cache from ``inception prepare``), alternating
    ``rounds`` rounds of ``steps`` batches each. See the module's doc for the method."""
    from .data import build_datasets, build_loader, eval_preprocessing, fast_transforms
    from .models import get_model_info

    if pipeline not in PIPELINES:
        raise UserError(f"--pipeline '{pipeline}' is not valid; choose train or eval")
    if workers < 0 or batch_size < 1 or steps < 1 or rounds < 1:
        raise UserError("bench --pipeline: --workers must be >= 0; --batch-size, --data-steps and --rounds >= 1")
    cfg = dataclasses.replace(cfg) if cfg is not None else DataCfg(dataset=dataset)
    cfg.data_dir, cfg.workers, cfg.gpu_decode = str(data_dir), workers, gpu_decode or cfg.gpu_decode
    if image_size:
        cfg.image_size = image_size
    dev = resolve_device(device)
    dc = get_model_info(model_name).data_config
    if fast_transforms(cfg, dc) is None:
        raise UserError(f"the fast pipeline does not apply to data.dataset '{cfg.dataset}' with augment "
                        f"'{cfg.augment}' (it covers image files with the imagenet or none preset)")
    pre = eval_preprocessing(cfg, dc)
    train_set, val_set = build_datasets(cfg, dc)
    ours = train_set if pipeline == "train" else val_set
    if len(ours) < batch_size:
        raise UserError(f"the {pipeline} data has {len(ours)} images, fewer than one batch of {batch_size}; "
                        "lower --batch-size")
    def ours_loader():
        return build_loader(ours, batch_size, train=pipeline == "train", workers=workers, seed=0, device=dev,
                            drop_last=True, channels_last=dev.type == "cuda")

    # The loader's own figure: uint8 batches handed to the device (copied there on a GPU). A
    # second loader of the same data, with the normalization done on the device, is timed too:
    # on a CPU-only machine that "device" is the CPU the workers need, so it costs them time.
    raw = ours_loader()
    raw.normalize = False
    loaders = {"inception": raw, "inception+normalize": ours_loader()}
    split_dir = Path(ours.source)
    if baseline:
        if not split_dir.is_dir():
            raise UserError(f"the torchvision baseline reads class folders; '{split_dir}' is not one "
                            "(pass --no-baseline, or a folder dataset)")
        base = baseline_dataset(split_dir, train=pipeline == "train", size=pre["image_size"],
                                resize_size=pre["resize_size"], mean=dc.mean, std=dc.std,
                                interpolation=dc.interpolation)
        if base.classes != ours.classes:
            raise UserError(f"'{split_dir}': ImageFolder sees other classes than the dataset; compare on a folder")
        loaders["torchvision"] = DataLoader(base, batch_size=batch_size, shuffle=pipeline == "train", drop_last=True,
                                            num_workers=workers, persistent_workers=workers > 0,
                                            pin_memory=dev.type == "cuda",
                                            generator=torch.Generator().manual_seed(0))
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    stats = {name: _Stats() for name in loaders}
    log.info("bench pipeline %s on %s: %d images, batch %d, %d workers, %d rounds of up to %d batches",
             pipeline, split_dir, len(ours), batch_size, workers, rounds, steps)
    for name, loader in loaders.items():      # untimed: worker start-up, and the output statistics
        for batch in loader:
            if name != "inception":
                stats[name].add(batch[0], batch[1])
    for _ in range(rounds):
        for name, loader in loaders.items():
            images, seconds = _timed(loader, steps, dev)
            rates[name].append(images / seconds)
    per = max(workers, 1)
    result = {"data_dir": str(data_dir), "split": str(split_dir), "pipeline": pipeline, "images": len(ours),
              "classes": len(ours.classes), "image_size": pre["image_size"], "batch_size": batch_size,
              "workers": workers, "device": str(dev), "steps": steps, "rounds": rounds, "gpu_decode": cfg.gpu_decode}
    for name in loaders:
        med = statistics.median(rates[name])
        result[name] = {"img_per_s": med, "img_per_s_per_worker": med / per, "rounds": rates[name]}
        if stats[name].n:
            result[name].update(stats[name].summary())
    if baseline:
        for name in ("inception", "inception+normalize"):
            result[name]["ratio"] = statistics.median(a / b for a, b in zip(rates[name], rates["torchvision"]))
        result["ratio"] = result["inception"]["ratio"]
        a, b = result["inception+normalize"], result["torchvision"]
        result["max_mean_diff"] = max(abs(x - y) for x, y in zip(a["mean"], b["mean"]))
        result["max_std_diff"] = max(abs(x - y) for x, y in zip(a["std"], b["std"]))
        shares = set(a["class_share"]) | set(b["class_share"])
        result["max_class_share_diff"] = max(abs(a["class_share"].get(k, 0) - b["class_share"].get(k, 0))
                                             for k in shares)
    return result


def format_pipeline(r: dict) -> str:
    """The report printed by ``inception bench --pipeline``."""
    who = f"{r['workers']} worker{'s' if r['workers'] != 1 else ''}" if r["workers"] else "main process"
    lines = [f"input pipeline {r['pipeline']} on {r['split']} ({r['images']:,} images, {r['classes']} classes): "
             f"{r['image_size']}x{r['image_size']}, batch {r['batch_size']}, {who}, device {r['device']}; "
             f"medians of {r['rounds']} alternating rounds of {r['steps']} batches",
             f"{'pipeline':<52}{'img/s':>9}{'per worker':>12}{'ratio':>8}   output mean (R,G,B) / std"]
    names = {"inception": "inception loader (uint8 batches to the device)" if not r.get("gpu_decode")
             else "inception loader (JPEGs decoded on the device)",
             "inception+normalize": f"inception + normalization on the device ({r['device']})",
             "torchvision": "torchvision ImageFolder + PIL + transforms"}
    for key in ("inception", "inception+normalize", "torchvision"):
        if key in r:
            x = r[key]
            ratio = f"{x['ratio']:.2f}x" if "ratio" in x else ("1.00x" if key == "torchvision" else "-")
            out = f"{x['mean']} / {x['std']}" if "mean" in x else "(uint8)"
            lines.append(f"{names[key]:<52}{x['img_per_s']:>9,.1f}{x['img_per_s_per_worker']:>12,.1f}{ratio:>8}   "
                         f"{out}")
    if "ratio" in r:
        lines.append(f"loader: {r['ratio']:.2f}x the torchvision baseline; normalized outputs agree within "
                     f"{r['max_mean_diff']:.3f} (mean), {r['max_std_diff']:.3f} (std); class shares within "
                     f"{100 * r['max_class_share_diff']:.1f} points")
    return "\n".join(lines)

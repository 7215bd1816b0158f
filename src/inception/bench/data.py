"""The input pipeline's throughput: the trainer's loader alone, and against plain torchvision.

Both benches time the very loader the trainer gets, from :func:`inception.data.pipeline.loader_for`
(device-resident batches for in-memory datasets, else the DataLoader of
:class:`~inception.data.loader.FileLoader`), so every batch counted is on the device, as training
consumes it.

* :func:`bench_data` times that loader with no model, so its img/s can be set against a
  model's compute (:func:`data_verdict`): when the pipeline delivers fewer images per second
  than the model consumes, training is input-bound.
* :func:`bench_pipeline` times it against the plain torchvision pipeline that most training
  scripts use: ``ImageFolder`` + PIL + the torchvision presets of the same
  :class:`~inception.data.pipeline.Preprocessing` (``train_transform()``: RandomResizedCrop, flip,
  normalize; ``eval_transform()``: resize, center crop, normalize), in a DataLoader with the
  same workers, batch size, sample order and per-sample seeds (seeding costs microseconds per
  image), so the two draw the same crops and flips and their outputs must agree. The loaders
  run in alternating rounds, so a noisy machine slows them alike. A round is one epoch of
  each (``steps`` batches at most), started afresh on workers that stay alive, so it pays
  what an epoch's start costs in training and nothing a previous round left prefetched:
  img/s is its images over its wall time. A first, untimed epoch starts the workers and
  gathers the outputs' per-channel mean/std and class shares. Reported: the median img/s
  of each (in total, and per worker) and the median of the per-round ratios.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from .. import accel
from ..accel import resolve_device
from ..config import DataCfg
from ..data.loader import Batch, FileLoader
from ..data.pipeline import Preprocessing, build_datasets, loader_for, resident, uses_fast_decoder
from ..data.sampling import EpochSampler, SeededSamples
from ..errors import UserError
from ..models import get_model_info
from .common import percentile, sync
from .model import BenchResult

log = logging.getLogger("inception")

PIPELINES = ("train", "eval")


def _data_cfg(cfg: DataCfg | None, **overrides) -> DataCfg:
    """A copy of ``cfg`` (default: a fresh one) with the given fields set, where not None."""
    cfg = dataclasses.replace(cfg) if cfg is not None else DataCfg()
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def _epochs(loader) -> Iterator[Batch]:
    """The loader's batches, epoch after epoch (``set_epoch`` before each), without end."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def bench_data(data_dir: str | Path | None = None, *, dataset: str | None = None, cfg: DataCfg | None = None,
               model_name: str = "googlenet", model_options: dict | None = None, image_size: int | None = None,
               pipeline: str = "train", batch_size: int = 64, workers: int | None = None,
               device_resident: bool | None = None, steps: int = 20, warmup: int | None = None,
               device: str | torch.device = "cpu", channels_last: bool | None = None) -> dict:
    """Images per second the trainer's loader delivers on the device, with no model: the
    datasets :func:`~inception.data.pipeline.build_datasets` builds (for ``model_name``'s input
    size, mean/std and interpolation) in the loader :func:`~inception.data.pipeline.loader_for`
    gives the trainer, for training (``pipeline="train"``: augmented, shuffled) or evaluation
    (``"eval"``).

    The data come from ``cfg`` (a :class:`DataCfg`), or from ``data_dir`` and ``dataset``
    (default: ``folder`` with a directory, the built-in ``digits`` without); ``workers``,
    ``image_size`` and ``device_resident`` override the config's.

    The first batch (worker start-up) and ``warmup`` batches (default ``2 x workers + 1``,
    enough to drain the prefetch queue) are excluded; the loader goes on to the next epoch
    when one ends. Because workers deliver batches in bursts, ``img_per_s`` is images over
    the wall time of the timed window, not a per-batch median (the per-batch median
    ``ms_per_batch`` and ``p90_ms`` are reported too).
    """
    if pipeline not in PIPELINES:
        raise UserError(f"data pipeline '{pipeline}' is not valid; choose train or eval")
    if cfg is None:
        dataset = dataset or ("folder" if data_dir is not None else "digits")
    cfg = _data_cfg(cfg, dataset=dataset, data_dir=None if data_dir is None else str(data_dir), workers=workers,
                    image_size=image_size, device_resident=device_resident)
    if cfg.workers < 0 or batch_size < 1 or steps < 1:
        raise UserError("bench_data: workers must be >= 0, batch_size and steps >= 1")
    if cfg.dataset != "digits" and not cfg.data_dir:
        raise UserError(f"dataset '{cfg.dataset}' needs a data directory (--data PATH)")
    dev = resolve_device(str(device))
    channels_last = accel.channels_last_default(dev) if channels_last is None else channels_last
    train = pipeline == "train"

    dc = get_model_info(model_name, **(model_options or {})).data_config
    pre = Preprocessing.from_config(cfg, dc)
    train_set, val_set = build_datasets(cfg, dc)
    ds = train_set if train else val_set
    on_device = resident(ds, cfg, pre)
    loader = loader_for(ds, cfg, pre, train=train, batch_size=batch_size, seed=0, device=dev,
                        channels_last=channels_last)
    if len(loader) == 0:
        raise UserError(f"the {pipeline} data has no complete batch of {batch_size}; lower --batch-size")
    workers_used = 0 if on_device else loader.num_workers
    warmup = 2 * workers_used + 1 if warmup is None else warmup
    kind = "device-resident" if on_device else f"DataLoader, {workers_used} workers"
    log.info("bench input pipeline: %s %s (%s), batch %d, %d+%d batches", cfg.dataset, pipeline, kind,
             batch_size, warmup, steps)

    it = _epochs(loader)
    start = time.perf_counter()
    first = next(it)
    sync(dev)
    startup_s = time.perf_counter() - start
    for _ in range(warmup):
        next(it)
    sync(dev)
    times, images = [], 0
    window = last = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        images += 0 if batch.labels is None else len(batch.labels)
        now = time.perf_counter()
        times.append(1000 * (now - last))
        last = now
    sync(dev)
    wall_s = time.perf_counter() - window
    it.close()   # stops the workers
    return {
        "dataset": cfg.dataset, "data_dir": cfg.data_dir, "pipeline": pipeline, "loader": kind,
        "model": model_name, "image_size": pre.size, "batch_size": batch_size, "workers": workers_used,
        "device": str(dev), "dataset_images": len(ds), "images": images, "steps": steps, "warmup": warmup,
        "img_per_s": images / wall_s, "ms_per_batch": statistics.median(times), "p90_ms": percentile(times, 90),
        "startup_s": startup_s, "sample_shape": list(first.images.shape[1:]),
    }


def data_verdict(data_img_per_s: float, compute_img_per_s: float) -> tuple[float, str]:
    """``(data / compute ratio, verdict)``: ``input-bound`` when the input pipeline delivers
    fewer images per second than the model consumes, else ``compute-bound``."""
    ratio = data_img_per_s / compute_img_per_s
    return ratio, ("input-bound" if ratio < 1.0 else "compute-bound")


def format_data(data: dict, result: BenchResult | None = None) -> str:
    """One line for a :func:`bench_data` figure, compared with a model's compute when given."""
    line = (f"input pipeline {data['dataset']} {data['pipeline']} ({data['image_size']}x{data['image_size']}, "
            f"batch {data['batch_size']}, {data['loader']}): {data['img_per_s']:,.0f} img/s")
    if result is None:
        return line
    ratio, verdict = data_verdict(data["img_per_s"], result.img_per_s)
    shown = f"{ratio:.2f}" if ratio < 100 else f"{ratio:,.0f}"
    return (f"{line} vs {result.model} {result.mode} compute {result.img_per_s:,.0f} img/s: "
            f"data/compute {shown}x -> {verdict}")


# --------------------------------------------------------------------------------------
# Ours against the plain torchvision pipeline

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


def _as_uint8(loader: FileLoader) -> FileLoader:
    """The same DataLoader, its batches handed to the device as the workers made them (uint8)."""
    return FileLoader(loader.loader, loader.device, None, channels_last=loader.channels_last,
                      bad_image=loader.bad_image, seed=loader.seed)


def baseline_loader(split_dir: Path, pre: Preprocessing, *, train: bool, batch_size: int, workers: int,
                    device: torch.device) -> FileLoader:
    """The plain torchvision pipeline over ``split_dir/<class>/*``: ``ImageFolder`` + PIL + the
    ``pre`` presets, in a DataLoader; ordered and seeded per sample as the trainer's loader
    is, and its batches moved to ``device`` as they are."""
    transform = pre.train_transform() if train else pre.eval_transform()
    dataset = SeededSamples(ImageFolder(str(split_dir), transform=transform), seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed=0) if train else None,
                        drop_last=train, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=accel.pin_memory(device), generator=torch.Generator().manual_seed(0))
    return FileLoader(loader, device, None, channels_last=accel.channels_last_default(device), seed=0)


def _timed(loader, epoch: int, steps: int, device: torch.device) -> tuple[int, float]:
    """Images and seconds of one pass: epoch ``epoch`` of ``loader`` (its workers stay alive:
    the start of an epoch costs what it costs in training), up to ``steps`` batches."""
    loader.set_epoch(epoch)
    start, images = time.perf_counter(), 0
    for n, batch in enumerate(loader, 1):
        images += 0 if batch.labels is None else len(batch.labels)
        if n == steps:
            break
    sync(device)
    return images, time.perf_counter() - start


def bench_pipeline(data_dir: str | Path, *, pipeline: str = "train", dataset: str = "folder",
                   model_name: str = "googlenet", image_size: int | None = None, batch_size: int = 64,
                   workers: int = 2, steps: int = 10, rounds: int = 5, device: str = "cpu",
                   baseline: bool = True, gpu_decode: bool = False, cfg: DataCfg | None = None) -> dict:
    """img/s of the trainer's input pipeline and of the plain torchvision one on ``data_dir``
    (a folder dataset, or a pre-resized cache from ``inception prepare``), alternating
    ``rounds`` rounds of ``steps`` batches each. See the module's doc for the method.

    Three loaders: ``inception`` (the trainer's loader, its uint8 batches handed to the device;
    with ``gpu_decode`` the JPEGs decoded there), ``inception+normalize`` (the same, normalized
    on the device: on a CPU-only machine that "device" is the CPU the workers need) and
    ``torchvision`` (the baseline; ``baseline=False`` leaves it out)."""
    if pipeline not in PIPELINES:
        raise UserError(f"--pipeline '{pipeline}' is not valid; choose train or eval")
    if workers < 0 or batch_size < 1 or steps < 1 or rounds < 1:
        raise UserError("bench data: --workers must be >= 0; --batch-size, --steps and --rounds >= 1")
    cfg = _data_cfg(cfg if cfg is not None else DataCfg(dataset=dataset), data_dir=str(data_dir), workers=workers,
                    image_size=image_size or None, gpu_decode=gpu_decode or None)
    dev = resolve_device(device)
    train = pipeline == "train"
    if not uses_fast_decoder(cfg):
        raise UserError(f"the fast pipeline does not apply to data.dataset '{cfg.dataset}' with augment "
                        f"'{cfg.augment}' (it covers image files with the imagenet or none preset)")
    dc = get_model_info(model_name).data_config
    pre = Preprocessing.from_config(cfg, dc)
    train_set, val_set = build_datasets(cfg, dc)
    ours = train_set if train else val_set
    if len(ours) < batch_size:
        raise UserError(f"the {pipeline} data has {len(ours)} images, fewer than one batch of {batch_size}; "
                        "lower --batch-size")

    def ours_loader() -> FileLoader:
        return loader_for(ours, cfg, pre, train=train, batch_size=batch_size, seed=0, device=dev,
                          channels_last=accel.channels_last_default(dev))

    loaders = {"inception": _as_uint8(ours_loader()), "inception+normalize": ours_loader()}
    split_dir = Path(ours.source)
    if baseline:
        if not split_dir.is_dir():
            raise UserError(f"the torchvision baseline reads class folders; '{split_dir}' is not one "
                            "(pass --no-baseline, or a folder dataset)")
        base = baseline_loader(split_dir, pre, train=train, batch_size=batch_size, workers=cfg.workers, device=dev)
        if base.dataset.classes != ours.classes:
            raise UserError(f"'{split_dir}': ImageFolder sees other classes than the dataset; compare on a folder")
        loaders["torchvision"] = base
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    stats = {name: _Stats() for name in loaders}
    log.info("bench pipeline %s on %s: %d images, batch %d, %d workers, %d rounds of up to %d batches",
             pipeline, split_dir, len(ours), batch_size, cfg.workers, rounds, steps)
    for name, loader in loaders.items():      # untimed: worker start-up, and the output statistics
        loader.set_epoch(0)
        for batch in loader:
            if name != "inception" and batch.images is not None:
                stats[name].add(batch.images, batch.labels)
    for r in range(1, rounds + 1):
        for name, loader in loaders.items():
            images, seconds = _timed(loader, r, steps, dev)
            rates[name].append(images / seconds)
    per = max(cfg.workers, 1)
    result = {"data_dir": str(data_dir), "split": str(split_dir), "pipeline": pipeline, "images": len(ours),
              "classes": len(ours.classes), "image_size": pre.size, "batch_size": batch_size,
              "workers": cfg.workers, "device": str(dev), "steps": steps, "rounds": rounds,
              "gpu_decode": cfg.gpu_decode}
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
    """The report printed by ``inception bench data``."""
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

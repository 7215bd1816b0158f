"""Honest throughput figures: a model's compute on synthetic data, and a real input pipeline.

``bench_model`` times training steps (forward, loss, backward, SGD step) or inference
forwards on a synthetic batch already on the device, so the figure is what the model and
the device can do, with no input pipeline in the way. ``bench_data`` times the DataLoader
the trainer would build for a dataset, with no model, so the two can be compared: when the
pipeline delivers fewer images per second than the model consumes, training is input-bound.

How the figures are measured:

* Warmup steps (and, with ``compile=True``, the compilation they trigger) run first and are
  excluded; the compile time is reported on its own (``compile_s``).
* Every timed step is timed on its own: with CUDA events on a GPU (no host sync inside the
  loop; one at the end), with ``time.perf_counter`` on a CPU (with ``torch.mps.synchronize``
  on MPS). ``ms_per_step`` is the median, ``p90_ms`` the 90th percentile, and
  ``img_per_s = batch_size / median step time``. ``wall_img_per_s`` (images over the wall time
  of the whole timed window) is kept as a cross-check.
* FLOPs follow the usual convention: a forward pass costs ``2 x MACs`` FLOPs per image, and a
  training step ``3 x 2 x MACs`` (forward, plus a backward pass counted as twice the forward).
  MACs are those of the model's own forward pass at the benchmarked image size, counted by
  ``torch.utils.flop_counter`` (convolutions and matmuls); in train mode they are counted in
  train mode, so auxiliary heads are included when the model has them, and in inference
  mode (eval) they are not, because they do not run. ``achieved_tflops = flops_per_image x
  img_per_s / 1e12`` and ``mfu = achieved_tflops / peak_tflops``.
* ``peak_tflops`` is the device's dense (no sparsity) peak for the precision in use, from a
  table of common GPUs (:func:`peak_flops_for_name`); fp32 on a GPU with TF32 tensor cores
  (Ampere and later) is measured against the TF32 peak, since like the trainer the benchmark
  lets convolutions and matmuls run as TF32 (and sets ``cudnn.benchmark``; both restored after). It is ``None`` on a CPU or an unknown GPU (then ``mfu`` is ``None`` too) unless
  given explicitly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import DataCfg, OptimCfg
from .errors import UserError
from .models import create_model
from .utils import resolve_device

log = logging.getLogger("inception")

MODES = ("train", "infer")
PRECISIONS = ("fp32", "bf16", "fp16")
PIPELINES = ("train", "eval")
AUX_WEIGHT = 0.3   # the loss weight of auxiliary heads, as in the default config


@dataclass
class BenchResult:
    """One benchmark of one model in one mode; times in milliseconds, memory in MiB."""

    model: str
    mode: str                       # "train" or "infer"
    batch_size: int
    image_size: int
    precision: str                  # "fp32", "bf16" or "fp16"
    compile: bool
    channels_last: bool
    device: str                     # e.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu (2 threads)"
    img_per_s: float                # batch_size / median step time
    ms_per_step: float              # median of the timed steps
    p90_ms: float                   # 90th percentile of the timed steps
    wall_img_per_s: float           # images / wall time of the whole timed window (cross-check)
    peak_mem_mb: float | None       # CUDA: torch.cuda.max_memory_allocated over the run; else None
    macs_per_image: int             # forward MACs at image_size (train mode: with aux heads)
    flops_per_image: int            # 2 x MACs (infer) or 3 x 2 x MACs (train)
    achieved_tflops: float
    peak_tflops: float | None
    mfu: float | None               # achieved_tflops / peak_tflops
    steps: int                      # timed steps
    warmup: int                     # untimed steps before them
    compile_s: float | None         # wall time of the first (compiling) step, when compile=True
    step_ms: list[float] = field(default_factory=list, repr=False)   # every timed step
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------
# Peak FLOPS of common GPUs

# Dense (no structured sparsity) tensor-core TFLOPS per precision, from the vendors' data
# sheets. "fp16"/"bf16" are with fp32 accumulation (what PyTorch uses; GeForce cards run it
# at half their fp16-accumulate rate); "tf32" is the tensor-core TF32 rate; "fp32" the
# non-tensor-core rate. A missing key means the GPU has no such mode (V100, T4: no bf16/tf32).
# Patterns are searched in the lower-cased torch.cuda.get_device_name(), first match wins,
# so more specific names come first.
_PEAKS: list[tuple[str, str, dict[str, float]]] = [
    (r"h100.*nvl", "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"h100.*pcie", "H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    (r"gh200", "GH200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"h100", "H100 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"h200.*nvl", "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"h200", "H200 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"\ba100\b|\ba800\b", "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"\ba30\b", "A30", {"bf16": 165.0, "fp16": 165.0, "tf32": 82.0, "fp32": 10.3}),
    (r"\ba40\b", "A40", {"bf16": 149.7, "fp16": 149.7, "tf32": 74.8, "fp32": 37.4}),
    (r"\ba10\b", "A10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"\bl40s\b", "L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    (r"\bl40\b", "L40", {"bf16": 181.05, "fp16": 181.05, "tf32": 90.5, "fp32": 90.5}),
    (r"\bl4\b", "L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"v100s", "V100S", {"fp16": 130.0, "fp32": 16.4}),
    (r"v100.*pcie", "V100 PCIe", {"fp16": 112.0, "fp32": 14.0}),
    (r"v100", "V100 SXM2", {"fp16": 125.0, "fp32": 15.7}),
    (r"\bt4\b", "T4", {"fp16": 65.0, "fp32": 8.1}),
    (r"rtx 6000 ada", "RTX 6000 Ada", {"bf16": 364.2, "fp16": 364.2, "tf32": 182.1, "fp32": 91.1}),
    (r"rtx a6000", "RTX A6000", {"bf16": 154.8, "fp16": 154.8, "tf32": 77.4, "fp32": 38.7}),
    (r"\b4090\b", "RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    (r"\b3090 ti\b", "RTX 3090 Ti", {"bf16": 80.0, "fp16": 80.0, "tf32": 40.0, "fp32": 40.0}),
    (r"\b3090\b", "RTX 3090", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}),
]


def _match(name: str) -> tuple[str, dict[str, float]] | None:
    low = name.lower()
    if "laptop" in low or "mobile" in low or "max-q" in low:   # same name, far lower clocks and power
        return None
    for pattern, label, peaks in _PEAKS:
        if re.search(pattern, low):
            return label, peaks
    return None


def known_gpu(name: str) -> str | None:
    """The table entry a device name matches (e.g. ``"H100 SXM"``), or None."""
    found = _match(name)
    return found[0] if found else None


def peak_flops_for_name(name: str, precision: str) -> float | None:
    """Dense peak TFLOPS of the GPU called ``name`` (as ``torch.cuda.get_device_name``
    spells it) for ``precision`` (``bf16``, ``fp16``, ``tf32`` or ``fp32``); None when the
    GPU is not in the table or has no such mode.

    >>> peak_flops_for_name("NVIDIA H100 80GB HBM3", "bf16")
    989.4
    """
    found = _match(name)
    return found[1].get(precision) if found else None


def _cuda_flags(restore: tuple | None = None) -> tuple:
    """``(cudnn.benchmark, matmul TF32, cuDNN TF32)``; with ``restore``, set them back."""
    if restore is not None:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = restore
    return (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def _peak_precision(device: torch.device, precision: str) -> str:
    """The table column that ``precision`` runs as on ``device``: ``tf32`` for fp32 on a GPU
    with TF32 tensor cores (training and :func:`bench_model` allow TF32 convolutions and matmuls)."""
    if precision == "fp32" and device.type == "cuda":
        if peak_flops_for_name(torch.cuda.get_device_name(device), "tf32") is not None:
            return "tf32"
    return precision


def peak_flops(device: str | torch.device, precision: str) -> float | None:
    """Dense peak TFLOPS of ``device`` for ``precision`` (``fp32``, ``bf16``, ``fp16``), or None
    when unknown (a CPU, MPS, a GPU not in the table).

    ``fp32`` on a GPU with TF32 tensor cores returns the TF32 peak: the trainer (and
    :func:`bench_model`) let convolutions and matmuls run as TF32, so that is the math the device does.
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device), _peak_precision(device, precision))


# --------------------------------------------------------------------------------------
# Model compute

def forward_macs(model_name: str, image_size: int, *, train: bool = False, num_classes: int = 1000,
                 model_options: dict | None = None) -> int:
    """MACs of one image's forward pass at ``image_size``, counted on the meta device (free).

    ``train=True`` counts the train-mode forward, which includes auxiliary heads when the
    model was built with them; ``train=False`` the eval forward (as :func:`count_macs`).
    """
    with torch.device("meta"):
        model = create_model(model_name, num_classes=num_classes, **(model_options or {}))
    model.train(train)
    n = 2  # train-mode BatchNorm needs more than one value per channel
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(n, _in_channels(model), image_size, image_size, device="meta"))
    return counter.get_total_flops() // (2 * n)


def _in_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'' if n == 1 else 's'})"
    return str(device)


def parse_model_options(items: Iterable[str] | None) -> dict:
    """``["aux_logits=true", "dropout=0.3"]`` -> ``{"aux_logits": True, "dropout": 0.3}`` (values are YAML)."""
    import yaml

    options = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"model option '{item}' must look like KEY=VALUE, e.g. aux_logits=true")
        try:
            options[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            options[key.strip()] = raw
    return options


def _check_args(mode: str, precision: str, batch_size: int, steps: int, warmup: int, num_classes: int) -> None:
    if mode not in MODES:
        raise UserError(f"bench mode '{mode}' is not valid; choose train or infer")
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is not valid; choose fp32, bf16 or fp16")
    for name, value, low in (("batch_size", batch_size, 1), ("steps", steps, 1), ("warmup", warmup, 0),
                             ("num_classes", num_classes, 1)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"bench {name} must be an integer >= {low}, got {value!r}")


def bench_model(model_name: str, *, mode: str = "train", batch_size: int = 64, image_size: int | None = None,
                precision: str = "fp32", compile: bool = False, device: str | torch.device = "auto",
                channels_last: bool | None = None, steps: int = 20, warmup: int = 5, num_classes: int = 1000,
                peak_tflops: float | None = None, model_options: dict | None = None) -> BenchResult:
    """Throughput of ``model_name`` on synthetic data (see the module docstring for the method).

    Args:
        mode: ``train`` (forward and loss under autocast, backward, SGD-momentum step; fp16
            with a GradScaler) or ``infer`` (eval mode, ``torch.inference_mode``).
        image_size: square input side; default the model's own input size.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast (BatchNorm and the loss stay fp32).
        compile: wrap the model in ``torch.compile``; the compile time is ``compile_s`` and is
            not part of the figures (at least one warmup step is run).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        channels_last: NHWC model and inputs; default on for CUDA.
        steps, warmup: timed steps, and untimed steps before them.
        peak_tflops: the device's peak for this precision, overriding :func:`peak_flops`.
        model_options: options for ``create_model`` (``{"aux_logits": True}``...).
    """
    _check_args(mode, precision, batch_size, steps, warmup, num_classes)
    if peak_tflops is not None and not peak_tflops > 0:
        raise UserError(f"peak_tflops must be positive, got {peak_tflops}")
    options = dict(model_options or {})
    dev = resolve_device(str(device))
    train = mode == "train"
    channels_last = dev.type == "cuda" if channels_last is None else channels_last
    if compile and warmup < 1:
        warmup = 1
    notes: list[str] = []

    model = create_model(model_name, num_classes=num_classes, **options)
    dc = model.data_config
    size = image_size or dc.input_size[1]
    if size < dc.min_input_size:
        raise UserError(f"image size {size} is below {model_name}'s minimum {dc.min_input_size}; "
                        f"use --image-size {dc.min_input_size} or more")
    log.info("bench %s %s: batch %d, %dx%d, %s%s on %s, %d+%d steps", model_name, mode, batch_size, size, size,
             precision, ", compiled" if compile else "", dev, warmup, steps)
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"{torch.cuda.get_device_name(dev)} does not support bf16; use --precision fp16")
    try:   # a free meta-device forward: also runs the model's input checks (v3's aux head needs 299)
        macs = forward_macs(model_name, size, train=train, num_classes=num_classes, model_options=options)
    except ValueError as e:
        raise UserError(str(e)) from None
    if train and getattr(model, "aux_logits", False):
        notes.append("MACs include the auxiliary heads (they run in train mode)")

    saved = _cuda_flags()
    if dev.type == "cuda":   # as the trainer sets them
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        step_ms, wall_s, compile_s, peak_mem, skipped = _run_steps(
            model, dev, train=train, batch_size=batch_size, size=size, precision=precision, compile=compile,
            channels_last=channels_last, steps=steps, warmup=warmup, num_classes=num_classes,
            what=f"{model_name} ({mode}, batch {batch_size}, {size}x{size}, {precision})")
    finally:
        _cuda_flags(saved)

    median_ms = statistics.median(step_ms)
    img_per_s = batch_size / (median_ms / 1000)
    flops_per_image = (3 if train else 1) * 2 * macs
    achieved = flops_per_image * img_per_s / 1e12
    if peak_tflops is None:
        peak_tflops = peak_flops(dev, precision)
        if peak_tflops is not None:
            gpu = torch.cuda.get_device_name(dev)
            notes.append(f"peak {peak_tflops:g} TFLOPS: dense {_peak_precision(dev, precision)} of {known_gpu(gpu)}")
        elif dev.type == "cuda":
            notes.append(f"no known peak for {torch.cuda.get_device_name(dev)} ({precision}); "
                         "pass peak_tflops (--peak-tflops) for MFU")
    else:
        notes.append(f"peak {peak_tflops:g} TFLOPS: given")
    if dev.type == "cuda" and precision == "fp32":
        notes.append("fp32 convolutions and matmuls run as TF32, as in training")
    if skipped:
        notes.append(f"the fp16 loss scaler skipped {skipped} of the timed optimizer steps (inf gradients)")
    if compile_s is not None:
        notes.append(f"torch.compile took {compile_s:.1f} s (first step, excluded)")
    if dev.type != "cuda":
        notes.append("peak memory is measured on CUDA only")

    return BenchResult(
        model=model_name, mode=mode, batch_size=batch_size, image_size=size, precision=precision,
        compile=compile, channels_last=channels_last, device=_device_label(dev),
        img_per_s=img_per_s, ms_per_step=median_ms, p90_ms=_percentile(step_ms, 90),
        wall_img_per_s=batch_size * steps / wall_s, peak_mem_mb=peak_mem, macs_per_image=macs,
        flops_per_image=flops_per_image, achieved_tflops=achieved, peak_tflops=peak_tflops,
        mfu=achieved / peak_tflops if peak_tflops else None, steps=steps, warmup=warmup,
        compile_s=compile_s, step_ms=step_ms, notes=notes)


def _run_steps(model: nn.Module, dev: torch.device, *, train: bool, batch_size: int, size: int, precision: str,
               compile: bool, channels_last: bool, steps: int, warmup: int, num_classes: int,
               what: str) -> tuple[list[float], float, float | None, float | None, int]:
    """Per-step times (ms) of the timed steps, the timed window's wall time (s), the compile
    time (s), the CUDA peak memory (MiB) and the optimizer steps the fp16 scaler skipped."""
    from .engine.amp import Precision
    from .engine.optim import build_optimizer
    from .engine.trainer import compute_loss

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format)
    model.train(train)
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randn(batch_size, _in_channels(model), size, size, generator=gen)
    images = images.to(dev).contiguous(memory_format=memory_format)
    target = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    amp = Precision(precision, dev)   # the trainer's autocast and fp16 loss scaling
    run = torch.compile(model) if compile else model

    if train:
        # A tiny lr: the same work as any lr, but the weights stay put on the synthetic batch.
        optimizer = build_optimizer(model, OptimCfg(name="sgd", lr=1e-12, momentum=0.9, weight_decay=1e-4), dev)
        criterion = nn.CrossEntropyLoss()
        params = list(model.parameters())

        def step() -> None:
            with amp.autocast():
                loss, _ = compute_loss(run(images), target, criterion, AUX_WEIGHT)
            optimizer.zero_grad(set_to_none=True)
            amp.backward(loss)
            amp.step(optimizer, params, None)
        context = contextlib.nullcontext
    else:
        def step() -> None:
            with amp.autocast():
                run(images)
        context = torch.inference_mode
    scaler = amp.scaler if train else None

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    compile_s = None
    try:
        with context():
            for i in range(warmup):
                start = time.perf_counter()
                step()
                if i == 0 and compile:
                    _sync(dev)
                    compile_s = time.perf_counter() - start
            _sync(dev)
            scale = scaler.get_scale() if scaler is not None else None
            step_ms: list[float] = []
            if dev.type == "cuda":
                events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                          for _ in range(steps)]
                window = time.perf_counter()
                for start_ev, end_ev in events:
                    start_ev.record()
                    step()
                    end_ev.record()
                torch.cuda.synchronize(dev)
                wall_s = time.perf_counter() - window
                step_ms = [s.elapsed_time(e) for s, e in events]
            else:
                window = time.perf_counter()
                for _ in range(steps):
                    start = time.perf_counter()
                    step()
                    _sync(dev)
                    step_ms.append(1000 * (time.perf_counter() - start))
                wall_s = time.perf_counter() - window
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"{what} does not fit in the GPU's memory; lower --batch-size") from None
    peak_mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    # Each inf/NaN gradient halves the scale and skips that step (growth needs 2,000 clean steps).
    skipped = round(math.log2(scale / scaler.get_scale())) if scale is not None else 0
    return step_ms, wall_s, compile_s, peak_mem, max(skipped, 0)


# --------------------------------------------------------------------------------------
# Input pipeline

def bench_data(data_dir: str | Path | None = None, *, dataset: str | None = None, cfg: DataCfg | None = None,
               model_name: str = "googlenet", model_options: dict | None = None, image_size: int | None = None,
               pipeline: str = "train", batch_size: int = 64, workers: int | None = None,
               device_resident: bool | None = None, steps: int = 20, warmup: int | None = None,
               device: str | torch.device = "cpu", channels_last: bool | None = None) -> dict:
    """Images per second the real input pipeline delivers, with no model: the datasets that
    :func:`inception.data.build_datasets` builds (transforms for ``model_name``'s input size,
    mean/std and interpolation) in the loader the trainer would use, for training
    (``pipeline="train"``: augmented, shuffled) or evaluation (``"eval"``).

    The loader is the trainer's choice: device-resident batches
    (:class:`~inception.data.device.DeviceLoader`) for in-memory datasets (digits, CIFAR
    files) with the cifar or none preset, else the DataLoader of
    :func:`inception.data.build_loader` with ``workers`` processes; ``device_resident``
    forces one or the other (``data.device_resident``). On a GPU the DataLoader's batches are
    also copied to it (pinned memory, non-blocking), as in training.

    The data come from ``cfg`` (a :class:`DataCfg`), or from ``data_dir`` and ``dataset``
    (default: ``folder`` with a directory, the built-in ``digits`` without); ``workers``,
    ``image_size`` and ``device_resident`` override the config's.

    The first batch (worker start-up) and ``warmup`` batches (default ``2 x workers + 1``,
    enough to drain the prefetch queue) are excluded; the loader is re-iterated when an epoch
    ends. Because workers deliver batches in bursts, ``img_per_s`` is images over the wall
    time of the timed window, not a per-batch median (the per-batch median ``ms_per_batch``
    and ``p90_ms`` are reported too).
    """
    from .config import Config
    from .data import build_datasets, build_loader
    from .engine.trainer import use_device_resident
    from .models import get_model_info

    if pipeline not in PIPELINES:
        raise UserError(f"data pipeline '{pipeline}' is not valid; choose train or eval")
    if cfg is None:
        cfg = DataCfg(dataset=dataset or ("folder" if data_dir is not None else "digits"),
                      data_dir=str(data_dir) if data_dir is not None else None)
    else:
        cfg = dataclasses.replace(cfg)
        if dataset:
            cfg.dataset = dataset
        if data_dir is not None:
            cfg.data_dir = str(data_dir)
    if workers is not None:
        cfg.workers = workers
    if image_size is not None:
        cfg.image_size = image_size
    if device_resident is not None:
        cfg.device_resident = device_resident
    if cfg.workers < 0 or batch_size < 1 or steps < 1:
        raise UserError("bench_data: workers must be >= 0, batch_size and steps >= 1")
    if cfg.dataset != "digits" and not cfg.data_dir:
        raise UserError(f"dataset '{cfg.dataset}' needs a data directory (--data-dir PATH)")
    dev = resolve_device(str(device))
    channels_last = dev.type == "cuda" if channels_last is None else channels_last

    dc = get_model_info(model_name, **(model_options or {})).data_config
    size = cfg.image_size or dc.input_size[1]
    train_set, val_set = build_datasets(cfg, dc)
    ds = train_set if pipeline == "train" else val_set
    resident = use_device_resident(ds, Config(data=cfg))
    if resident:
        from .data.device import DeviceLoader

        loader = DeviceLoader.from_dataset(ds, batch_size=batch_size, train=pipeline == "train", device=dev,
                                           seed=0, channels_last=channels_last)
        workers_used = 0
    else:
        loader = build_loader(ds, batch_size, train=pipeline == "train", workers=cfg.workers, seed=0, device=dev)
        workers_used = cfg.workers
    if len(loader) == 0:
        raise UserError(f"the {pipeline} data has no complete batch of {batch_size}; lower --batch-size")
    warmup = 2 * workers_used + 1 if warmup is None else warmup
    kind = "device-resident" if resident else f"DataLoader, {workers_used} workers"
    log.info("bench input pipeline: %s %s (%s), batch %d, %d+%d batches", cfg.dataset, pipeline, kind,
             batch_size, warmup, steps)

    def batches() -> Iterator:
        epoch = 0
        while True:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    copy = not resident and dev.type != "cpu"
    it = batches()
    start = time.perf_counter()
    first = next(it)
    _sync(dev)
    startup_s = time.perf_counter() - start
    for _ in range(warmup):
        next(it)
    _sync(dev)
    times, images = [], 0
    window = last = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        if copy:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        images += x.shape[0]
        now = time.perf_counter()
        times.append(1000 * (now - last))
        last = now
    _sync(dev)
    wall_s = time.perf_counter() - window
    it.close()   # stops the workers
    return {
        "dataset": cfg.dataset, "data_dir": cfg.data_dir, "pipeline": pipeline, "loader": kind,
        "model": model_name, "image_size": size, "batch_size": batch_size, "workers": workers_used,
        "device": str(dev), "dataset_images": len(ds), "images": images, "steps": steps, "warmup": warmup,
        "img_per_s": images / wall_s, "ms_per_batch": statistics.median(times), "p90_ms": _percentile(times, 90),
        "startup_s": startup_s, "sample_shape": list(first[0].shape[1:]),
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
# Report

COLUMNS = ("model", "mode", "batch", "size", "precision", "compile", "img/s", "ms/step", "p90 ms", "peak MB",
           "GMACs/img", "TFLOPS", "MFU")


def format_results(results: Sequence[BenchResult], notes: bool = True) -> str:
    """An aligned table of ``results``, headed by the device(s), with each result's notes below."""
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [COLUMNS]
    for r in results:
        rows.append((r.model, r.mode, str(r.batch_size), str(r.image_size), r.precision,
                     "yes" if r.compile else "no", num(r.img_per_s, ",.1f"), num(r.ms_per_step, ".1f"),
                     num(r.p90_ms, ".1f"), num(r.peak_mem_mb, ",.0f"), num(r.macs_per_image / 1e9, ".2f"),
                     num(r.achieved_tflops, ".3g"), "-" if r.mfu is None else f"{100 * r.mfu:.1f}%"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    left = {0, 1, 4, 5}
    lines = ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    devices = sorted({r.device for r in results})
    header = [f"device: {', '.join(devices)}; torch {torch.__version__}"] if devices else []
    footer: list[str] = []
    if notes:
        seen: set[str] = set()
        for r in results:
            for n in r.notes:
                if n not in seen:
                    seen.add(n)
                    footer.append(f"note: {n}")
    return "\n".join(header + lines + footer)


# --------------------------------------------------------------------------------------
# Inference runtimes (deployment)

RUNTIMES = ("torch", "onnxruntime")
SETTLE_S = 0.05   # pause before each timed inference call (see bench_runtimes)


@dataclass
class RuntimeResult:
    """Inference speed of one model on one runtime at one batch size; times in ms."""

    target: str                     # a model name (random weights) or a model file
    runtime: str                    # "torch" (eager) or "onnxruntime"
    batch_size: int
    image_size: int
    device: str
    threads: int
    img_per_s: float                # batch_size / median batch time
    ms_per_batch: float             # median
    p90_ms: float
    steps: int
    ratio: float | None = None      # img_per_s / the baseline's at the same batch size
    baseline: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _runtime_predictors(target: str, runtimes: Sequence[str], *, image_size: int | None, device: str,
                        threads: int | None, num_classes: int, model_options: dict | None,
                        workdir: Path) -> list[tuple[str, object]]:
    """``[(runtime label, predictor)]`` for a model name (every runtime in ``runtimes``;
    ONNX Runtime gets the model exported as ``inception export`` would) or a model file
    (the runtime its format runs on)."""
    from .export import fold_batchnorm, write_model
    from .infer import TorchPredictor, load_predictor, model_metadata

    if Path(target).exists() or target.endswith((".onnx", ".pt", ".pt2", ".pth", ".safetensors")):
        predictor = load_predictor(target, device=device, threads=threads)
        label = predictor.runtime
        if predictor.metadata.get("precision") == "int8":
            label += " int8"
        return [(label, predictor)]
    model = create_model(target, num_classes=num_classes, **(model_options or {})).eval()
    metadata = model_metadata(model, None, None, image_size=image_size)
    size = metadata["image_size"]
    out = []
    for runtime in runtimes:
        if runtime == "torch":
            out.append(("torch eager", TorchPredictor(target, model, metadata, device=device, threads=threads)))
        elif runtime == "onnxruntime":
            path = workdir / f"{target}-{size}.onnx"
            write_model(fold_batchnorm(model), path, fmt="onnx", metadata=metadata, image_size=size)
            out.append(("onnxruntime", load_predictor(path, device=device, threads=threads)))
        else:
            raise UserError(f"runtime '{runtime}' is not valid; choose from: {', '.join(RUNTIMES)}")
    return out


def bench_runtimes(targets: Sequence[str], *, runtimes: Sequence[str] = RUNTIMES,
                   batch_sizes: Sequence[int] = (1, 32), image_size: int | None = None, steps: int = 20,
                   warmup: int = 3, device: str = "cpu", threads: int | None = None, num_classes: int = 1000,
                   model_options: dict | None = None) -> list[RuntimeResult]:
    """Inference img/s and latency of models on runtimes, side by side.

    ``targets`` are model names (random weights: speed does not depend on them), run on each
    of ``runtimes`` (``torch``: PyTorch eager fp32 in ``inference_mode``; ``onnxruntime``:
    the model exported to ONNX, BatchNorm folded, on ONNX Runtime with every graph
    optimisation), or model files (``.onnx``, INT8 included, or checkpoints), run on their
    own runtime. Both runtimes use the same number of CPU threads (``threads``, default the
    usable cores).

    To be fair on a shared, noisy machine the runs are interleaved: after ``warmup``
    batches each, every timed round runs one batch on each model in turn, so drift in the
    machine's speed hits all of them alike. ONNX Runtime keeps its deployment settings (its
    pool threads spin-wait briefly after a call, which cuts latency); a pause of
    ``SETTLE_S`` before each timed call lets them go idle, so they never steal the cores
    from the next model timed. Figures are medians over ``steps`` rounds, and ``ratio`` is
    against the first model/runtime at the same batch size.
    """
    from .infer import default_threads

    if not targets:
        raise UserError("give at least one model name or model file to benchmark")
    for name, value, low in (("steps", steps, 1), ("warmup", warmup, 0)):
        if value < low:
            raise UserError(f"bench {name} must be >= {low}, got {value}")
    if any(b < 1 for b in batch_sizes):
        raise UserError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    results: list[RuntimeResult] = []
    import tempfile

    with tempfile.TemporaryDirectory(prefix="inception-bench-") as tmp:
        entries = []
        for target in targets:
            for label, predictor in _runtime_predictors(target, runtimes, image_size=image_size, device=device,
                                                        threads=threads, num_classes=num_classes,
                                                        model_options=model_options, workdir=Path(tmp)):
                entries.append((target, label, predictor))
        sizes = {p.image_size for _, _, p in entries}
        for batch in batch_sizes:
            gen = torch.Generator().manual_seed(0)
            inputs = {s: torch.randn(batch, 3, s, s, generator=gen).numpy() for s in sizes}
            log.info("bench runtimes: batch %d, %d+%d rounds of %s", batch, warmup, steps,
                     ", ".join(f"{t} ({lbl})" for t, lbl, _ in entries))
            for _, _, p in entries:
                for _ in range(warmup):
                    p(inputs[p.image_size])
            times: list[list[float]] = [[] for _ in entries]
            for _ in range(steps):
                for k, (_, _, p) in enumerate(entries):
                    x = inputs[p.image_size]
                    time.sleep(SETTLE_S)
                    start = time.perf_counter()
                    p(x)
                    times[k].append(1000 * (time.perf_counter() - start))
            base = None
            for (target, label, p), ts in zip(entries, times):
                median = statistics.median(ts)
                r = RuntimeResult(target=target, runtime=label, batch_size=batch, image_size=p.image_size,
                                  device=p.device, threads=threads, img_per_s=batch / (median / 1000),
                                  ms_per_batch=median, p90_ms=_percentile(ts, 90), steps=steps)
                if base is None:
                    base = r
                r.ratio = r.img_per_s / base.img_per_s
                r.baseline = f"{base.target} {base.runtime}"
                results.append(r)
    return results


def format_runtime_results(results: Sequence[RuntimeResult]) -> str:
    """An aligned table of :func:`bench_runtimes` figures with each row's ratio to its baseline."""
    cols = ("model", "runtime", "batch", "size", "img/s", "ms/batch", "p90 ms", "vs baseline")
    rows = [cols]
    for r in results:
        ratio = "1.00x (baseline)" if r.baseline == f"{r.target} {r.runtime}" else f"{r.ratio:.2f}x"
        rows.append((Path(r.target).name, r.runtime, str(r.batch_size), str(r.image_size), f"{r.img_per_s:,.1f}",
                     f"{r.ms_per_batch:.1f}", f"{r.p90_ms:.1f}", ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             .rstrip() for row in rows]
    head = ""
    if results:
        r = results[0]
        head = (f"device: {r.device}, {r.threads} threads; torch {torch.__version__}, onnxruntime "
                f"{_ort_version()}; medians of {r.steps} interleaved rounds\n")
    return head + "\n".join(lines)


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:   # pragma: no cover - a dependency
        return "not installed"

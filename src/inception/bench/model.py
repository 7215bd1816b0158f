"""Model compute on synthetic data: img/s, ms/step, memory, MFU.

``bench_model`` times training steps (forward, loss, backward, SGD step) or inference
forwards on a synthetic batch already on the device, so the figure is what the model and
the device can do, with no input pipeline in the way (:mod:`.data` times that).

How the figures are measured:

* Warmup steps (and, with ``compile=True``, the compilation they trigger) run first and are
  excluded; the compile time is reported on its own (``compile_s``).
* Every timed step is timed on its own: with the device's events on a GPU or NPU (no host
  sync inside the loop; one at the end), with ``time.perf_counter`` on a CPU (with
  ``torch.mps.synchronize`` on MPS). ``ms_per_step`` is the median, ``p90_ms`` the 90th percentile, and
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
  lets convolutions and matmuls run as TF32 (and sets ``cudnn.benchmark``; both restored
  after). It is ``None`` on a CPU or an unknown GPU (then ``mfu`` is ``None`` too) unless
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
from typing import Callable, Sequence

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import accel
from ..accel import resolve_device
from ..config import OptimCfg
from ..engine.amp import Precision
from ..engine.optim import build_optimizer
from ..engine.step import TrainStep, check_compile_mode, compute_loss
from ..errors import UserError
from ..models import create_model, get_card, list_models, model_data_config
from .common import align_table, device_label, percentile, sync

log = logging.getLogger("inception")

MODES = ("train", "infer")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUX_WEIGHT = 0.3   # the loss weight of auxiliary heads, as in the default config
PEERS = ("torchvision", "timm")      # the peers' own builds of our architectures: each model card's `peers`

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
    peak_mem_mb: float | None       # GPU/NPU: max_memory_allocated over the run; CPU, MPS: None
    macs_per_image: int             # forward MACs at image_size (train mode: with aux heads)
    flops_per_image: int            # 2 x MACs (infer) or 3 x 2 x MACs (train)
    achieved_tflops: float
    peak_tflops: float | None
    mfu: float | None               # achieved_tflops / peak_tflops
    steps: int                      # timed steps
    warmup: int                     # untimed steps before them
    compile_s: float | None         # wall time of the first (compiling) step, when compile=True
    implementation: str = "inception"   # or the peer: "torchvision", "timm"
    step: str = ""                  # how the step ran: "eager", "compiled step (...)", a peer's plain loop
    compile_mode: str | None = None
    graph_breaks: int | None = None     # torch.compile's graph breaks (compile=True)
    profile: dict | None = None     # where the time of a step goes (profile=True; GPUs)
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


def _peak_precision(device: torch.device, precision: str) -> str:
    """The table column that ``precision`` runs as on ``device``: ``tf32`` for fp32 on a GPU
    with TF32 tensor cores (training and :func:`bench_model` allow TF32 convolutions and matmuls)."""
    if precision == "fp32" and device.type == "cuda":
        if peak_flops_for_name(accel.device_name(device) or "", "tf32") is not None:
            return "tf32"
    return precision


def peak_flops(device: str | torch.device, precision: str) -> float | None:
    """Dense peak TFLOPS of ``device`` for ``precision`` (``fp32``, ``bf16``, ``fp16``), or None
    when unknown (a CPU, MPS, a device not in the table: Ascend NPUs are not).

    ``fp32`` on a GPU with TF32 tensor cores returns the TF32 peak: the trainer (and
    :func:`bench_model`) let convolutions and matmuls run as TF32, so that is the math the device does.
    """
    device = torch.device(device)
    name = accel.device_name(device) if accel.is_available(device.type) else None
    return peak_flops_for_name(name, _peak_precision(device, precision)) if name else None


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


def _check_args(mode: str, precision: str, batch_size: int, steps: int, warmup: int, num_classes: int) -> None:
    if mode not in MODES:
        raise UserError(f"bench mode '{mode}' is not valid; choose train or infer")
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is not valid; choose auto, fp32, bf16 or fp16")
    for name, value, low in (("batch_size", batch_size, 1), ("steps", steps, 1), ("warmup", warmup, 0),
                             ("num_classes", num_classes, 1)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"bench {name} must be an integer >= {low}, got {value!r}")


def _peer_model(peer: str, model_name: str, num_classes: int, options: dict) -> nn.Module:
    """The peer library's own build of ``model_name`` (random weights), with the same
    auxiliary heads as ours (``aux_logits``)."""
    name = get_card(model_name).peers.get(peer)
    if peer not in PEERS:
        raise UserError(f"peer '{peer}' is not known; choose {' or '.join(PEERS)}")
    if name is None:
        have = [m for m in list_models() if peer in get_card(m).peers]
        raise UserError(f"{peer} has no {model_name}; its peers here: {', '.join(have)}")
    aux = bool(options.get("aux_logits", False))
    if peer == "torchvision":
        return getattr(torchvision.models, name)(num_classes=num_classes, aux_logits=aux, init_weights=True)
    try:
        import timm  # noqa: PLC0415 - optional (the dev extra): only the timm peer needs it
    except ModuleNotFoundError:
        raise UserError("the timm peer needs timm: pip install timm") from None
    return timm.create_model(name, num_classes=num_classes, pretrained=False)


def bench_model(model_name: str, *, mode: str = "train", batch_size: int = 64, image_size: int | None = None,
                precision: str = "auto", compile: bool = False, compile_mode: str = "default",
                device: str | torch.device = "auto", channels_last: bool | None = None, steps: int = 20,
                warmup: int = 5, num_classes: int = 1000, peak_tflops: float | None = None,
                model_options: dict | None = None, peer: str | None = None, profile: bool = False) -> BenchResult:
    """Throughput of ``model_name`` on synthetic data (see the module docstring for the method).

    Args:
        mode: ``train`` (the trainer's own step, :class:`~inception.engine.step.TrainStep`:
            forward and loss under autocast, backward, fused SGD-momentum step on CUDA, the
            non-finite-gradient guard; fp16 with a GradScaler) or ``infer`` (eval mode,
            ``torch.inference_mode``).
        image_size: square input side; default the model's own input size.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast (BatchNorm and the loss stay fp32);
            ``auto``: the trainer's default on this device (:func:`~inception.accel.speed_defaults`:
            bf16 where the CPU or GPU has native bf16, else fp32).
        compile: ``torch.compile`` the step as the trainer does (forward and loss in one graph);
            the compile time is ``compile_s`` and is not part of the figures (at least one
            warmup step is run). ``compile_mode``: ``torch.compile``'s mode
            (``reduce-overhead``: CUDA graphs).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``npu`` or ``npu:N``.
        channels_last: NHWC model and inputs; default (None) as the trainer's: on for CUDA and
            for x86 CPUs with AVX-512.
        steps, warmup: timed steps, and untimed steps before them.
        peak_tflops: the device's peak for this precision, overriding :func:`peak_flops`.
        model_options: options for ``create_model`` (``{"aux_logits": True}``...).
        peer: time the same architecture as ``torchvision`` or ``timm`` builds it, in the plain
            loop their users write (``torch.compile(model)`` with ``compile``, the loss outside,
            ``torch.optim.SGD``): the baseline our figures are held against.
        profile: also run 5 steps under ``torch.profiler`` and say where a step's time goes
            (``profile``: kernels by kind, and how much of the step the device is idle).
    """
    _check_args(mode, precision, batch_size, steps, warmup, num_classes)
    try:
        check_compile_mode(compile_mode)
    except ValueError as e:
        raise UserError(str(e)) from None
    if peak_tflops is not None and not peak_tflops > 0:
        raise UserError(f"peak_tflops must be positive, got {peak_tflops}")
    options = dict(model_options or {})
    dev = resolve_device(str(device))
    train = mode == "train"
    notes: list[str] = []
    defaults = accel.speed_defaults(dev)
    if (precision, channels_last) == ("auto", None):
        notes.append(f"the trainer's default here: {defaults.describe(defaults.precision, defaults.channels_last)}")
    precision = defaults.precision if precision == "auto" else precision
    channels_last = defaults.channels_last if channels_last is None else channels_last
    if compile and warmup < 1:
        warmup = 1

    ours = create_model(model_name, num_classes=num_classes, **options)
    dc = model_data_config(model_name, options)
    model = ours if peer is None else _peer_model(peer, model_name, num_classes, options)
    size = image_size or dc.input_size[1]
    if size < dc.min_input_size:
        raise UserError(f"image size {size} is below {model_name}'s minimum {dc.min_input_size}; "
                        f"use --image-size {dc.min_input_size} or more")
    log.info("bench %s%s %s: batch %d, %dx%d, %s%s on %s, %d+%d steps", model_name, f" ({peer})" if peer else "",
             mode, batch_size, size, size, precision, f", compiled ({compile_mode})" if compile else "", dev, warmup,
             steps)
    accel.check_precision(dev, precision)
    try:   # a free meta-device forward: also runs the model's input checks (v3's aux head needs 299)
        macs = forward_macs(model_name, size, train=train, num_classes=num_classes, model_options=options)
    except ValueError as e:
        raise UserError(str(e)) from None
    if train and getattr(ours, "aux_logits", False):
        notes.append("MACs include the auxiliary heads (they run in train mode)")
    if peer is not None:
        notes.append(f"{peer}'s {model_name}: its own model in a plain loop ("
                     f"{'torch.compile(model), ' if compile else ''}loss outside, torch.optim.SGD); MACs are ours")
    del ours

    restore = accel.tune_for_speed(dev)   # as the trainer sets them
    try:
        run = _run_steps(model, dev, train=train, batch_size=batch_size, size=size, precision=precision,
                         compile=compile, compile_mode=compile_mode, channels_last=channels_last, steps=steps,
                         warmup=warmup, num_classes=num_classes, peer=peer, profile=profile,
                         what=f"{model_name} ({mode}, batch {batch_size}, {size}x{size}, {precision})")
    finally:
        restore()

    median_ms = statistics.median(run.step_ms)
    img_per_s = batch_size / (median_ms / 1000)
    flops_per_image = (3 if train else 1) * 2 * macs
    achieved = flops_per_image * img_per_s / 1e12
    if peak_tflops is None:
        peak_tflops = peak_flops(dev, precision)
        if peak_tflops is not None:
            gpu = accel.device_name(dev)
            notes.append(f"peak {peak_tflops:g} TFLOPS: dense {_peak_precision(dev, precision)} of {known_gpu(gpu)}")
        elif accel.device_name(dev) is not None:
            notes.append(f"no known peak for {accel.device_name(dev)} ({precision}); "
                         "pass peak_tflops (--peak-tflops) for MFU")
    else:
        notes.append(f"peak {peak_tflops:g} TFLOPS: given")
    if dev.type == "cuda" and precision == "fp32":
        notes.append("fp32 convolutions and matmuls run as TF32, as in training")
    if run.skipped:
        notes.append(f"the fp16 loss scaler skipped {run.skipped} of the timed optimizer steps (inf gradients)")
    if run.compile_s is not None:
        notes.append(f"torch.compile took {run.compile_s:.1f} s (first step, excluded); "
                     f"{run.graph_breaks} graph break(s)")
    if run.peak_mem is None:
        notes.append(f"peak memory is not measured on {dev.type}")

    return BenchResult(
        model=model_name, mode=mode, batch_size=batch_size, image_size=size, precision=precision,
        compile=compile, channels_last=channels_last, device=device_label(dev),
        img_per_s=img_per_s, ms_per_step=median_ms, p90_ms=percentile(run.step_ms, 90),
        wall_img_per_s=batch_size * steps / run.wall_s, peak_mem_mb=run.peak_mem, macs_per_image=macs,
        flops_per_image=flops_per_image, achieved_tflops=achieved, peak_tflops=peak_tflops,
        mfu=achieved / peak_tflops if peak_tflops else None, steps=steps, warmup=warmup,
        compile_s=run.compile_s, implementation=peer or "inception", step=run.what,
        compile_mode=compile_mode if compile else None, graph_breaks=run.graph_breaks, profile=run.profile,
        step_ms=run.step_ms, notes=notes)


@dataclass
class _Run:
    step_ms: list[float]            # every timed step
    wall_s: float                   # the timed window's wall time
    compile_s: float | None
    peak_mem: float | None          # MiB; None on a CPU
    skipped: int                    # optimizer steps the fp16 scaler skipped
    what: str                       # how the step ran
    graph_breaks: int | None
    profile: dict | None


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters  # noqa: PLC0415 - torch._dynamo is slow to import; compile only
    return sum(counters["graph_break"].values())


def _run_steps(model: nn.Module, dev: torch.device, *, train: bool, batch_size: int, size: int, precision: str,
               compile: bool, compile_mode: str, channels_last: bool, steps: int, warmup: int, num_classes: int,
               peer: str | None, profile: bool, what: str) -> _Run:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format)
    model.train(train)
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randn(batch_size, _in_channels(model), size, size, generator=gen)
    images = images.to(dev).contiguous(memory_format=memory_format)
    target = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    options = {} if compile_mode == "default" else {"mode": compile_mode}
    criterion = nn.CrossEntropyLoss()
    amp = Precision(precision, dev, guard=peer is None)   # the trainer's autocast, fp16 scaling, non-finite guard
    # A tiny lr: the same work as any lr, but the weights stay put on the synthetic batch.
    sgd = OptimCfg(name="sgd", lr=1e-12, momentum=0.9, weight_decay=1e-4)
    if train and peer is None:
        train_step = TrainStep(model, criterion, amp, build_optimizer(model, sgd, dev), list(model.parameters()),
                               aux_weight=AUX_WEIGHT, compile=compile, compile_mode=compile_mode)

        def step() -> None:
            train_step(images, target)
        how = train_step.what
    elif train:    # the peer's plain loop
        run = torch.compile(model, **options) if compile else model
        optimizer = torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum,
                                    weight_decay=sgd.weight_decay)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with amp.autocast():
                loss, _ = compute_loss(run(images), target, criterion, AUX_WEIGHT)
            amp.backward(loss)
            amp.step(optimizer, None, None)
        how = f"plain loop, {'torch.compile(model)' if compile else 'eager'}"
    else:
        run = torch.compile(model, **options) if compile else model

        def step() -> None:
            with amp.autocast():
                run(images)
        how = f"compiled forward (torch.compile mode {compile_mode})" if compile else "eager"
    context = contextlib.nullcontext if train else torch.inference_mode
    scaler = amp.scaler if train and precision == "fp16" else None

    accel.reset_peak_memory(dev)
    new_event = accel.timing_event(dev)
    compile_s = None
    breaks = _graph_breaks() if compile else None
    try:
        with context():
            for i in range(warmup):
                start = time.perf_counter()
                step()
                if i == 0 and compile:
                    sync(dev)
                    compile_s = time.perf_counter() - start
            sync(dev)
            scale = scaler.get_scale() if scaler is not None else None
            step_ms: list[float] = []
            if new_event is not None:
                events = [(new_event(), new_event()) for _ in range(steps)]
                window = time.perf_counter()
                for start_ev, end_ev in events:
                    start_ev.record()
                    step()
                    end_ev.record()
                sync(dev)
                wall_s = time.perf_counter() - window
                step_ms = [s.elapsed_time(e) for s, e in events]
            else:
                window = time.perf_counter()
                for _ in range(steps):
                    start = time.perf_counter()
                    step()
                    sync(dev)
                    step_ms.append(1000 * (time.perf_counter() - start))
                wall_s = time.perf_counter() - window
            profiled = None
            if profile:
                try:
                    profiled = _profile(step, dev, statistics.median(step_ms))
                except Exception as e:    # the profiler is a diagnosis: its failure must not cost the figures
                    log.warning("profiling failed: %s: %s", type(e).__name__, e)
    except accel.OutOfMemoryError:
        raise UserError(f"{what} does not fit in the {dev.type.upper()} device's memory; lower --batch-size") from None
    peak = accel.peak_memory(dev)
    peak_mem = peak / 2**20 if peak is not None else None
    # Each inf/NaN gradient halves the scale and skips that step (growth needs 2,000 clean steps).
    skipped = round(math.log2(scale / scaler.get_scale())) if scale is not None else 0
    return _Run(step_ms=step_ms, wall_s=wall_s, compile_s=compile_s, peak_mem=peak_mem, skipped=max(skipped, 0),
                what=how, graph_breaks=_graph_breaks() - breaks if compile else None, profile=profiled)


# Kernel kinds of a profile, by the first pattern found in the kernel's name (lower case).
KERNEL_KINDS = (
    ("pooling", ("pool",)),
    ("batchnorm", ("batch_norm", "batchnorm", "bn_")),
    ("fused (inductor/triton)", ("triton",)),
    ("convolution", ("conv", "cudnn", "xmma", "implicit_gemm", "wgrad", "dgrad", "fprop", "cutlass", "sm90_")),
    ("concatenation", ("catarray", "cat_", "concat")),
    ("optimizer", ("sgd", "multi_tensor", "foreach", "adam", "non_finite")),
    ("matmul", ("gemm", "gemv", "matmul")),
    ("elementwise / copies", ("elementwise", "copy", "fill", "reduce", "softmax", "nll", "relu", "threshold")),
)
PROFILE_STEPS = 5


def _profile(step: Callable[[], None], dev: torch.device, step_ms: float) -> dict | None:
    """Run :data:`PROFILE_STEPS` steps under ``torch.profiler``: the device's kernel time per
    step by kind (:data:`KERNEL_KINDS`), how much of a step the device sits idle (the host
    launching too slowly: what CUDA graphs remove), the host's time per step, and the top
    kernels. None on a device the profiler does not trace (CPU: every op is host time)."""
    if dev.type != "cuda":
        return None
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(PROFILE_STEPS):
            step()
        host_ms = 1000 * (time.perf_counter() - start) / PROFILE_STEPS
        sync(dev)
    kinds: dict[str, float] = {}
    kernels: list[tuple[float, int, str]] = []
    for evt in prof.key_averages():
        if evt.device_type != torch.autograd.DeviceType.CUDA:     # kernels (and memcpy/memset) run on the device
            continue
        device_us = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)
        if not device_us:
            continue
        name = evt.key.lower()
        kind = next((k for k, pats in KERNEL_KINDS if any(p in name for p in pats)), "other")
        ms = device_us / 1000 / PROFILE_STEPS
        kinds[kind] = kinds.get(kind, 0.0) + ms
        kernels.append((ms, evt.count // PROFILE_STEPS, evt.key))
    busy = sum(kinds.values())
    kernels.sort(reverse=True)
    return {"steps": PROFILE_STEPS, "step_ms": step_ms, "device_busy_ms": busy,
            "device_idle_pct": max(0.0, 100 * (1 - busy / step_ms)) if step_ms else None,
            "host_ms_per_step": host_ms, "kernels_per_step": sum(k[1] for k in kernels),
            "by_kind_ms": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "top_kernels": [{"ms": round(ms, 3), "calls": calls, "name": name[:120]}
                            for ms, calls, name in kernels[:15]]}


def format_profile(r: BenchResult) -> str:
    """Where a step's time goes, from ``r.profile``, as a few lines of text."""
    p = r.profile
    if not p:
        return ""
    lines = [f"profile of {r.model}{'' if r.implementation == 'inception' else f' ({r.implementation})'} "
             f"{r.mode}, batch {r.batch_size}, {r.step} ({p['steps']} steps under torch.profiler): step "
             f"{p['step_ms']:.1f} ms, device busy {p['device_busy_ms']:.1f} ms (idle {p['device_idle_pct']:.0f}%), "
             f"host {p['host_ms_per_step']:.1f} ms to launch a step, {p['kernels_per_step']} kernels per step"]
    lines += [f"  {kind:<26} {ms:8.2f} ms  {100 * ms / max(p['device_busy_ms'], 1e-9):5.1f}%"
              for kind, ms in p["by_kind_ms"].items()]
    lines.append("  top kernels (ms per step, calls per step):")
    lines += [f"    {k['ms']:8.3f} ms  x{k['calls']:<4} {k['name']}" for k in p["top_kernels"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Report

COLUMNS = ("model", "mode", "batch", "size", "precision", "layout", "compile", "img/s", "ratio", "ms/step", "p90 ms",
           "peak MB", "GMACs/img", "TFLOPS", "MFU")


def _label(r: BenchResult) -> str:
    return r.model if r.implementation == "inception" else f"{r.model} ({r.implementation})"


def format_results(results: Sequence[BenchResult], notes: bool = True) -> str:
    """An aligned table of ``results``, headed by the device(s), with each result's notes, how
    each step ran and any profile below. ``ratio``: img/s against the first result of the same
    model, mode, batch and size (measured side by side in the same run): peers, other
    precisions and layouts against whichever ran first."""
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [COLUMNS]
    first: dict[tuple, BenchResult] = {}
    for r in results:
        base = first.setdefault((r.model, r.mode, r.batch_size, r.image_size), r)
        rows.append((_label(r), r.mode, str(r.batch_size), str(r.image_size), r.precision,
                     "NHWC" if r.channels_last else "NCHW",
                     r.compile_mode or "yes" if r.compile else "no", num(r.img_per_s, ",.1f"),
                     f"{r.img_per_s / base.img_per_s:.2f}x", num(r.ms_per_step, ".1f"),
                     num(r.p90_ms, ".1f"), num(r.peak_mem_mb, ",.0f"), num(r.macs_per_image / 1e9, ".2f"),
                     num(r.achieved_tflops, ".3g"), "-" if r.mfu is None else f"{100 * r.mfu:.1f}%"))
    lines = align_table(rows, left=(0, 1, 4, 5, 6)).split("\n")
    devices = sorted({r.device for r in results})
    header = [f"device: {', '.join(devices)}; torch {torch.__version__}"] if devices else []
    footer: list[str] = []
    if notes:
        seen: set[str] = set()
        for r in results:
            for n in r.notes + ([f"{_label(r)} {r.mode}: {r.step}"] if r.step else []):
                if n not in seen:
                    seen.add(n)
                    footer.append(f"note: {n}")
        footer += [format_profile(r) for r in results if r.profile]
    return "\n".join(header + lines + footer)

"""Inference speed of deployed models: PyTorch eager and ONNX Runtime side by side.

``bench_runtimes`` times model names (random weights; exported to ONNX as ``inception
export`` would) or exported model files, round by round on the same inputs, and reports
img/s, latency and the ratio against the first of each batch size.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import onnxruntime
import torch

from ..errors import UserError
from ..export import fold_batchnorm, write_model
from ..infer import TorchPredictor, default_threads, load_predictor
from ..metadata import model_metadata
from ..models import create_model
from .common import align_table, percentile

log = logging.getLogger("inception")

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
            path = export_onnx(model, metadata, workdir / f"{target}-{size}.onnx")
            out.append(("onnxruntime", load_predictor(path, device=device, threads=threads)))
        else:
            raise UserError(f"runtime '{runtime}' is not valid; choose from: {', '.join(RUNTIMES)}")
    return out


def export_onnx(model, metadata: dict, path: Path) -> Path:
    """``model`` (eval mode) written to ONNX as ``inception export`` would: BatchNorm folded."""
    return write_model(fold_batchnorm(model), path, fmt="onnx", metadata=metadata, image_size=metadata["image_size"])


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
                                  ms_per_batch=median, p90_ms=percentile(ts, 90), steps=steps)
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
    table = align_table(rows, left=(0, 1, 7))
    head = ""
    if results:
        r = results[0]
        head = (f"device: {r.device}, {r.threads} threads; torch {torch.__version__}, onnxruntime "
                f"{ort_version()}; medians of {r.steps} interleaved rounds\n")
    return head + table


def ort_version() -> str:
    """The installed ONNX Runtime's version."""
    return onnxruntime.__version__


def ort_providers() -> list[str]:
    """ONNX Runtime's execution providers here (``CUDAExecutionProvider`` with onnxruntime-gpu)."""
    return list(onnxruntime.get_available_providers())

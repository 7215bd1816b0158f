"""``inception bench``: honest throughput figures.

* :mod:`.model`: a model's training and inference compute on synthetic data (img/s,
  ms/step, peak memory, MFU against a table of GPU peaks);
* :mod:`.data`: the trainer's input pipeline, alone (:func:`bench_data`, set against a
  model's compute: input- or compute-bound) and against the plain torchvision one
  (:func:`bench_pipeline`);
* :mod:`.runtime`: inference on PyTorch eager and ONNX Runtime side by side;
* :mod:`.report`: every GPU figure the docs promise, as one Markdown table
  (:func:`gpu_report`).
"""

from .common import parse_model_options
from .data import PIPELINES, bench_data, bench_pipeline, data_verdict, format_data, format_pipeline
from .model import (
                    COLUMNS,
                    MODES,
                    PRECISIONS,
                    BenchResult,
                    bench_model,
                    format_results,
                    forward_macs,
                    known_gpu,
                    peak_flops,
                    peak_flops_for_name,
)
from .report import STEP_KEYS, STEPS, Report, gpu_report
from .runtime import RUNTIMES, RuntimeResult, bench_runtimes, format_runtime_results

__all__ = ["COLUMNS", "MODES", "PIPELINES", "PRECISIONS", "RUNTIMES", "STEP_KEYS", "STEPS", "BenchResult", "Report",
           "RuntimeResult", "bench_data", "bench_model", "bench_pipeline", "bench_runtimes", "data_verdict",
           "format_data", "format_pipeline", "format_results", "format_runtime_results", "forward_macs",
           "gpu_report", "known_gpu", "parse_model_options", "peak_flops", "peak_flops_for_name"]

"""Run a trained or exported model over images: the deployment side of the project.

``load_predictor(path)`` opens any model file this project writes and gives a
:class:`Predictor`, a callable from a float32 NCHW batch (numpy) to logits (numpy) that also
carries the model's deployment ``metadata`` (class names, input size, mean/std,
interpolation, crop):

* ``.onnx`` (fp32 or INT8) runs on ONNX Runtime: its CPU provider, or the CUDA / TensorRT
  providers when onnxruntime-gpu is installed (``device="cuda"`` / ``"tensorrt"``);
* a training checkpoint (``.pt``, or a run directory), a TorchScript file
  (``.torchscript.pt``), an ExportedProgram (``.pt2``) or exported weights
  (``.safetensors``) run on PyTorch.

``run_inference(predictor, inputs)`` reads an image, a folder of images, a dataset folder
with class sub-folders or a list file; decodes and preprocesses in DataLoader workers
exactly as evaluation does; predicts in batches with a progress bar; and returns the
top-k predictions per file, the files it skipped (unreadable or not images; reported,
never fatal) and, when labels are known, top-1/top-5 accuracy.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .accel import resolve_device
from .data.folder import is_image_file, load_image, read_list
from .data.transforms import eval_transform
from .engine.evaluate import restore_model
from .errors import UserError
from .metadata import model_kind, model_metadata, read_metadata
from .models import create_model
from .utils import atomic_write_text

log = logging.getLogger("inception")

RUNTIMES = ("auto", "onnxruntime", "torch")
ORT_DEVICES = {"cpu": ["CPUExecutionProvider"],
               "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
               "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


# --------------------------------------------------------------------------------------
# Predictors

class Predictor:
    """A model ready to run: ``predictor(batch)`` maps a float32 NCHW numpy batch to logits.

    ``metadata`` is the model's deployment metadata; ``fixed_batch`` is the batch size the
    model was exported with (None: any); ``runtime`` and ``device`` say what runs it.
    """

    runtime = "?"

    def __init__(self, path: str | Path, metadata: dict, device: str, fixed_batch: int | None = None) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.device = device
        self.fixed_batch = fixed_batch

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.get("classes") or [])

    @property
    def image_size(self) -> int:
        return int(self.metadata.get("image_size") or 224)

    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = batch.shape[0]
        if self.fixed_batch is None or n == self.fixed_batch:
            return self._run(batch)
        outs = []   # a fixed-batch model: run in chunks, zero-padding the last one
        for start in range(0, n, self.fixed_batch):
            chunk = batch[start:start + self.fixed_batch]
            k = chunk.shape[0]
            if k < self.fixed_batch:
                pad = np.zeros((self.fixed_batch - k, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            outs.append(self._run(chunk)[:k])
        return np.concatenate(outs)

    def describe(self) -> str:
        return f"{self.path.name} on {self.runtime} ({self.device})"


def default_threads() -> int:
    """CPU threads for inference: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # macOS, Windows
        return max(1, os.cpu_count() or 1)


class OnnxPredictor(Predictor):
    """ONNX Runtime session with every graph optimisation on (BatchNorm folding, Conv+ReLU
    fusion, constant folding), one intra-op thread per usable core, sequential execution.

    ``spin=False`` stops idle pool threads from spin-waiting for the next call: a little
    slower per call, but they no longer steal CPU from other work between calls."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, *, device: str = "auto", threads: int | None = None,
                 spin: bool = True) -> None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file '{path}' does not exist; check --model")
        import onnxruntime as ort  # noqa: PLC0415 - the export extra: .pt checkpoints infer without it

        metadata = read_metadata(path)
        available = ort.get_available_providers()
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
        if device not in ORT_DEVICES:
            raise UserError(f"device '{device}' is not valid for ONNX Runtime; use auto, cpu, cuda or tensorrt")
        providers = [p for p in ORT_DEVICES[device] if p in available]
        if ORT_DEVICES[device][0] not in available:
            raise UserError(f"ONNX Runtime here has no {ORT_DEVICES[device][0]} (it has {', '.join(available)}); "
                            "install onnxruntime-gpu for cuda/tensorrt, or use --device cpu")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads or default_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if not spin:   # idle pool threads sleep at once instead of spinning (fair side-by-side timing)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:
            raise UserError(f"'{path}' is not a valid ONNX model for ONNX Runtime ({_first_line(e)}); "
                            "re-export it with `inception export`") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
        super().__init__(path, metadata, device, fixed)
        if not metadata.get("image_size") and isinstance(inp.shape[-1], int):
            self.metadata = {**metadata, "image_size": inp.shape[-1]}

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


class TorchPredictor(Predictor):
    """A PyTorch module (eval mode, ``torch.inference_mode``) on ``device``."""

    runtime = "torch"

    def __init__(self, path: str | Path, module, metadata: dict, *, device: str = "auto",
                 threads: int | None = None) -> None:
        dev = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        self.module = module.to(dev) if isinstance(module, torch.nn.Module) else module
        self.torch_device = dev
        super().__init__(path, metadata, str(dev))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.torch_device, non_blocking=True)
            return self.module(x).float().cpu().numpy()


def load_torch_module(path: str | Path, kind: str | None = None) -> tuple[object, dict]:
    """The runnable module (eval mode, loaded on the CPU) and the metadata of a PyTorch-side
    model file: a checkpoint or run directory, TorchScript, ExportedProgram or safetensors
    (``kind`` as :func:`~inception.metadata.model_kind` names it; found from ``path`` when None)."""
    path = Path(path)
    kind = kind or model_kind(path)
    if kind == "checkpoint":
        model, ckpt, cfg, _, data_config = restore_model(path)
        return model, model_metadata(model, ckpt, cfg, data_config=data_config)
    if not path.is_file():
        raise UserError(f"model file '{path}' does not exist; check --model")
    metadata = read_metadata(path)
    try:
        if kind == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)   # TorchScript is deprecated upstream
                module = torch.jit.load(str(path), map_location="cpu")
            return module.eval(), metadata
        if kind == "exported-program":
            program = torch.export.load(str(path))
            return program.module(), metadata
    except Exception as e:
        raise UserError(f"'{path}' is not a readable {kind} file ({_first_line(e)}); re-export it with "
                        "`inception export`") from None
    # safetensors: rebuild the architecture named in its metadata

    if not metadata.get("model"):
        raise UserError(f"'{path}' carries no model name in its metadata; load plain weights with --pretrained, "
                        "or export them with `inception export --format safetensors`")
    model = create_model(metadata["model"], num_classes=metadata["num_classes"], **metadata.get("model_options", {}))
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:
        raise UserError(f"'{path}' does not fit {metadata['model']} ({_first_line(e)})") from None
    return model.eval(), metadata


def load_predictor(path: str | Path, *, runtime: str = "auto", device: str = "auto",
                   threads: int | None = None, spin: bool = True) -> Predictor:
    """A :class:`Predictor` for any model file this project writes (see the module docstring).

    ``runtime``: ``auto`` (ONNX Runtime for ``.onnx``, PyTorch otherwise), ``onnxruntime``
    or ``torch``. ``device``: ``auto``/``cpu``/``cuda`` (``tensorrt`` for ONNX Runtime,
    ``cuda:N``/``mps``/``npu[:N]`` for PyTorch). ``threads``: CPU threads (default: usable cores).
    """
    if runtime not in RUNTIMES:
        raise UserError(f"runtime '{runtime}' is not valid; choose one of: {', '.join(RUNTIMES)}")
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file '{path}' does not exist; check --model")
    kind = model_kind(path)
    if kind == "onnx":
        if runtime == "torch":
            raise UserError(f"'{path}' is an ONNX model; run it with --runtime onnxruntime (or auto)")
        return OnnxPredictor(path, device=device, threads=threads, spin=spin)
    if runtime == "onnxruntime":
        raise UserError(f"'{path}' is a {kind} file, not ONNX; export it first (`inception export --checkpoint "
                        f"{path} --format onnx`) or use --runtime torch")
    module, metadata = load_torch_module(path, kind)
    return TorchPredictor(path, module, metadata, device=device, threads=threads)


# --------------------------------------------------------------------------------------
# Inputs

@dataclass
class Inputs:
    """The files to predict: ``samples`` are ``(path, label index or None)``."""

    samples: list[tuple[str, int | None]]
    kind: str                                     # image, folder, dataset or list
    unknown_classes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        return sum(label is not None for _, label in self.samples)


def _files_under(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def resolve_inputs(path: str | Path, classes: Sequence[str], *, root: str | Path | None = None) -> Inputs:
    """What ``--input`` names, as a list of files with labels where they are known.

    * an image file: that image, no label;
    * a text file (``.txt``/``.list``/``.csv``): a PaddleClas list, ``relative/path label``
      per line, paths relative to ``root`` (default: the list file's folder);
    * a folder whose sub-folders are named after the model's classes: a labelled dataset
      (``<class>/<image>``, searched recursively); files directly in it are unlabelled;
    * any other folder: every file in it, recursively, unlabelled.

    Files that turn out not to be images are skipped (and reported) when read.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"input '{path}' does not exist; give an image, a folder or a list file")
    if path.is_file():
        if path.suffix.lower() in (".txt", ".list", ".csv"):
            base = Path(root).expanduser() if root else path.parent
            samples = read_list(path, base)
            n = len(classes)
            bad = sorted({label for _, label in samples if label >= n})
            if bad:
                raise UserError(f"'{path}' uses labels {bad[:5]} but the model has {n} classes; "
                                "check that the list belongs to this model")
            return Inputs([(p, label) for p, label in samples], "list")
        if not is_image_file(path.name):
            log.warning("'%s' does not have an image extension; trying to read it as an image", path)
        return Inputs([(str(path), None)], "image")
    index = {name: i for i, name in enumerate(classes)}
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    known = [d for d in subdirs if d.name in index]
    if not known:
        files = _files_under(path)
        if not files:
            raise UserError(f"input folder '{path}' holds no files; put images in it")
        return Inputs([(str(f), None) for f in files], "folder")
    samples: list[tuple[str, int | None]] = [(str(f), None) for f in sorted(path.iterdir())
                                             if f.is_file() and not f.name.startswith(".")]
    unknown = [d.name for d in subdirs if d.name not in index]
    for d in subdirs:
        label = index.get(d.name)
        samples += [(str(f), label) for f in _files_under(d)]
    if unknown:
        log.warning("%d sub-folder(s) of '%s' are not classes of this model (%s); their images are predicted "
                    "without labels", len(unknown), path, ", ".join(unknown[:5]))
    if not samples:
        raise UserError(f"input folder '{path}' holds no files; put images in its class folders")
    return Inputs(samples, "dataset", unknown)


def _eval_geometry(metadata: dict) -> tuple[int, float]:
    """``(image_size, crop_pct)`` of a model's metadata, with the defaults."""
    return int(metadata.get("image_size") or 224), float(metadata.get("crop_pct", 0.875))


def preprocess_transform(metadata: dict):
    """The eval transform a model's metadata describes (PIL image -> normalized float tensor)."""
    size, crop_pct = _eval_geometry(metadata)
    return eval_transform(size=size, mean=metadata.get("mean", (0.485, 0.456, 0.406)),
                          std=metadata.get("std", (0.229, 0.224, 0.225)),
                          interpolation=metadata.get("interpolation", "bilinear"), crop_pct=crop_pct)


def decode_side(metadata: dict) -> int:
    """The short side :func:`preprocess_transform` resizes to (``eval_transform``'s
    ``int(size / crop_pct)``): ``load_image(..., min_side=)`` may decode a large JPEG at
    reduced size down to it (infer and serve both do)."""
    size, crop_pct = _eval_geometry(metadata)
    return int(size / crop_pct)


class _ImageFiles(Dataset):
    """Decodes and preprocesses one file; a file that fails gives its error instead."""

    def __init__(self, samples: list[tuple[str, int | None]], transform, min_side: int | None = None) -> None:
        self.samples = samples
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path = self.samples[index][0]
        try:
            return self.transform(load_image(path, min_side=self.min_side)), index, None
        except UserError as e:
            return None, index, str(e)
        except Exception as e:   # a decodable file the transform cannot handle
            return None, index, f"cannot preprocess image '{path}' ({_first_line(e)})"


def _collate(items):
    images = [x for x, _, err in items if err is None]
    index = [i for x, i, err in items if err is None]
    errors = [(i, err) for _, i, err in items if err is not None]
    return (torch.stack(images) if images else None), index, errors


def image_batches(samples: list[tuple[str, int | None]], metadata: dict, *, batch_size: int = 32,
                  workers: int | None = None):
    """Yields ``(float32 NCHW tensor or None, sample indices, [(index, error)])`` in order."""
    if workers is None:   # worker start-up costs more than it saves on a handful of images
        workers = 0 if len(samples) <= batch_size else min(4, default_threads())
    files = _ImageFiles(samples, preprocess_transform(metadata), decode_side(metadata))
    loader = DataLoader(files, batch_size=batch_size,
                        shuffle=False, num_workers=workers, collate_fn=_collate,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    yield from loader


# --------------------------------------------------------------------------------------
# Running

@dataclass
class InferResult:
    predictions: list[dict]                       # path, label, topk [(class, prob)]
    skipped: list[dict]                           # path, reason
    metrics: dict                                 # top1/top5 counts and accuracies (when labelled)
    images: int
    seconds: float

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


def run_inference(predictor: Predictor, inputs: str | Path | Inputs, *, batch_size: int = 32, topk: int = 5,
                  workers: int | None = None, root: str | Path | None = None,
                  progress: bool | None = None) -> InferResult:
    """Predict every file of ``inputs`` (a path for :func:`resolve_inputs`, or its result)."""
    if batch_size < 1 or topk < 1:
        raise UserError(f"batch size and top-k must be >= 1 (got {batch_size} and {topk})")
    classes = predictor.classes or [str(i) for i in range(int(predictor.metadata.get("num_classes", 0)))]
    if not isinstance(inputs, Inputs):
        inputs = resolve_inputs(inputs, classes, root=root)
    k = min(topk, len(classes)) if classes else topk
    n5 = min(5, len(classes)) if classes else 5
    samples = inputs.samples
    predictions: list[dict] = []
    skipped: list[dict] = []
    c1 = c5 = labelled = 0
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(samples), unit="img", disable=not show, desc="infer", dynamic_ncols=True)
    start = time.perf_counter()
    for images, index, errors in image_batches(samples, predictor.metadata, batch_size=batch_size,
                                               workers=workers):
        for i, err in errors:
            skipped.append({"path": samples[i][0], "reason": err})
            log.warning("skipped: %s", err)
        if images is not None:
            probs = softmax(predictor(images.numpy()))
            order = np.argsort(-probs, axis=1)[:, :max(k, n5)]
            for row, i in enumerate(index):
                path, label = samples[i]
                top = order[row]
                predictions.append({
                    "path": path,
                    "label": classes[label] if label is not None and classes else label,
                    "topk": [(classes[j] if classes else int(j), float(probs[row, j])) for j in top[:k]],
                })
                if label is not None:
                    labelled += 1
                    c1 += int(top[0] == label)
                    c5 += int(label in top[:n5])
        bar.update(len(index) + len(errors))
        bar.set_postfix(img_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.0f}", skipped=len(skipped))
    bar.close()
    seconds = time.perf_counter() - start
    metrics: dict = {"images": len(predictions), "skipped": len(skipped), "labelled": labelled}
    if labelled:
        metrics.update(top1_correct=c1, top5_correct=c5, top1=100.0 * c1 / labelled, top5=100.0 * c5 / labelled,
                       topk=n5)
    return InferResult(predictions, skipped, metrics, len(predictions), seconds)


def accuracy_lines(metrics: dict) -> list[str]:
    """The vendors' postprocess printout: ``top1_correct=..., tot=..., acc=...%`` and top-5."""
    if not metrics.get("labelled"):
        return []
    n = metrics["labelled"]
    return [f"top1_correct={metrics['top1_correct']}, tot={n}, acc={metrics['top1']:.2f}%",
            f"top{metrics['topk']}_correct={metrics['top5_correct']}, tot={n}, acc={metrics['top5']:.2f}%"]


def write_predictions(result: InferResult, path: str | Path, *, model: str = "") -> Path:
    """Predictions as CSV (one row per file: path, label, then class and probability of each
    of the top k) or JSON (also the skipped files and the metrics), by ``path``'s suffix."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        doc = {"model": model, "metrics": result.metrics, "img_per_s": result.img_per_s,
               "predictions": [{"path": p["path"], "label": p["label"],
                                "topk": [{"class": c, "prob": round(q, 6)} for c, q in p["topk"]]}
                               for p in result.predictions],
               "skipped": result.skipped}
        atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
        return path
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise UserError(f"output '{path}' must end in .csv or .json")
    k = max((len(p["topk"]) for p in result.predictions), default=1)
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    writer.writerow(["path", "label"] + [c for i in range(1, k + 1) for c in (f"class{i}", f"prob{i}")])
    for p in result.predictions:
        row = [p["path"], "" if p["label"] is None else p["label"]]
        for c, q in p["topk"]:
            row += [c, f"{q:.6f}"]
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())
    return path

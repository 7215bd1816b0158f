"""Export a trained model for deployment, and prove the export computes what the model does.

``export_checkpoint(ckpt, fmt=...)`` writes one of:

* ``onnx``: torch.onnx's dynamo exporter, opset 18+ (``opset``), batch dimension dynamic
  unless ``batch_size`` is fixed; the deployment metadata (class names, input size,
  mean/std, interpolation, crop) is stored in the model's ``metadata_props``
  (key ``inception``, JSON, plus one key per field for tools that read plain strings);
* ``torchscript`` (``.torchscript.pt``, traced) and ``exported-program`` (``.pt2``,
  ``torch.export``): the metadata rides inside the archive and in a sidecar JSON
  (``<file>.json``);
* ``safetensors``: the plain weights (no pickle), the metadata in its header and sidecar.

BatchNorm is folded into the preceding convolution before export (every Conv-BN-ReLU of
these models), so any runtime gets the folded graph. After writing, the exported file is
loaded by the runtime that will serve it (ONNX Runtime for ONNX, PyTorch for the others)
and run next to the PyTorch model on the same inputs: the max abs difference of the logits
and the top-1 agreement are reported, and an export that differs beyond the tolerance is
rejected (:class:`ParityError`), leaving any previous file at the output path untouched.

With ``int8=True`` (ONNX only) the fp32 export is quantized by ONNX Runtime's static
quantization (QDQ format, per-channel int8 weights, uint8 activations, MinMax calibration)
on a few hundred images of ``calibration_data``; the held-out images of that data measure
the accuracy change, which replaces the fp32 parity check.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import random
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .engine.evaluate import restore_model
from .errors import UserError
from .infer import Predictor, TorchPredictor, image_batches, load_predictor, load_torch_module, resolve_inputs
from .metadata import INPUT_NAME, METADATA_FILE, METADATA_KEY, OUTPUT_NAME, model_metadata, onnx_props, sidecar_path
from .utils import atomic_write_text

log = logging.getLogger("inception")

FORMATS = ("onnx", "torchscript", "exported-program", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2",
            "safetensors": ".safetensors"}
_ACCEPTED = {"onnx": (".onnx",), "torchscript": (".pt", ".torchscript"), "exported-program": (".pt2",),
             "safetensors": (".safetensors",)}


class ParityError(UserError):
    """The exported model does not compute what the PyTorch model computes."""


@dataclass
class Parity:
    """Exported vs PyTorch logits on the same inputs."""

    samples: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float             # fraction of samples with the same top-1 class
    ok: bool

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (f"parity {verdict}: max abs diff {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), "
                f"top-1 agreement {100 * self.top1_agreement:.1f}% on {self.samples} inputs")


@dataclass
class ExportResult:
    path: Path
    format: str
    metadata: dict
    sidecar: Path | None = None
    parity: Parity | None = None
    int8: dict | None = None          # held-out accuracy of the fp32 and INT8 models
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Model preparation

def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm that directly follows a
    convolution in a ``conv``/``bn`` pair folded into that convolution's weights and bias."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(conv, bn)
            module.bn = nn.Identity()
    return model


def _dynamic(batch_size: int | None):
    if batch_size is not None:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=4096)},)


def _example(model: nn.Module, image_size: int, batch_size: int | None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch_size or 2, 3, image_size, image_size, generator=gen)


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warn about things that do not concern a user."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir"):
            logging.getLogger(name).setLevel(logging.ERROR)
        yield


def write_model(model: nn.Module, path: str | Path, *, fmt: str, metadata: dict, image_size: int,
                batch_size: int | None = None, opset: int | None = None) -> Path:
    """Write ``model`` (already in eval mode, BatchNorm folded if wanted) to ``path``."""
    path = Path(path)
    example = _example(model, image_size, batch_size)
    text = json.dumps(metadata)
    try:
        with _quiet():
            if fmt == "onnx":
                program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                            output_names=[OUTPUT_NAME], dynamic_shapes=_dynamic(batch_size),
                                            opset_version=opset, optimize=True, verbose=False)
                program.model.metadata_props.update(onnx_props(metadata))
                program.model.producer_name = "inception"
                program.save(str(path))
            elif fmt == "torchscript":
                traced = torch.jit.trace(model, example)
                torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: text})
            elif fmt == "exported-program":
                program = torch.export.export(model, (example,), dynamic_shapes=_dynamic(batch_size))
                torch.export.save(program, str(path), extra_files={METADATA_FILE: text})
            elif fmt == "safetensors":
                state = {k: v.contiguous() for k, v in model.state_dict().items()}
                save_file(state, str(path), metadata={METADATA_KEY: text, "format": "pt"})
            else:
                raise UserError(f"export format '{fmt}' is not valid; choose one of: {', '.join(FORMATS)}")
    except UserError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"exporting {metadata.get('model')} to {fmt} failed ({msg})"
                        + ("; try another --opset" if fmt == "onnx" else "")) from e
    return path


def _fsync_replace(tmp: Path, dest: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


# --------------------------------------------------------------------------------------
# Parity

def check_parity(predictor: Predictor, reference: nn.Module, *, inputs: np.ndarray | None = None,
                 samples: int = 8, tolerance: float | None = None, raise_on_fail: bool = True) -> Parity:
    """Run ``predictor`` (the exported model) and ``reference`` (the PyTorch model, eval
    mode) on the same inputs: seeded N(0, 1) images (what normalized photographs look like
    to the network) unless ``inputs`` are given.

    ``tolerance`` defaults to ``1e-4 x max(1, max |logit|)``: float32 rounding differences
    after BatchNorm folding and graph fusions are ~1e-6 relative, a wrong weight or op is
    orders of magnitude larger. Raises :class:`ParityError` when exceeded.
    """
    if inputs is None:
        size = predictor.image_size
        gen = torch.Generator().manual_seed(1234)
        inputs = torch.randn(samples, 3, size, size, generator=gen).numpy()
    with torch.inference_mode():
        ref = reference.eval()(torch.from_numpy(inputs)).float().numpy()
    out = predictor(inputs)
    if out.shape != ref.shape:
        raise ParityError(f"exported model '{predictor.path}' returns shape {out.shape}, the PyTorch model "
                          f"{ref.shape}; re-export it")
    diff = float(np.abs(out.astype(np.float64) - ref).max()) if np.isfinite(out).all() else float("inf")
    tol = tolerance if tolerance is not None else 1e-4 * max(1.0, float(np.abs(ref).max()))
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    parity = Parity(samples=len(inputs), max_abs_diff=diff, tolerance=tol, top1_agreement=agree, ok=diff <= tol)
    if not parity.ok and raise_on_fail:
        raise ParityError(f"exported model '{predictor.path}' differs from the PyTorch model: {parity.line()}; "
                          "the file was not kept (use --no-check to keep it anyway)")
    return parity


# --------------------------------------------------------------------------------------
# INT8

def _split_calibration(samples: list, calibration_size: int, holdout_size: int, seed: int = 0) -> tuple[list, list]:
    """Shuffled (seeded) calibration and held-out parts; with few images, half and half."""
    order = list(samples)
    random.Random(seed).shuffle(order)
    n_cal = min(calibration_size, max(1, len(order) // 2))
    return order[:n_cal], order[n_cal:n_cal + holdout_size]


def _batches(samples: list, metadata: dict, batch_size: int, workers: int | None):
    """Preprocessed image batches (numpy) and their labels; unreadable files are skipped."""
    for images, index, errors in image_batches(samples, metadata, batch_size=batch_size, workers=workers):
        for _, err in errors:
            log.warning("skipped: %s", err)
        if images is not None:
            yield images.numpy(), [samples[i][1] for i in index]


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: list, metadata: dict, *,
                  per_channel: bool = True, reduce_range: bool = True, batch_size: int = 32,
                  workers: int | None = None) -> None:
    """ONNX Runtime static quantization of ``fp32_path`` (QDQ, int8 weights, uint8
    activations) calibrated (MinMax) on ``calibration`` samples ``(path, label)``.

    ``reduce_range`` quantizes weights to 7 bits: on x86 CPUs without VNNI (AVX2,
    AVX-512 without VNNI) the u8 x s8 multiply-add accumulates pairs in int16 and can
    saturate with full 8-bit weights; 7-bit weights cannot.
    """

    batches = list(_batches(calibration, metadata, batch_size, workers))
    if not batches:
        raise UserError("no calibration image could be read; check --calibration-data")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            item = next(self.it, None)
            return None if item is None else {INPUT_NAME: item[0]}

    with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel, reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibTensorRangeSymmetric": False})
    model = onnx.load(str(out_path))
    del model.metadata_props[:]
    for key, value in onnx_props(metadata).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out_path))


def compare_accuracy(fp32: Predictor, int8: Predictor, samples: list, *, batch_size: int = 32,
                     workers: int | None = None) -> dict:
    """Top-1 of both models and their top-1 agreement on ``samples`` (labels may be None)."""
    n = labelled = agree = c32 = c8 = 0
    for images, labels in _batches(samples, fp32.metadata, batch_size, workers):
        p32, p8 = fp32(images).argmax(1), int8(images).argmax(1)
        n += len(labels)
        agree += int((p32 == p8).sum())
        for a, b, y in zip(p32, p8, labels):
            if y is not None:
                labelled += 1
                c32 += int(a == y)
                c8 += int(b == y)
    out = {"images": n, "labelled": labelled, "top1_agreement": 100.0 * agree / max(n, 1)}
    if labelled:
        out.update(fp32_top1=100.0 * c32 / labelled, int8_top1=100.0 * c8 / labelled)
        out["delta"] = out["int8_top1"] - out["fp32_top1"]
    return out


# --------------------------------------------------------------------------------------
# The command

def default_output(checkpoint: Path, arch: str, fmt: str, int8: bool) -> Path:
    """``RUN/export/<arch>[-int8].<ext>`` for a checkpoint in ``RUN/checkpoints``, else
    beside the checkpoint."""
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run / "export" / f"{arch}{'-int8' if int8 else ''}{SUFFIXES[fmt]}"


def export_checkpoint(checkpoint: str | Path, *, fmt: str = "onnx", output: str | Path | None = None,
                      batch_size: int | None = None, opset: int | None = None, image_size: int | None = None,
                      check: bool = True, tolerance: float | None = None, int8: bool = False,
                      calibration_data: str | Path | None = None, calibration_size: int = 300,
                      holdout_size: int = 500, reduce_range: bool = True, per_channel: bool = True,
                      max_int8_drop: float = 2.0, workers: int | None = None) -> ExportResult:
    """Export ``checkpoint`` (a file or a run directory); see the module docstring."""
    if fmt not in FORMATS:
        raise UserError(f"export format '{fmt}' is not valid; choose one of: {', '.join(FORMATS)}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if int8 and fmt != "onnx":
        raise UserError("--int8 needs --format onnx (INT8 models run on ONNX Runtime)")
    if int8 and not calibration_data:
        raise UserError("--int8 needs --calibration-data PATH: a few hundred images like those the model will "
                        "see (a dataset folder, an image folder or a list file)")
    if opset is not None and not 18 <= opset <= 23:
        raise UserError(f"--opset {opset} is not supported by the exporter; use 18 to 23")

    model, ckpt, cfg, ckpt_path, data_config = restore_model(checkpoint)
    metadata = model_metadata(model, ckpt, cfg, image_size=image_size, data_config=data_config)
    metadata.update(format=fmt, batch_size=batch_size, source=str(ckpt_path))
    if fmt == "onnx":
        metadata["opset"] = opset or 18
    if int8:
        metadata["precision"] = "int8"
    size = metadata["image_size"]
    out = Path(output) if output else default_output(ckpt_path, ckpt["arch"], fmt, int8)
    if out.is_dir():
        out = out / default_output(ckpt_path, ckpt["arch"], fmt, int8).name
    elif not out.name.lower().endswith(_ACCEPTED[fmt]):   # "model" -> "model.onnx": infer knows it by name
        out = out.with_name(out.name + SUFFIXES[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"cannot write to '{out.parent}'; choose another --output")

    folded = fold_batchnorm(model)
    result = ExportResult(path=out, format=fmt, metadata=metadata)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmpdir:
        tmp = Path(tmpdir) / out.name
        log.info("exporting %s (%s, %dx%d, batch %s) to %s", ckpt["arch"], fmt, size, size,
                 batch_size or "dynamic", out)
        if not int8:
            source = model if fmt == "safetensors" else folded   # plain weights stay loadable by --pretrained
            write_model(source, tmp, fmt=fmt, metadata=metadata, image_size=size, batch_size=batch_size, opset=opset)
            if check and fmt != "safetensors":
                predictor = load_predictor(tmp, device="cpu")
                result.parity = check_parity(predictor, model, samples=batch_size or 8, tolerance=tolerance)
            elif check:   # plain weights: reload them into a fresh model and compare
                result.parity = _safetensors_parity(tmp, model, metadata, tolerance)
        else:
            fp32_tmp = Path(tmpdir) / "fp32.onnx"
            fp32_meta = {**metadata, "precision": "fp32"}
            write_model(folded, fp32_tmp, fmt="onnx", metadata=fp32_meta, image_size=size, batch_size=batch_size,
                        opset=opset)
            fp32 = load_predictor(fp32_tmp, device="cpu")
            if check:
                check_parity(fp32, model, samples=batch_size or 8, tolerance=tolerance)
            inputs = resolve_inputs(calibration_data, metadata["classes"])
            cal, held = _split_calibration(inputs.samples, calibration_size, holdout_size)
            log.info("calibrating INT8 on %d images of %s (%d held out to measure accuracy)", len(cal),
                     calibration_data, len(held))
            metadata["calibration"] = {"data": str(calibration_data), "images": len(cal), "method": "minmax",
                                       "per_channel": per_channel, "reduce_range": reduce_range}
            quantize_int8(fp32_tmp, tmp, cal, metadata, per_channel=per_channel, reduce_range=reduce_range,
                          batch_size=batch_size or 32, workers=workers)
            q = load_predictor(tmp, device="cpu")
            if held:
                result.int8 = compare_accuracy(fp32, q, held, batch_size=batch_size or 32, workers=workers)
                drop = -result.int8.get("delta", 0.0)
                if check and result.int8.get("labelled") and drop > max_int8_drop:
                    raise ParityError(f"INT8 model loses {drop:.2f} points of top-1 on {result.int8['labelled']} "
                                      f"held-out images (limit {max_int8_drop:g}); calibrate on more varied "
                                      "images, or raise --max-int8-drop")
            else:
                result.notes.append("no images left to hold out: accuracy change not measured")
        _fsync_replace(tmp, out)
    if fmt != "onnx":
        result.sidecar = sidecar_path(out)
        atomic_write_text(result.sidecar, json.dumps(metadata, indent=2) + "\n")
    return result


def _safetensors_parity(path: Path, model: nn.Module, metadata: dict, tolerance: float | None) -> Parity:
    module, _ = load_torch_module(path, "safetensors")
    return check_parity(TorchPredictor(path, module, metadata, device="cpu"), model, tolerance=tolerance)

"""What an exported model file carries, and how to read it back.

``export`` writes the deployment metadata (class names, input size, mean/std,
interpolation, crop, where the weights came from) built by :func:`model_metadata`;
``infer`` and ``serve`` read it with :func:`read_metadata`. Where it lives, by file kind
(:func:`model_kind`):

* ONNX: the model's ``metadata_props`` (key ``inception``, JSON, plus one key per field for
  tools that read plain strings; :func:`onnx_props` / :func:`parse_props`);
* TorchScript / ExportedProgram: ``METADATA_FILE`` inside the archive, and a sidecar JSON
  (:func:`sidecar_path`);
* safetensors: the ``inception`` key of its header, and the sidecar.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from safetensors import safe_open

from ._version import __version__
from .config import DataCfg
from .data import eval_preprocessing
from .errors import UserError
from .spec import METADATA_KEY, DataConfig

METADATA_VERSION = 1
METADATA_FILE = "inception.json"        # name inside TorchScript / ExportedProgram archives
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def model_metadata(model, ckpt: dict | None, cfg, *, image_size: int | None = None,
                   data_config: DataConfig | None = None) -> dict:
    """What a deployer needs to run ``model`` (restored from checkpoint ``ckpt`` trained
    with config ``cfg``, preprocessing ``data_config``, by default the model card's): its class
    names and its eval preprocessing, as plain values."""
    dc = data_config or model.data_config
    # a bare model (no training config): the model's own eval preprocessing (imagenet-style crop)
    pre = eval_preprocessing(cfg.data if cfg is not None else DataCfg(dataset="folder"), dc)
    if image_size:
        dc_min = dc.min_input_size
        if image_size < dc_min:
            raise UserError(f"image size {image_size} is below {model.arch}'s minimum {dc_min}; "
                            f"use --image-size {dc_min} or more")
        pre.update(image_size=image_size, resize_size=int(image_size / pre["crop_pct"]))
    ckpt = ckpt or {}
    classes = list(ckpt.get("class_names") or [str(i) for i in range(model.num_classes)])
    metrics = ckpt.get("metrics") or {}
    return {
        "metadata_version": METADATA_VERSION,
        "producer": f"inception {__version__}",
        "model": getattr(model, "arch", None) or ckpt.get("arch"),
        "model_options": dict(ckpt.get("model_options", {})),
        "num_classes": model.num_classes,
        "classes": classes,
        **pre,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_layout": "NCHW float32, RGB, normalized with mean/std",
        "output": "logits (apply softmax for probabilities)",
        "precision": "fp32",
        "checkpoint": {"epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"),
                       "val_top1": metrics.get("val_top1"), "val_top5": metrics.get("val_top5")},
    }


def onnx_props(metadata: dict) -> dict[str, str]:
    """ONNX ``metadata_props`` for ``metadata``: all of it as JSON under ``inception``, and
    one string per field (JSON where structured)."""
    props = {METADATA_KEY: json.dumps(metadata)}
    for key, value in metadata.items():
        props[key] = value if isinstance(value, str) else json.dumps(value)
    return props


def parse_props(props: dict[str, str]) -> dict:
    """ONNX ``metadata_props`` (strings; JSON where structured) back to values."""
    if METADATA_KEY in props:
        return json.loads(props[METADATA_KEY])
    out = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def sidecar_path(path: str | Path) -> Path:
    """``model.torchscript.pt`` -> ``model.torchscript.pt.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def model_kind(path: str | Path) -> str:
    """``onnx``, ``torchscript``, ``exported-program``, ``safetensors`` or ``checkpoint``."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return "checkpoint"
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".pt2"):
        return "exported-program"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith((".torchscript.pt", ".torchscript", ".jit.pt")):
        return "torchscript"
    try:   # a TorchScript archive holds code/; a torch.save checkpoint does not
        with zipfile.ZipFile(path) as z:
            if any("/code/" in n for n in z.namelist()[:200]):
                return "torchscript"
    except (OSError, zipfile.BadZipFile):
        pass
    return "checkpoint"


def read_metadata(path: str | Path) -> dict:
    """The deployment metadata of an exported model file (``{}`` when it has none)."""
    path = Path(path)
    kind = model_kind(path)
    if kind == "onnx":
        import onnx  # noqa: PLC0415 - the export extra: checkpoints' metadata reads without it

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise UserError(f"'{path}' is not a readable ONNX model ({_first_line(e)}); re-export it with "
                            "`inception export`") from None
        return parse_props({p.key: p.value for p in model.metadata_props})
    side = sidecar_path(path)
    if side.is_file():
        try:
            return json.loads(side.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"metadata file '{side}' is not valid JSON; re-export the model") from None
    if kind in ("torchscript", "exported-program"):
        try:
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("/" + METADATA_FILE)
                             or n.endswith("extra/" + METADATA_FILE)), None)
                if name:
                    return json.loads(z.read(name))
        except (zipfile.BadZipFile, ValueError):
            pass
    if kind == "safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except Exception as e:
            raise UserError(f"'{path}' is not a readable safetensors file ({_first_line(e)})") from None
        if METADATA_KEY in meta:
            return json.loads(meta[METADATA_KEY])
    return {}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]

"""Load weights into a model: this project's checkpoints, torchvision and timm state dicts.

Files may be ``.pth`` / ``.pt`` (loaded with ``weights_only=True``: no pickled code runs)
or ``.safetensors``. The source is detected from the keys:

* this project's checkpoints are dicts tagged ``format: inception`` that carry the
  architecture name, class names and preprocessing next to the ``model`` state dict;
* raw state dicts (also wrapped in ``state_dict`` / ``model`` / ``model_state_dict``, with
  ``module.`` or ``_orig_mod.`` prefixes from DDP / torch.compile) are matched against the
  layouts of the four models: torchvision's ``googlenet`` and ``inception_v3`` (timm's
  ``inception_v3`` uses the same names), timm's (Cadene's) ``inception_v4`` and
  ``inception_resnet_v2`` (Cadene's ``last_linear`` head is renamed to timm's ``classif``);
* the vendor zoos' files: MindSpore ``.ckpt`` (or safetensors with MindSpore's names) and
  Paddle ``.pdparams`` of MindSpore's GoogLeNet / InceptionV4 and PaddleClas's GoogLeNet /
  InceptionV4 (:mod:`.vendor`), renamed to ours; they need the matching model
  (``googlenet`` / ``inception_v4`` with ``variant`` ``mindspore`` / ``paddleclas``, or
  ``googlenet_v1``), which ``inception convert`` picks by itself.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from ..errors import CheckpointError
from ..spec import METADATA_KEY, DataConfig
from ..utils import short_list
from .card import WeightLayout, all_cards, card_of_class
from .layers import INCEPTION_MEAN, INCEPTION_STD, InceptionBase
from .vendor import LABELS as VENDOR_LABELS
from .vendor import detect_vendor, read_vendor, to_ours

log = logging.getLogger("inception")

#: Tag stored in every checkpoint this project writes.
CHECKPOINT_FORMAT = "inception"

_WRAPPERS = ("state_dict", "model_state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadResult:
    """What :func:`load_pretrained` did."""

    source: str                      # the layout's: "inception", "torchvision", "timm", "torchvision/timm",
                                     # "mindspore", "paddle"
    arch: str                        # the architecture the file holds
    data_config: DataConfig | None = None    # the preprocessing these weights expect (the card's, with the
                                             # file's mean/std): the run's own, never set on the model
    reinitialized: list[str] = field(default_factory=list)   # classifier keys left at init
    ignored: list[str] = field(default_factory=list)         # aux-head keys the model has no use for
    missing_aux: list[str] = field(default_factory=list)     # aux-head keys the file lacks
    checkpoint: dict = field(default_factory=dict)           # the rest of a project checkpoint


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """Read a weights file into ``(state_dict, checkpoint_extras)`` without running code.

    ``checkpoint_extras`` holds the other entries of a project checkpoint (arch, class names,
    data config...) and is empty for a plain state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist; check the path")
    vendor = read_vendor(path)
    if vendor is not None:
        return _vendor_result(vendor)
    if path.suffix == ".safetensors":
        try:
            sd = _strip(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"'{path}' is not a readable safetensors file ({e})") from None
        return _vendor_result(to_ours(sd, path)) if detect_vendor(sd) else (sd, _exported_extras(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(Trying to load unsupported GLOBAL [^\n]*|Unsupported global: [^\n]*)", str(e))
        if found is None:
            raise CheckpointError(f"'{path}' is not a readable PyTorch weights file (corrupt or not a "
                                  "checkpoint)") from None
        raise CheckpointError(
            f"'{path}' holds Python objects that are not loaded, for safety ({found.group(1).strip()}); "
            "save a plain state dict (torch.save(model.state_dict(), ...)) or a .safetensors file"
        ) from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(f"'{path}' is not a readable PyTorch weights file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"'{path}' holds a {type(obj).__name__}, not a state dict")
    if obj.get("format") == CHECKPOINT_FORMAT:
        extras = {k: v for k, v in obj.items() if k not in ("model", "ema")}
        return _strip(eval_weights(obj)), extras
    for key in _WRAPPERS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path}' does not hold a state dict of tensors")
    sd = _strip(obj)
    return _vendor_result(to_ours(sd, path)) if detect_vendor(sd) else (sd, {})


def _exported_extras(path: Path) -> dict:
    """What the header of an ``inception export --format safetensors`` file says about the model
    it came from: ``{"exported": {"model", "variant"}, "data_config": {"mean", "std"}}`` (``{}``
    for other safetensors files)."""
    try:
        with safe_open(str(path), "pt") as f:
            text = (f.metadata() or {}).get(METADATA_KEY)
        meta = json.loads(text) if text else None
    except (SafetensorError, OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    out: dict = {"exported": {"model": meta.get("model"),
                              "variant": (meta.get("model_options") or {}).get("variant")}}
    if "mean" in meta and "std" in meta:
        out["data_config"] = {"mean": meta["mean"], "std": meta["std"]}
    return out


def _check_exported(model: InceptionBase, exported: dict, path: str | Path) -> None:
    """An exported file's weights only give its outputs in a model built the same way: the
    vendors' variants have the same shapes as ours but other padding or branch orders."""
    own = getattr(model, "variant", None)
    if own is None:
        return
    default = inspect.signature(type(model).__init__).parameters.get("variant")
    want = exported.get("variant") or (default.default if default is not None else None)
    if want is not None and want != own:
        raise CheckpointError(f"'{path}' was exported from {exported.get('model') or model.arch} built with variant "
                              f"'{want}', and this model is variant '{own}': build it the same way "
                              f"(--set model.options.variant={want})")


def _vendor_result(vendor) -> tuple[dict[str, Tensor], dict]:
    if vendor.skipped:
        log.info("skipped %d optimizer/training entries of the %s file (%s)", len(vendor.skipped), vendor.label,
                 short_list(vendor.skipped, 3))
    return vendor.state_dict, {"vendor": vendor.source, "arch": vendor.arch, "model_options": vendor.options}


def eval_weights(ckpt: dict) -> dict[str, Tensor]:
    """The weights of a project checkpoint to evaluate, export or fine-tune from: its EMA's
    (``ema``) when the checkpoint says they scored higher (``best_source: ema``), else the
    model's. Resuming training always takes ``model``."""
    return ckpt["ema"] if ckpt.get("best_source") == "ema" and "ema" in ckpt else ckpt["model"]


def _strip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def detect_layout(state_dict: dict[str, Tensor]) -> tuple[str, WeightLayout] | None:
    """``(architecture, layout)`` of the model card whose (non-vendor) weight layout
    ``state_dict`` has, by the layout's marker key; None when no card's does."""
    return next(((card.name, layout) for card in all_cards() for layout in card.layouts
                 if not layout.vendor and layout.marker in state_dict), None)


def detect_arch(state_dict: dict[str, Tensor]) -> str | None:
    """The architecture whose layout ``state_dict`` has, or None."""
    found = detect_layout(state_dict)
    return found[0] if found else None


def own_arch(model: InceptionBase) -> str:
    """The architecture whose weight layouts ``model`` loads: the first card built by its class
    (``googlenet`` for a ``googlenet_cifar``), else its own name."""
    card = card_of_class(type(model).__name__)
    return card.name if card is not None else model.arch


def load_pretrained(model: InceptionBase, path: str | Path) -> LoadResult:
    """Load weights from ``path`` into ``model`` in place.

    * A classifier whose class count differs from the file's is left at its fresh
      initialisation, with a warning (transfer learning).
    * Auxiliary-head weights the model has no heads for are ignored; aux heads the file
      lacks keep their initialisation, with a warning.
    * Any other missing, unexpected or mis-shaped key raises :class:`CheckpointError`.
    * The result's ``data_config`` is the preprocessing the weights expect: torchvision's and
      timm's ImageNet weights for these models want inputs scaled to [-1, 1] (torchvision's
      googlenet and inception_v3 do it inside with ``transform_input=True``), so their mean/std
      are 0.5; a project checkpoint brings its own. The model's own ``data_config`` (its card's)
      is left as it is: build transforms from ``result.data_config``.
    """
    state_dict, extras = read_weights(path)
    return apply_weights(model, state_dict, extras, path=path)


def weights_data_config(dc: DataConfig, extras: dict) -> DataConfig:
    """The preprocessing ``dc`` (an architecture's, from its card) as weights with these
    checkpoint ``extras`` expect it: a project checkpoint restores its own mean/std, an exported
    file its header's; torchvision and timm ImageNet weights use 0.5/0.5; a vendor's recipe
    normalises as the card says."""
    if extras.get("vendor"):
        return dc
    if "exported" in extras:
        extras = {"data_config": extras.get("data_config", {})}
    if extras:
        saved = extras.get("data_config")
        if isinstance(saved, dict):
            return dc.replace(mean=tuple(saved.get("mean", dc.mean)), std=tuple(saved.get("std", dc.std)))
        return dc
    return dc.replace(mean=INCEPTION_MEAN, std=INCEPTION_STD)


def apply_weights(model: InceptionBase, state_dict: dict[str, Tensor], extras: dict, *,
                  path: str | Path = "weights") -> LoadResult:
    """:func:`load_pretrained` for weights already read by :func:`read_weights`."""
    own = own_arch(model)
    data_config = weights_data_config(model.data_config, extras)
    exported = extras.get("exported")
    if exported is not None:                # our own exported safetensors: its variant, its mean/std
        _check_exported(model, exported, path)
        extras = {}
    vendor = extras.get("vendor")
    if vendor:
        source, file_arch = extras["vendor"], extras["arch"]
        want = extras.get("model_options", {}).get("variant")
        options = f" --set model.options.variant={want}" if want else ""
        label = VENDOR_LABELS[source]
        if file_arch != own:
            raise CheckpointError(f"'{path}' is a {label} {file_arch} checkpoint, not {own}: use "
                                  f"--model {file_arch}{options} (or `inception convert {path} OUT.pt`)")
        if want and getattr(model, "variant", None) != want:
            raise CheckpointError(f"'{path}' is a {label} {file_arch} checkpoint: its outputs need the model built "
                                  f"as {label} builds it:{options} (or `inception convert {path} OUT.pt`)")
        extras = {}
    elif extras:
        source = CHECKPOINT_FORMAT
        file_arch = extras.get("arch", "?")
        file_card = card_of_class(extras.get("model_class", ""))
        if file_arch != model.arch and (file_card.name if file_card else file_arch) != own:
            raise CheckpointError(
                f"checkpoint '{path}' is for model '{file_arch}', not '{model.arch}'; use --model {file_arch}"
            )
    else:
        found = detect_layout(state_dict)
        if found is None:
            known = ", ".join(c.name for c in all_cards() if any(not lay.vendor for lay in c.layouts))
            raise CheckpointError(f"'{path}' is not a state dict of a known layout ({known}; first keys: "
                                  f"{short_list(list(state_dict), 3)})")
        file_arch, layout = found
        if file_arch != own:
            raise CheckpointError(f"'{path}' holds {file_arch} weights, not {own}; use --model {file_arch}")
        source = layout.source
        for old, new in layout.aliases:
            state_dict = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state_dict.items()}

    result = LoadResult(source=source, arch=file_arch, data_config=data_config, checkpoint=extras)
    target = model.state_dict()
    is_aux = lambda k: k.startswith(model.aux_keys) if model.aux_keys else False  # noqa: E731
    is_head = lambda k: k.startswith(model.classifier_keys)  # noqa: E731

    loadable: dict[str, Tensor] = {}
    unexpected, mismatched = [], []
    for k, v in state_dict.items():
        if k not in target:
            if is_aux(k):
                result.ignored.append(k)
            elif is_head(k) and v.ndim > 0:  # e.g. file has a head, model has num_classes=0
                result.reinitialized.append(k)
            else:
                unexpected.append(k)
        elif target[k].shape != v.shape:
            if is_head(k):
                result.reinitialized.append(k)
            else:
                mismatched.append(f"{k} {tuple(v.shape)} vs model {tuple(target[k].shape)}")
        else:
            loadable[k] = v
    # BatchNorm's step counter is not a weight (and files from PyTorch < 0.4, e.g. Cadene's, lack it)
    missing = [k for k in target if k not in state_dict and not k.endswith(".num_batches_tracked")]
    result.missing_aux = [k for k in missing if is_aux(k) and not is_head(k)]
    missing_head = [k for k in missing if is_head(k)]
    missing = [k for k in missing if k not in result.missing_aux and k not in missing_head]
    result.reinitialized += missing_head

    problems = []
    if missing:
        problems.append(f"missing keys: {short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {short_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {short_list(mismatched, 3)}")
    if problems:
        raise CheckpointError(
            f"'{path}' does not fit {model.arch or own_arch} ({'; '.join(problems)}); "
            "check --model and its options (e.g. aux_logits, stem)"
        )

    model.load_state_dict(loadable, strict=False)
    if result.reinitialized:
        log.warning("%s: classifier does not match the model's %d classes; re-initialised %s",
                    path, model.num_classes, short_list(result.reinitialized, 4))
    if result.missing_aux:
        log.warning("%s has no auxiliary-head weights; the aux heads keep their initialisation", path)
    if result.ignored:
        log.info("%s: ignored %d auxiliary-head tensors (the model has no aux heads)", path, len(result.ignored))
    return result

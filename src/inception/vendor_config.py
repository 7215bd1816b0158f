"""The vendor model zoos' own config files, read as recipes.

A MindSpore model-zoo config (``default_config.yaml``, ``cifar10_config.yaml``: flat keys such
as ``lr_max``, ``epoch_size``, ``amp_level``, up to three YAML documents) or a PaddleClas config
(``ppcls/configs/...``: sections ``Global``, ``Arch``, ``Loss``, ``Optimizer``, ``DataLoader``)
is translated key by key into our five sections. Every vendor key ends up either in
``rows`` (translated) or in ``untranslated`` (with the reason); nothing is dropped silently.
Where a translation is only close, ``notes`` says how it differs ("approximated: ...").

Settings that the vendors hard-code in their ``train.py`` rather than in the file (GoogLeNet's
CIFAR-10 step schedule, which parameters get weight decay) are rows whose vendor key is
``(train.py)``.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import config
from .config import read_documents
from .errors import UserError
from .models.card import VENDOR_ZOOS, all_cards


def vendor_models() -> dict[str, dict[str, tuple[str, dict]]]:
    """``{zoo: {vendor model name: (our model, model.options)}}``, from the model cards'
    ``vendor_names``. MindSpore names are compared lower-case without "_" or "-" (net_name:
    GoogleNet, file_name: inceptionv4, or the config's folder name)."""
    out: dict[str, dict[str, tuple[str, dict]]] = {zoo: {} for zoo in VENDOR_ZOOS}
    for card in all_cards():
        for v in card.vendor_names:
            out[v.zoo][v.name] = (card.name, dict(v.options))
    return out


MODELS = vendor_models()
# What the MindSpore train.py of each model uses, not written in its config file.
MINDSPORE_OPTIMIZER = {"googlenet": "sgd", "inceptionv4": "rmsprop"}

VENDORS = {"mindspore": "MindSpore model-zoo config", "paddleclas": "PaddleClas config"}
OURS = ("model", "data", "optim", "schedule", "train")
PADDLE_SECTIONS = ("Global", "Arch", "Loss", "Optimizer", "DataLoader", "Metric", "AMP", "Infer", "EMA")

_CLOUD = "Huawei ModelArts (cloud) setting; no equivalent"
_DEVICE = "ours picks the device itself (train.device: auto); --device to force one"
_DIST = "distributed runs: `inception train --nproc N` or torchrun (rank and world size come from it)"
_EXPORT = "export/inference setting: see `inception export` and `inception infer`"
_OUTDIR = ("ours writes each run to a fresh runs/<model>-<dataset>-<time>/ (checkpoints in it); a fixed folder "
           "would resume whichever run wrote there last: set train.output_dir yourself")
_MS_SKIP = {
    **dict.fromkeys(("enable_modelarts", "data_url", "train_url", "checkpoint_url", "load_path", "output_path",
                     "modelarts_dataset_unzip_name", "need_modelarts_dataset_unzip"), _CLOUD),
    **dict.fromkeys(("device_target", "platform", "device_id"), _DEVICE),
    **dict.fromkeys(("device_num", "group_size", "rank", "is_distributed", "run_distribute"), _DIST),
    "is_save_on_master": "only rank 0 ever saves here",
    **dict.fromkeys(("file_name", "file_format", "ckpt_file", "batch_size_export", "onnx_filename",
                     "air_filename", "result_path", "label_file"), _EXPORT),
    "checkpoint_path": "the .ckpt eval.py evaluates: `inception convert FILE.ckpt OUT.pt`, then `inception eval`",
    "ckpt_path": "a folder of MindSpore .ckpt files (eval.py); convert one with `inception convert`",
    **dict.fromkeys(("ckpt_save_dir", "save_checkpoint_path", "summary_dir"), _OUTDIR),
    "enable_profiling": "no profiler setting; `inception bench` measures speed",
    "ds_sink_mode": "MindSpore graph data-sink mode; no equivalent",
    "dataset_sink_mode": "MindSpore graph data-sink mode; no equivalent",
    "buffer_size": "MindSpore's shuffle buffer; ours shuffles the whole training set every epoch",
    "save_checkpoint": "ours always saves (last.pt every epoch, best.pt, periodic ones)",
    "save_checkpoint_epochs": "ours saves at every epoch end and every train.ckpt_interval steps; an interval in "
                              "epochs has no setting",
}
_MS_KEYS = set(_MS_SKIP) | {
    "lr", "lr_init", "lr_max", "lr_end", "lr_scheduler", "lr_epochs", "lr_gamma", "warmup_epochs", "eta_min", "T_max",
    "per_batch_size", "batch_size", "epoch_size", "max_epoch", "momentum", "weight_decay", "label_smooth_factor",
    "smooth_factor", "use_label_smooth", "label_smooth", "keep_checkpoint_max", "ckpt_interval", "loss_scale",
    "amp_level", "is_dynamic_loss_scale", "num_classes", "class_num", "image_height", "image_width", "image_size",
    "width", "height", "data_path", "train_data_path", "val_data_path", "dataset_path", "dataset_name", "ds_type",
    "pad_mode", "pre_trained", "pretrained", "resume", "start_epoch", "work_nums", "decay", "epsilon", "net_name",
    "save_checkpoint_steps", "seed", "num_parallel_workers",
}


@dataclass
class Translation:
    """``recipe``: our nested config; ``rows``: ``(vendor key, vendor value, our key, our value)``;
    ``untranslated``: ``(vendor key, value, reason)``; ``notes``: ``(vendor key, text)`` on
    translated keys (approximations, things to know)."""

    source: str
    path: str
    recipe: dict = field(default_factory=dict)
    rows: list[tuple[str, Any, str, Any]] = field(default_factory=list)
    untranslated: list[tuple[str, Any, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The translation as a readable, aligned table (what ``--config`` logs)."""
        left = [f"{k} = {_show(v)}" for k, v, _, _ in self.rows]
        width = max(map(len, left), default=0)
        out = [f"{self.path} is a {VENDORS[self.source]}; translated:"]
        out += [f"  {a:<{width}} -> {key} = {_show(v)}" for a, (_, _, key, v) in zip(left, self.rows)]
        if self.notes:
            out += ["notes:"] + [f"  {k}: {text}" for k, text in self.notes]
        if self.untranslated:
            out += ["not translated:"] + [f"  {k} = {_show(v)}: {why}" for k, v, why in self.untranslated]
        return out

    def to_yaml(self) -> str:
        """The recipe as YAML that ``--config`` reads back: a header saying where it came from,
        each key commented with the vendor keys it came from, the rest listed as comments."""
        lines = [f"# Translated by `inception convert-config` from {self.path} ({VENDORS[self.source]}).",
                 "# Train with: inception train --config THIS_FILE  (flags and --set KEY=VALUE still override)"]
        if self.notes:
            lines += ["# Notes:"] + [f"#   {k}: {text}" for k, text in self.notes]
        if self.untranslated:
            lines += ["# Not translated:"] + [f"#   {k} = {_show(v)}: {why}" for k, v, why in self.untranslated]
        origin: dict[str, list[str]] = {}
        for vkey, _, key, _ in self.rows:
            origin.setdefault(".".join(key.split(".")[:2]), []).append(vkey)
        for section in OURS:
            if section not in self.recipe:
                continue
            lines.append(f"{section}:")
            order = [f.name for f in fields(getattr(config.Config(), section))]
            for name, value in sorted(self.recipe[section].items(), key=lambda kv: order.index(kv[0])):
                text = yaml.safe_dump({name: value}, default_flow_style=True, width=1 << 30).strip()[1:-1]
                lines.append(f"  {text}  # {', '.join(dict.fromkeys(origin[f'{section}.{name}']))}")
        return "\n".join(lines) + "\n"


def _show(value: Any, limit: int = 70) -> str:
    text = yaml.safe_dump([value], default_flow_style=True, width=1 << 30).strip()[1:-1]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def detect(data: Any) -> str | None:
    """``'mindspore'``, ``'paddleclas'``, ``'inception'`` (our own sections) or None."""
    if not isinstance(data, dict):
        return None
    keys = set(map(str, data))
    if not keys or keys <= set(OURS):
        return "inception"
    if "Arch" in keys or len(keys & set(PADDLE_SECTIONS)) >= 2:
        return "paddleclas"
    if len(keys & _MS_KEYS) >= 3 and sum(isinstance(v, dict) for v in data.values()) <= len(keys) // 4:
        return "mindspore"
    return None


class _Builder:
    """Collects rows, skipped keys and notes, and remembers which vendor keys it has seen."""

    def __init__(self, source: str, path: str, data: dict) -> None:
        self.t = Translation(source, path)
        self.data, self.seen = data, set()

    def fail(self, key: str, value: Any, problem: str) -> UserError:
        return UserError(f"{VENDORS[self.t.source]} '{self.t.path}': {key} = {_show(value)} {problem}")

    def set(self, vkey: str, vvalue: Any, key: str, value: Any) -> None:
        try:   # check the value now, so an error names the vendor key; keep it as our type ('5e-4' -> 0.0005)
            cfg = config.Config()
            config.set_key(cfg, key, value, where="")
            value = config.lookup(cfg, key)
        except UserError as e:
            raise self.fail(vkey, vvalue, f"cannot be used: {e}") from None
        section, name, *inner = key.split(".")
        node = self.t.recipe.setdefault(section, {})
        for part in [name, *inner][:-1]:
            node = node.setdefault(part, {})
        node[([name, *inner])[-1]] = value
        self.t.rows.append((vkey, vvalue, key, value))
        self.seen.add(vkey)

    def skip(self, vkey: str, value: Any, reason: str) -> None:
        self.t.untranslated.append((vkey, value, reason))
        self.seen.add(vkey)

    def note(self, vkey: str, text: str) -> None:
        self.t.notes.append((vkey, text))

    def num(self, key: str, value: Any, kind=float) -> float:
        try:
            number = float(value.strip()) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, (int, float)) or math.isnan(number):
                raise ValueError
            if kind is int and not float(number).is_integer():
                raise ValueError
            return kind(number)
        except (ValueError, AttributeError):
            raise self.fail(key, value, f"is not {'an integer' if kind is int else 'a number'}") from None

    def finish(self) -> Translation:
        """List every vendor key not seen yet (and not under a seen one) as unknown."""
        for key, value in _leaves(self.data):
            cuts = [i for i, c in enumerate(key) if c in ".["]
            if key not in self.seen and not any(key[:i] in self.seen for i in cuts):
                self.skip(key, value, f"not a {VENDORS[self.t.source]} key this translator knows; no equivalent")
        return self.t


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``('DataLoader.Train.sampler.batch_size', 64)`` for every leaf; lists of mappings are walked
    (``Loss.Train[0].CELoss.epsilon``), other lists are leaves."""
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(node, list) and any(isinstance(v, dict) for v in node):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, f"{prefix}[{i}]")]
    return [(prefix, node)]


def _bool(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def _norm(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def translate(data: dict, source_path: str | Path, model: str | None = None, documents: int = 1) -> Translation:
    """Translate a vendor config (already read from YAML) into our recipe format. ``model``: our
    model name when the file does not say which model it trains; ``documents``: how many YAML
    documents the file held (MindSpore keeps help texts and choices in the 2nd and 3rd)."""
    kind = detect(data)
    if kind not in VENDORS:
        raise UserError(f"'{source_path}' is neither a MindSpore model-zoo config nor a PaddleClas config")
    b = _Builder(kind, str(source_path), data)
    (_mindspore if kind == "mindspore" else _paddleclas)(b, data, model)
    if documents > 1:
        b.skip(f"(YAML documents 2-{documents})", None, "MindSpore's help texts and choices for its own parser")
    return b.finish()


def _take(d: dict, *keys: str) -> tuple[str, Any] | None:
    """The first of ``keys`` present in ``d`` (the others present are the caller's to list)."""
    return next(((k, d[k]) for k in keys if k in d), None)


def _mindspore(b: _Builder, d: dict, hint: str | None) -> None:
    """A MindSpore model-zoo config, section by section; then every key not yet seen that
    MindSpore's scripts read and ours has no use for is listed with its reason."""
    ms_model = _mindspore_model(b, d, hint)
    ours = _mindspore_data(b, d)
    _mindspore_optimizer(b, d, ms_model, ours)
    _mindspore_schedule(b, d, ms_model, ours)
    _mindspore_training(b, d)
    _mindspore_precision_and_checkpoints(b, d, ms_model)
    for key, reason in _MS_SKIP.items():
        if key in d and key not in b.seen:
            b.skip(key, d[key], reason)


def _mindspore_model(b: _Builder, d: dict, hint: str | None) -> str | None:
    """model.*: the MindSpore model's name (None: from --model only)."""
    # The model: a name key, else the config's folder or file name (mindspore-ai/models keeps
    # one config folder per model), else --model.
    found = None
    for key in ("net_name", "net", "network", "model_name", "arch", "file_name"):
        if isinstance(d.get(key), str) and _norm(d[key]) in MODELS["mindspore"]:
            found = (key, d[key], _norm(d[key]))
            break
        if key in d and key != "file_name":
            raise b.fail(key, d[key], f"has no equivalent here; known: {', '.join(MODELS['mindspore'])}")
    path_name = _norm("/".join(Path(b.t.path).resolve().parts[-3:]))
    if found is None:
        found = next((("(file path)", b.t.path, n) for n in MODELS["mindspore"] if n in path_name), None)
    if found is None and hint:
        found = ("(--model)", hint, None)
    if found is None:
        raise UserError(f"{VENDORS['mindspore']} '{b.t.path}' does not say which model it trains; add "
                        f"net_name: googlenet (or inceptionv4) to it, or pass --model NAME")
    vkey, vname, ms_model = found
    name, options = MODELS["mindspore"][ms_model] if ms_model else (hint, {})
    b.set(vkey, vname, "model.name", name)
    if options:
        b.set(vkey, vname, "model.options", dict(options))
    if "pad_mode" in d:
        if str(d["pad_mode"]).lower() == "same":
            b.set("pad_mode", d["pad_mode"], "model.options.variant", "mindspore")
        else:
            b.skip("pad_mode", d["pad_mode"], "only pad_mode 'same' has an equivalent (model.options.variant: "
                   "mindspore, TensorFlow-style same padding)")
    return ms_model


def _mindspore_data(b: _Builder, d: dict) -> str:
    """data.*; returns our data.dataset."""
    ds = _take(d, "dataset_name", "ds_type")
    dataset = str(ds[1]).lower() if ds else "imagenet"
    if dataset not in ("cifar10", "imagenet", "imagenet2012"):
        raise b.fail(ds[0], ds[1], "is not a dataset this translator knows (cifar10, imagenet)")
    ours = "cifar10" if dataset == "cifar10" else "folder"
    b.set(*(ds or ("(default)", "imagenet")), "data.dataset", ours)
    for key in ("dataset_name", "ds_type"):
        if ds and key in d and key != ds[0]:
            b.skip(key, d[key], f"the dataset comes from {ds[0]}")
    where = _take(d, "train_data_path", "dataset_path", "data_dir", "data_path")
    if where:
        root, val = Path(str(where[1])), d.get("val_data_path")
        if ours == "folder" and where[0] == "train_data_path" and val and Path(str(val)).parent == root.parent:
            b.set(where[0], where[1], "data.data_dir", str(root.parent))
            b.set(where[0], where[1], "data.train_split", root.name)
            b.set("val_data_path", val, "data.val_split", Path(str(val)).name)
        else:
            b.set(where[0], where[1], "data.data_dir", str(root))
            if val is not None:
                same = Path(str(val)) == root or ours == "cifar10"
                b.skip("val_data_path", val, "the CIFAR-10 files hold both splits" if same else
                       "ours reads the validation split from data.data_dir (data.val_split)")
        for key in ("train_data_path", "dataset_path", "data_dir", "data_path"):
            if key in d and key != where[0]:
                b.skip(key, d[key], f"the data comes from {where[0]}")
    size = _take(d, "image_height", "height", "image_size")
    if size:
        value = size[1]
        if isinstance(value, str):   # image_size: '224,224'
            value = [v for v in re.split(r"[,\s]+", value) if v]
        if isinstance(value, (list, tuple)):
            h, w = (b.num(size[0], v, int) for v in (list(value) * 2)[:2])
        else:
            wkey = {"image_height": "image_width", "height": "width"}.get(size[0], "")
            h = b.num(size[0], value, int)
            w = b.num(wkey, d[wkey], int) if wkey in d else h
        if h != w:
            raise b.fail(size[0], size[1], f"with width {w}: ours trains on square images; make them equal")
        b.set(size[0], size[1], "data.image_size", h)
        for key in ("image_width", "width"):
            if key in d:
                b.set(key, d[key], "data.image_size", h)
        if ours == "cifar10" and h != 32:
            b.set("(train.py)", "RandomCrop 32 pad 4, then resize", "data.crop_padding", round(4 * h / 32))
            b.note("(train.py)", f"approximated: MindSpore crops 32x32 CIFAR images with 4 pixels of padding, then "
                                 f"resizes to {h}; ours resizes first, then crops with {round(4 * h / 32)} pixels")
    if ours == "cifar10":
        b.set("(train.py)", "RandomCrop + flip", "data.augment", "cifar")
    for key in ("num_classes", "class_num"):
        if key in d:
            b.set(key, d[key], "model.num_classes", d[key])
    workers = _take(d, "work_nums", "num_parallel_workers")
    if workers:
        b.set(*workers, "data.workers", workers[1])
        if workers[0] == "work_nums" and "num_parallel_workers" in d:
            b.skip("num_parallel_workers", d["num_parallel_workers"], "the data workers come from work_nums")
    return ours


def _mindspore_optimizer(b: _Builder, d: dict, ms_model: str | None, ours: str) -> None:
    """optim.*: the optimizer its train.py builds, and its keys."""
    optimizer = MINDSPORE_OPTIMIZER.get(ms_model or "", "sgd")
    b.set("(train.py)", {"sgd": "Momentum", "rmsprop": "RMSProp"}[optimizer], "optim.name", optimizer)
    for key, ours_key in (("momentum", "optim.momentum"), ("weight_decay", "optim.weight_decay")):
        if key in d:
            b.set(key, d[key], ours_key, d[key])
    for key, ours_key in (("decay", "optim.alpha"), ("epsilon", "optim.eps")):
        if key in d and optimizer == "rmsprop":
            b.set(key, d[key], ours_key, d[key])
        elif key in d:
            b.skip(key, d[key], f"an RMSProp setting; {ms_model}'s train.py uses Momentum")
    if not (ms_model == "googlenet" and ours == "cifar10"):   # googlenet's CIFAR-10 branch decays every parameter
        b.set("(train.py)", "no weight decay on BN and biases", "optim.no_decay_bn_bias", True)


def _mindspore_training(b: _Builder, d: dict) -> None:
    """train.*: epochs, the batch (per device there, per process here), label smoothing."""
    epochs = _take(d, "epoch_size", "max_epoch")
    if epochs:
        b.set(*epochs, "train.epochs", epochs[1])
    batch = _take(d, "per_batch_size", "batch_size")
    if batch:
        b.set(*batch, "train.batch_size", batch[1])
        b.note(batch[0], "per device in MindSpore and per process here: the global batch is this x the processes "
                         "(--nproc N); the published runs used 8 devices, so scale optim.lr with the global batch")
    smooth = _take(d, "label_smooth_factor", "smooth_factor")
    gate = _take(d, "use_label_smooth", "label_smooth")
    if smooth:
        on = gate is None or _bool(gate[1])
        b.set(*smooth, "train.label_smoothing", b.num(smooth[0], smooth[1]) if on else 0.0)
    if gate:
        b.skip(*gate, f"switches {smooth[0] if smooth else 'label smoothing'} on or off (applied above)")


def _mindspore_precision_and_checkpoints(b: _Builder, d: dict, ms_model: str | None) -> None:
    """train.precision and loss scaling (amp_level), checkpoints, the seed, pretrained weights."""
    precision = {"o0": "fp32", "o1": "fp16", "o2": "fp16", "o3": "fp16", "auto": "fp16"}
    level = str(d.get("amp_level", "O0")).lower()
    if "amp_level" in d:
        if level not in precision:
            raise b.fail("amp_level", d["amp_level"], "is not O0, O1, O2, O3 or auto")
        b.set("amp_level", d["amp_level"], "train.precision", precision[level])
        if level == "o3":
            b.note("amp_level", "approximated: O3 also runs BatchNorm in fp16; ours keeps BatchNorm and the loss in "
                                "fp32 (bf16 is the other choice on recent GPUs)")
    elif ms_model == "googlenet":
        b.note("(train.py)", "googlenet's train.py trains in fp16 (amp_level O2, hard-coded); this recipe trains "
                             "in fp32: add --set train.precision=fp16 (or bf16) on a GPU")
    dynamic = "is_dynamic_loss_scale" in d and _bool(d["is_dynamic_loss_scale"])
    if "loss_scale" in d:
        if precision.get(level) != "fp16":
            b.skip("loss_scale", d["loss_scale"], "loss scaling only matters in fp16; this recipe trains in fp32")
        else:
            b.set("loss_scale", d["loss_scale"], "train.loss_scale", d["loss_scale"])
    if "is_dynamic_loss_scale" in d:
        if dynamic and precision.get(level) == "fp16":
            b.set("is_dynamic_loss_scale", d["is_dynamic_loss_scale"], "train.dynamic_loss_scale", True)
        else:
            b.skip("is_dynamic_loss_scale", d["is_dynamic_loss_scale"],
                   "off: loss_scale is static" if not dynamic else "loss scaling only matters in fp16")
    if "keep_checkpoint_max" in d:
        b.set("keep_checkpoint_max", d["keep_checkpoint_max"], "train.keep_checkpoint_max", d["keep_checkpoint_max"])
    interval = _take(d, "ckpt_interval", "save_checkpoint_steps")
    if interval:
        b.set(*interval, "train.ckpt_interval", interval[1])
    if "seed" in d:
        b.set("seed", d["seed"], "train.seed", d["seed"])
    for key in ("pre_trained", "pretrained"):
        if key in d:
            if _set(d[key]) and isinstance(d[key], str):
                b.set(key, d[key], "model.pretrained", d[key])     # a MindSpore .ckpt: read by models/vendor.py
            else:
                b.skip(key, d[key], "not set")
    if "resume" in d:
        why = ("a MindSpore run cannot be continued here (its optimizer state differs); start from its weights "
               "with --pretrained FILE.ckpt")
        b.skip("resume", d["resume"], why if _set(d["resume"]) else "not set")
    if "start_epoch" in d:
        b.skip("start_epoch", d["start_epoch"], "runs start at epoch 1; --resume RUN continues one where it stopped")


def _set(value: Any) -> bool:
    return value not in (None, "", False) and str(value).strip().lower() not in ("false", "none", "null", "0", "")


def _mindspore_schedule(b: _Builder, d: dict, ms_model: str | None, dataset: str) -> None:
    """MindSpore writes each model's lr curve in its train.py; the keys say which one."""
    sched = str(d.get("lr_scheduler", "")).lower() or None
    base = _take(d, "lr", "lr_max", "lr_init")
    if base is None:
        raise UserError(f"{VENDORS['mindspore']} '{b.t.path}' has no learning rate (lr, lr_max or lr_init)")
    b.set(*base, "optim.lr", b.num(*base))
    if "lr_init" in d and base[0] == "lr_max":     # inceptionv4's generate_cosine_lr: lr_init -> lr_max -> lr_end
        b.set("lr_init", d["lr_init"], "schedule.warmup_start", b.num("lr_init", d["lr_init"]) / b.num(*base))
    elif "lr_init" in d and base[0] != "lr_init":
        b.skip("lr_init", d["lr_init"], f"the schedule starts from {base[0]} (warmup from 0)")
    if "lr_max" in d and base[0] != "lr_max":
        b.skip("lr_max", d["lr_max"], f"the peak lr is {base[0]}")
    cosine = ("cosine_annealing", "cosine_annealing_v2", "cosine_annealing_sample")
    if sched in ("exponential", "step"):
        if "lr_epochs" not in d:
            raise b.fail("lr_scheduler", d["lr_scheduler"], "needs lr_epochs (the epochs where the lr drops)")
        epochs = d["lr_epochs"]
        epochs = [v for v in re.split(r"[,\s]+", epochs) if v] if isinstance(epochs, str) else epochs
        b.set("lr_scheduler", d["lr_scheduler"], "schedule.name", "step")
        b.set("lr_epochs", d["lr_epochs"], "schedule.milestones", [b.num("lr_epochs", v) for v in epochs])
        b.set(*_take(d, "lr_gamma") or ("(default)", 0.1), "schedule.gamma", d.get("lr_gamma", 0.1))
    elif sched in cosine:
        b.set("lr_scheduler", d["lr_scheduler"], "schedule.name", "cosine")
        b.note("lr_scheduler", "approximated: MindSpore's cosine_annealing steps once per epoch and counts the "
                               "warmup epochs; ours decays every step over the epochs after warmup")
        if "T_max" in d:
            b.skip("T_max", d["T_max"], "approximated: ours runs one cosine over the whole training (train.epochs), "
                                        "MindSpore's a half period of T_max epochs")
    elif sched is None and "lr_max" in d:
        b.set("(train.py)", "warmup, then cosine to lr_end", "schedule.name", "cosine")
    elif sched is None and ms_model == "googlenet" and dataset == "cifar10":
        b.set("(train.py)", "lr x0.1 at 30/60/80% of the steps", "schedule.name", "multistep")
        b.set("(train.py)", "lr x0.1 at 30/60/80% of the steps", "schedule.fractions", [0.3, 0.6, 0.8])
        b.set("(train.py)", "lr x0.1 at 30/60/80% of the steps", "schedule.gamma", 0.1)
    elif sched is None:
        b.set("(none)", "no lr_scheduler", "schedule.name", "constant")
        b.note("schedule.name", "approximated: the file names no lr_scheduler (the model's train.py decides); "
                                "translated as a constant lr")
    else:
        raise b.fail("lr_scheduler", d["lr_scheduler"], "is not exponential, step or cosine_annealing")
    cos = sched in cosine or (sched is None and "lr_max" in d)
    end = _take(d, "eta_min", "lr_end")
    for key in ("lr_epochs", "lr_gamma") if sched not in ("exponential", "step") else ():
        if key in d:
            b.skip(key, d[key], f"not used with {f'lr_scheduler {sched}' if sched else 'this schedule'}")
    for key in ("eta_min", "lr_end", "T_max"):
        if key in d and key not in b.seen:
            if cos and end and key == end[0]:
                b.set(key, d[key], "schedule.eta_min", d[key])
            else:
                b.skip(key, d[key], f"the end lr is {end[0]}" if cos else
                       f"not used with {f'lr_scheduler {sched}' if sched else 'this schedule'}")
    if "warmup_epochs" in d:
        b.set("warmup_epochs", d["warmup_epochs"], "schedule.warmup_epochs", d["warmup_epochs"])


def _paddleclas(b: _Builder, d: dict, hint: str | None) -> None:
    g = d.get("Global") or {}
    arch = (d.get("Arch") or {}).get("name")
    if arch in MODELS["paddleclas"]:
        name, options = MODELS["paddleclas"][arch]
        b.set("Arch.name", arch, "model.name", name)
        if options:
            b.set("Arch.name", arch, "model.options", dict(options))
    elif arch is not None or not hint:
        raise b.fail("Arch.name", arch, f"has no equivalent here; known: {', '.join(MODELS['paddleclas'])}")
    else:
        b.set("(--model)", hint, "model.name", hint)
    for key in ("Global.class_num", "Arch.class_num"):
        section, name = key.split(".")
        if name in (d.get(section) or {}):
            b.set(key, d[section][name], "model.num_classes", d[section][name])
    if "pretrained" in (d.get("Arch") or {}):
        b.skip("Arch.pretrained", d["Arch"]["pretrained"], "PaddleClas downloads its weights for `pretrained: true`; "
                                                           "nothing downloads here: --pretrained FILE.pdparams")

    simple = {"epochs": "train.epochs", "print_batch_step": "train.log_interval", "eval_interval":
              "train.eval_interval", "seed": "train.seed", "use_visualdl": "train.tensorboard"}
    for key, ours in simple.items():
        if key in g:
            b.set(f"Global.{key}", g[key], ours, _bool(g[key]) if key == "use_visualdl" else g[key])
    if _bool(g.get("use_visualdl")):
        b.note("Global.use_visualdl", "approximated: TensorBoard (RUN/tensorboard) instead of VisualDL")
    if "eval_during_train" in g:
        if _bool(g["eval_during_train"]):
            b.skip("Global.eval_during_train", True, "ours always evaluates (every train.eval_interval epochs)")
        else:
            b.set("Global.eval_during_train", False, "train.eval_interval", g.get("epochs", 10))
            b.note("Global.eval_during_train", "approximated: ours still evaluates after the last epoch")
    if _set(g.get("pretrained_model")):
        path = str(g["pretrained_model"])
        b.set("Global.pretrained_model", path, "model.pretrained",
              path if path.endswith(".pdparams") else path + ".pdparams")      # Paddle adds the suffix itself
    elif "pretrained_model" in g:
        b.skip("Global.pretrained_model", g["pretrained_model"], "not set")
    skips = {"checkpoints": "a Paddle checkpoint cannot continue a run here; --resume RUN continues ours",
             "output_dir": _OUTDIR, "device": _DEVICE,
             "save_inference_dir": _EXPORT, "save_interval": "ours saves at every epoch end and every "
             "train.ckpt_interval steps; an interval in epochs has no setting"}
    for key, reason in skips.items():
        if key in g:
            b.skip(f"Global.{key}", g[key], reason if _set(g[key]) or key == "device" else "not set")

    _paddle_loss(b, d.get("Loss") or {})
    _paddle_optimizer(b, d.get("Optimizer") or {}, g)
    _paddle_data(b, d.get("DataLoader") or {}, g)
    amp = d.get("AMP")
    if isinstance(amp, dict):
        level = str(amp.get("level", "O1")).upper()
        on = _bool(amp.get("use_amp", True))
        for key in [k for k in ("level", "use_amp") if k in amp] or ["(section)"]:
            b.set(f"AMP.{key}" if key in amp else "AMP", amp.get(key, "present"), "train.precision",
                  "fp16" if on else "fp32")
        if on and level == "O2":
            b.note("AMP.level", "approximated: O2 keeps fp16 weights; ours autocasts with fp32 weights and BatchNorm")
        dynamic = _bool(amp.get("use_dynamic_loss_scaling", False))
        if "scale_loss" in amp:
            if on:
                b.set("AMP.scale_loss", amp["scale_loss"], "train.loss_scale", amp["scale_loss"])
            else:
                b.skip("AMP.scale_loss", amp["scale_loss"], "AMP is off")
        if "use_dynamic_loss_scaling" in amp:
            if on and dynamic:
                b.set("AMP.use_dynamic_loss_scaling", amp["use_dynamic_loss_scaling"], "train.dynamic_loss_scale",
                      True)
            else:
                b.skip("AMP.use_dynamic_loss_scaling", amp["use_dynamic_loss_scaling"],
                       "AMP is off" if not on else "off: AMP.scale_loss is the static scale")
    ema = d.get("EMA")
    if isinstance(ema, dict) and "decay" in ema:
        b.set("EMA.decay", ema["decay"], "train.ema_decay", ema["decay"])
    for section, reason in (("Metric", "ours always reports top-1 and top-5"),
                            ("Infer", "`inception infer` takes its preprocessing from the exported model")):
        if section in d:
            b.skip(section, d[section], reason)


def _paddle_loss(b: _Builder, loss: dict) -> None:
    for i, item in enumerate(loss.get("Train") or []):
        key = f"Loss.Train[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise b.fail(key, item, "must map one loss name to its settings")
        (name, args), = item.items()
        args = args or {}
        if i > 0 or name not in ("CELoss", "GoogLeNetLoss"):
            b.skip(f"{key}.{name}", args, "ours trains with cross-entropy (plus the aux heads' with aux_logits) only")
            continue
        if name == "GoogLeNetLoss":   # main + 0.3 x each of the two auxiliary heads
            b.set(f"{key}.{name}", args, "model.options.aux_logits", True)
            b.set(f"{key}.{name}", args, "model.aux_weight", 0.3)
        if "epsilon" in args:
            b.set(f"{key}.{name}.epsilon", args["epsilon"], "train.label_smoothing", args["epsilon"])
        if "weight" in args:
            b.skip(f"{key}.{name}.weight", args["weight"], "the loss weight is 1 here" if args["weight"] == 1 else
                   "approximated: no loss weight here; it scales the gradients like optim.lr does")
    if "Eval" in loss:
        b.skip("Loss.Eval", loss["Eval"], "ours evaluates with plain cross-entropy")


def _paddle_optimizer(b: _Builder, opt: dict, g: dict) -> None:
    names = {"Momentum": "sgd", "RMSProp": "rmsprop", "AdamW": "adamw"}
    if opt.get("name") not in names:
        raise b.fail("Optimizer.name", opt.get("name"), f"is not one of {', '.join(names)}")
    b.set("Optimizer.name", opt["name"], "optim.name", names[opt["name"]])
    if opt["name"] == "RMSProp":
        b.note("Optimizer.name", "approximated: ours is TF-style RMSProp (squared average starting at 1)")
    for key, ours in (("momentum", "optim.momentum"), ("rho", "optim.alpha"), ("epsilon", "optim.eps"),
                      ("use_nesterov", "optim.nesterov"), ("weight_decay", "optim.weight_decay"),
                      ("one_dim_param_no_weight_decay", "optim.no_decay_bn_bias")):
        if key in opt:
            b.set(f"Optimizer.{key}", opt[key], ours, _bool(opt[key]) if ours in (
                "optim.nesterov", "optim.no_decay_bn_bias") else opt[key])
    if "beta1" in opt or "beta2" in opt:
        betas = [opt.get("beta1", 0.9), opt.get("beta2", 0.999)]
        for key in ("beta1", "beta2"):
            if key in opt:
                b.set(f"Optimizer.{key}", opt[key], "optim.betas", betas)
    reg = opt.get("regularizer")
    if isinstance(reg, dict):
        if str(reg.get("name", "L2")).upper() != "L2":
            raise b.fail("Optimizer.regularizer.name", reg.get("name"), "is not L2 (the only weight decay here)")
        b.skip("Optimizer.regularizer.name", reg.get("name"), "L2 is optim.weight_decay")
        b.set("Optimizer.regularizer.coeff", reg.get("coeff"), "optim.weight_decay", reg.get("coeff"))
    lr = opt.get("lr")
    if not isinstance(lr, dict):
        raise b.fail("Optimizer.lr", lr, "must be a mapping with a name (Cosine, Piecewise, Step, ...)")
    name, k = lr.get("name"), "Optimizer.lr"
    if name == "Piecewise":
        values = lr.get("values") or []
        if len(values) < 2 or not isinstance(lr.get("decay_epochs"), list):
            raise b.fail(f"{k}.values", values, "needs at least two values and decay_epochs")
        ratios = [b.num(f"{k}.values", v1) / b.num(f"{k}.values", v0) for v0, v1 in zip(values, values[1:])]
        b.set(f"{k}.name", name, "schedule.name", "step")
        b.set(f"{k}.values", values, "optim.lr", values[0])
        b.set(f"{k}.values", values, "schedule.gamma", ratios[0])
        b.set(f"{k}.decay_epochs", lr["decay_epochs"], "schedule.milestones", lr["decay_epochs"])
        if any(not math.isclose(r, ratios[0], rel_tol=1e-6) for r in ratios):
            b.note(f"{k}.values", f"approximated: ours multiplies by one factor ({ratios[0]:g}) at each milestone")
    elif name in ("Cosine", "Step", "MultiStepDecay", "Constant"):
        b.set(f"{k}.learning_rate", lr.get("learning_rate"), "optim.lr", lr.get("learning_rate"))
        ours = {"Cosine": "cosine", "Step": "step", "MultiStepDecay": "step", "Constant": "constant"}[name]
        b.set(f"{k}.name", name, "schedule.name", ours)
        if name == "Cosine" and "eta_min" in lr:
            b.set(f"{k}.eta_min", lr["eta_min"], "schedule.eta_min", lr["eta_min"])
        if name in ("Step", "MultiStepDecay"):
            b.set(f"{k}.gamma", lr.get("gamma", 0.1), "schedule.gamma", lr.get("gamma", 0.1))
        if name == "Step":
            step, epochs = b.num(f"{k}.step_size", lr.get("step_size")), b.num("Global.epochs", g.get("epochs", 0))
            b.set(f"{k}.step_size", lr["step_size"], "schedule.milestones",
                  [step * i for i in range(1, math.ceil(epochs / step))] or [step])
        if name == "MultiStepDecay":
            b.set(f"{k}.milestones", lr.get("milestones"), "schedule.milestones", lr.get("milestones"))
    else:
        raise b.fail(f"{k}.name", name, "is not Cosine, Piecewise, Step, MultiStepDecay or Constant")
    if "warmup_epoch" in lr:
        b.set(f"{k}.warmup_epoch", lr["warmup_epoch"], "schedule.warmup_epochs", lr["warmup_epoch"])
    if "warmup_start_lr" in lr:
        peak = b.num("optim.lr", b.t.recipe["optim"]["lr"])
        b.set(f"{k}.warmup_start_lr", lr["warmup_start_lr"], "schedule.warmup_start",
              b.num(f"{k}.warmup_start_lr", lr["warmup_start_lr"]) / peak)
    if _bool(lr.get("by_epoch", False)):
        b.skip(f"{k}.by_epoch", lr["by_epoch"], "approximated: ours changes the lr every step, Paddle every epoch")
    elif "by_epoch" in lr:
        b.skip(f"{k}.by_epoch", lr["by_epoch"], "ours changes the lr every step too")
    if "no_weight_decay_name" in opt:
        b.skip("Optimizer.no_weight_decay_name", opt["no_weight_decay_name"], "ours can spare BatchNorm and biases "
               "only: optim.no_decay_bn_bias")


def _paddle_data(b: _Builder, loader: dict, g: dict) -> None:
    train, evals = loader.get("Train") or {}, loader.get("Eval") or {}
    ds = train.get("dataset") or {}
    if ds.get("name") != "ImageNetDataset":
        raise b.fail("DataLoader.Train.dataset.name", ds.get("name"), "is not ImageNetDataset (list files), the "
                                                                      "only PaddleClas dataset translated")
    b.set("DataLoader.Train.dataset.name", ds["name"], "data.dataset", "list")
    k = "DataLoader.Train.dataset"
    if "image_root" in ds:
        b.set(f"{k}.image_root", ds["image_root"], "data.data_dir", str(ds["image_root"]))
    if "cls_label_path" in ds:
        b.set(f"{k}.cls_label_path", ds["cls_label_path"], "data.train_list", str(ds["cls_label_path"]))
    size = None
    for i, op in enumerate(ds.get("transform_ops") or []):
        size = _paddle_op(b, f"{k}.transform_ops[{i}]", op) or size
    for i, op in enumerate(ds.get("batch_transform_ops") or []):
        _paddle_op(b, f"{k}.batch_transform_ops[{i}]", op)
    shape = g.get("image_shape")
    if isinstance(shape, list) and len(shape) == 3:
        if size is None or size == shape[1] == shape[2]:
            b.set("Global.image_shape", shape, "data.image_size", shape[1])
        else:
            b.skip("Global.image_shape", shape, "the export shape; training uses RandCropImage.size")
    for part, value in ((train, "DataLoader.Train"), (evals, "DataLoader.Eval")):
        for key, item in (part.get("sampler") or {}).items():
            vk = f"{value}.sampler.{key}"
            if key == "batch_size" and part is train:
                b.set(vk, item, "train.batch_size", item)
                b.note(vk, "per GPU in PaddleClas and per process here: the global batch is this x the processes "
                           "(--nproc N); scale optim.lr with the global batch")
            else:
                b.skip(vk, item, {"batch_size": "ours evaluates with train.batch_size",
                                  "name": "under torchrun each process reads its own shard",
                                  "drop_last": "ours drops the last partial training batch, never an eval one",
                                  "shuffle": "ours shuffles the training set every epoch, never the eval set"
                                  }.get(key, "no equivalent"))
        for key, item in (part.get("loader") or {}).items():
            vk = f"{value}.loader.{key}"
            if key == "num_workers" and part is train:
                b.set(vk, item, "data.workers", item)
            else:
                b.skip(vk, item, "ours uses data.workers for both" if key == "num_workers" else "no equivalent")
    eds = evals.get("dataset") or {}
    ke = "DataLoader.Eval.dataset"
    if "cls_label_path" in eds:
        b.set(f"{ke}.cls_label_path", eds["cls_label_path"], "data.val_list", str(eds["cls_label_path"]))
    if "name" in eds:
        b.skip(f"{ke}.name", eds["name"], "evaluated like training data (data.dataset)")
    if "image_root" in eds:
        same = str(eds["image_root"]) == str(ds.get("image_root"))
        b.skip(f"{ke}.image_root", eds["image_root"], "the same as training's" if same else
               "ours reads both lists relative to one data.data_dir; move the files or use absolute list paths")
    resize = crop = None
    for i, op in enumerate(eds.get("transform_ops") or []):
        name, args = _op(b, f"{ke}.transform_ops[{i}]", op)
        vk = f"{ke}.transform_ops[{i}].{name}"
        if name == "ResizeImage" and "resize_short" in args:
            resize = (vk, args)
            for extra in set(args) - {"resize_short"}:
                b.skip(f"{vk}.{extra}", args[extra], "ours resizes bilinearly (the model's interpolation)")
        elif name == "CropImage" and "size" in args:
            crop = (vk, args)
        else:
            b.skip(vk, args, _PADDLE_OPS.get(name, "no equivalent transform here"))
    if resize and crop:
        r, c = b.num(f"{resize[0]}.resize_short", resize[1]["resize_short"]), b.num(f"{crop[0]}.size",
                                                                                     crop[1]["size"])
        b.set(f"{resize[0]}.resize_short", resize[1]["resize_short"], "data.crop_pct", round(c / r, 6))
        b.set(f"{crop[0]}.size", crop[1]["size"], "data.crop_pct", round(c / r, 6))
        if size is not None and c != size:
            b.note(f"{crop[0]}.size", f"approximated: ours evaluates at data.image_size ({size}), not {c}")
    else:
        for item in (resize, crop):
            if item:
                b.skip(item[0], item[1], "needs both ResizeImage.resize_short and CropImage.size (data.crop_pct)")


def _op(b: _Builder, key: str, op: Any) -> tuple[str, dict]:
    if isinstance(op, str):
        return op, {}
    if not isinstance(op, dict) or len(op) != 1:
        raise b.fail(key, op, "must map one operator name to its settings")
    (name, args), = op.items()
    return name, args or {}


# Why a PaddleClas transform is not translated.
_PADDLE_OPS = {
    "DecodeImage": "ours decodes every image to RGB", "ToCHWImage": "no setting needed",
    "NormalizeImage": "ours normalises with the model's mean/std (`inception models NAME`)",
    "AutoAugment": "not translated: set data.auto_augment: autoaugment",
    "RandAugment": "not translated (its magnitude scale differs): set data.auto_augment: randaugment, "
                   "data.randaugment_ops, data.randaugment_magnitude (0-30)",
    "RandomErasing": "not translated (its area and colour settings differ): set data.random_erasing (probability)",
}


def _paddle_op(b: _Builder, key: str, op: Any) -> int | None:
    """One training transform; returns the crop size when it is RandCropImage."""
    name, args = _op(b, key, op)
    vk = f"{key}.{name}"
    size = None
    if name == "RandCropImage":
        size = b.num(f"{vk}.size", args.get("size"), int)
        b.set(f"{vk}.size", args.get("size"), "data.image_size", size)
        b.set(f"{vk}.size", args.get("size"), "data.augment", "imagenet")
        if "scale" in args:
            b.set(f"{vk}.scale", args["scale"], "data.crop_scale", args["scale"])
        for extra in set(args) - {"size", "scale"}:
            b.skip(f"{vk}.{extra}", args[extra], "ours uses RandomResizedCrop's aspect range 3/4-4/3, bilinear"
                   if extra in ("ratio", "interpolation", "backend") else "no equivalent")
    elif name == "RandFlipImage":
        code = args.get("flip_code", 1)
        if code == 1:
            b.set(f"{vk}.flip_code" if "flip_code" in args else vk, code, "data.hflip", True)
        else:
            b.skip(vk, args, "only horizontal flips (flip_code 1) here")
    elif name in ("MixupOperator", "CutmixOperator"):
        key_ours = "data.mixup_alpha" if name == "MixupOperator" else "data.cutmix_alpha"
        b.set(f"{vk}.alpha", args.get("alpha", 1.0), key_ours, args.get("alpha", 1.0))
    else:
        b.skip(vk, args, _PADDLE_OPS.get(name, "no equivalent transform here"))
    return size


def read_recipe(path: str | Path, model: str | None = None) -> dict:
    """The nested mapping of a recipe file: ours as it is, a MindSpore or PaddleClas config
    translated, with the translation logged as one table (each vendor key = value -> our key =
    value, then notes on approximations and the keys not translated, with the reason).
    ``model``: our model name, for a vendor file that does not say which model it trains."""
    docs = read_documents(path)
    data = docs[0] if docs and docs[0] is not None else {}
    if detect(data) in VENDORS:
        translation = translate(data, path, model=model, documents=len(docs))
        logging.getLogger("inception").info("\n".join(translation.lines()))   # one record: the whole table
        return translation.recipe
    return config.read_recipe(path)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> config.Config:
    """:func:`inception.config.load_config` for any recipe file: ours, or a MindSpore or
    PaddleClas config, translated (what ``inception train --config`` reads)."""
    overrides = overrides or {}
    recipe = read_recipe(path, model=overrides.get("model.name")) if path is not None else None
    return config.load_config(path, overrides, recipe=recipe)


def convert_file(src: str | Path, model: str | None = None) -> Translation:
    """Read and translate a vendor config file (``inception convert-config``)."""
    docs = read_documents(src) or [None]
    kind = detect(docs[0])
    if kind == "inception":
        raise UserError(f"'{src}' is already a recipe of ours; use it with --config as it is")
    if kind not in VENDORS:
        raise UserError(f"'{src}' is neither a MindSpore model-zoo config (flat keys such as lr_init, epoch_size) "
                        "nor a PaddleClas config (sections Global, Arch, Optimizer, DataLoader)")
    return translate(docs[0], src, model=model, documents=len(docs))

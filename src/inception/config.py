"""Run configuration: one dataclass per section, loaded from YAML, overridden from the
command line, validated, and saved with every run.

Every key below is read by the code; an unknown key or a bad value is a one-line
:class:`~inception.errors.UserError` naming the key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError
from .utils import atomic_write_text


def _f(default: Any, help: str, **limits) -> Any:
    """A config field with documentation and optional limits (ge, gt, le, lt)."""
    if isinstance(default, (list, dict)):
        kw = {"default_factory": (lambda d=default: type(d)(d))}
    else:
        kw = {"default": default}
    return field(metadata={"help": help, **limits}, **kw)


@dataclass
class ModelCfg:
    name: str = _f("googlenet", "model name from `inception models`")
    num_classes: int | None = _f(None, "classifier outputs; default: the number of classes in the data", ge=1)
    options: dict = _f({}, "model options passed to create_model, e.g. {aux_logits: true, dropout: 0.3}")
    pretrained: str | None = _f(None, "weights to start from (.pth/.pt/.safetensors, ours, torchvision or timm)")
    aux_weight: float = _f(0.3, "weight of each auxiliary head's loss (models built with aux_logits)", ge=0)
    freeze_backbone: bool = _f(False, "fine-tuning: train only the classifier (and aux heads); the backbone's "
                                      "weights and BatchNorm statistics stay as loaded")
    backbone_lr_scale: float = _f(1.0, "fine-tuning: the backbone's learning rate is optim.lr x this (0.1: a "
                                       "gentler update of pretrained features)", ge=0)
    freeze_bn: bool = _f(False, "keep every BatchNorm's running statistics as loaded (BatchNorm layers stay in "
                                "eval mode while training; useful with small batches)")


@dataclass
class DataCfg:
    dataset: Literal["digits", "cifar10", "cifar100", "folder", "list", "synthetic"] = _f(
        "digits", "digits (built in), cifar10, cifar100, folder (root/train/<class>/...), list (PaddleClas list "
        "files), synthetic (random images made in memory: the training loop's speed with no input pipeline)")
    data_dir: str | None = _f(None, "dataset root, or a .tar/.tar.gz of <split>/<class>/ folders read without "
                                    "unpacking (folder, cifar10/100); not needed for digits")
    train_split: str = _f("train", "sub-folder (folder, cifar image folders) used for training")
    val_split: str = _f("val", "sub-folder used for validation; cifar binary/pickle files use their test batch")
    train_list: str | None = _f(None, "list dataset: training list file (default <data_dir>/train_list.txt)")
    val_list: str | None = _f(None, "list dataset: validation list file (default <data_dir>/val_list.txt)")
    image_size: int | None = _f(None, "training/eval resolution; default: the model's input size", ge=1)
    eval_image_size: int | None = _f(
        None, "evaluation resolution when it differs from training's (torchvision's --val-crop-size, timm's "
        "test_input_size): a network trained on random crops often scores higher a little above its training size; "
        "choose it on data.holdout, never on val; default: image_size", ge=1)
    crop_pct: float | None = _f(None, "eval center crop: resize the short side to eval size / crop_pct, then crop "
                                      "the eval size (1.0 = whole image); default: the model's crop fraction (see "
                                      "`inception models`)", gt=0, le=1)
    augment: Literal["auto", "imagenet", "cifar", "none"] = _f(
        "auto", "train augmentation: imagenet (RandomResizedCrop), cifar (pad + random crop), none; "
        "auto picks cifar for cifar10/cifar100/digits and imagenet otherwise")
    hflip: bool | None = _f(None, "random horizontal flip in training; default on, off for digits")
    color_jitter: float = _f(0.0, "brightness/contrast/saturation jitter strength (0 = off)", ge=0)
    crop_scale: list[float] = _f([0.08, 1.0], "RandomResizedCrop area range")
    crop_padding: int = _f(4, "cifar augmentation: zero padding before the random crop", ge=0)
    workers: int = _f(2, "DataLoader worker processes (0 = load in the main process)", ge=0)
    pipeline: Literal["fast", "torchvision"] = _f(
        "fast", "image files (folder, list): fast decodes, crops and resizes each image in one step (reduced-size "
        "JPEG decoding, uint8 until the device, normalized there); torchvision runs the plain PIL + transforms "
        "presets. Both draw the same crops and flips")
    gpu_decode: bool = _f(
        False, "fast pipeline: decode JPEGs on the training device (torchvision.io.decode_jpeg, nvJPEG on CUDA) in "
        "batches; workers only read files and draw the crops. PNG, CMYK and other files are still decoded by the "
        "workers")
    bad_image: Literal["skip", "error"] = _f(
        "skip", "an image that cannot be decoded (corrupt, empty, not an image, too large): skip it (counted, "
        "logged and listed in skipped_images.txt) or stop with an error naming it")
    device_resident: bool | None = _f(
        None, "hold an in-memory dataset (digits, CIFAR files) on the device as uint8 and augment it there in "
        "batches, with no DataLoader; default: on for those datasets with the cifar or none preset and no "
        "auto_augment")
    auto_augment: Literal["none", "randaugment", "trivialaugment", "autoaugment"] = _f(
        "none", "per-sample augmentation policy (torchvision v2) after the crop and flip, on the uint8 crop, in the "
        "DataLoader workers: randaugment (RandAugment: randaugment_ops ops at randaugment_magnitude), trivialaugment "
        "(TrivialAugmentWide), autoaugment (AutoAugment, ImageNet policy); in-memory data then leaves the device")
    randaugment_magnitude: int = _f(9, "randaugment: the magnitude of every op (0-30)", ge=0, le=30)
    randaugment_ops: int = _f(2, "randaugment: ops applied to each image", ge=1)
    random_erasing: float = _f(
        0.0, "probability of erasing a random rectangle of each train image (torchvision's RandomErasing: 2-33% of "
        "the area, aspect 0.3-3.3, set to 0 after normalization, i.e. the mean colour); on the device, per batch",
        ge=0, le=1)
    mixup_alpha: float = _f(
        0.0, "MixUp (torchvision v2) of whole train batches on the device, lambda ~ Beta(alpha, alpha); targets become "
        "soft, train.label_smoothing applies to them, train top-1 counts the argmax of the mixed target (0 = off)",
        ge=0)
    cutmix_alpha: float = _f(
        0.0, "CutMix (torchvision v2) of whole train batches on the device, as mixup_alpha; with both set, each "
        "batch gets one of the two at random (0 = off)", ge=0)
    mix_prob: float = _f(1.0, "probability that a train batch is mixed (with mixup_alpha or cutmix_alpha set)",
                         ge=0, le=1)
    synthetic_images: int = _f(2560, "synthetic: train images (val: a tenth of them)", ge=1)
    synthetic_classes: int = _f(10, "synthetic: classes", ge=2)
    holdout: float = _f(0.0, "fraction of the train split held out to validate on instead of data.val_split "
                             "(stratified by class, fixed by data.holdout_seed whatever train.seed is): tune a "
                             "recipe on it, then report on val with 0 (0 = off: validate on data.val_split)",
                        ge=0, le=0.5)
    holdout_seed: int = _f(0, "which images data.holdout holds out (another seed: another fold)", ge=0)
    progressive_sizes: list[int] = _f(
        [], "progressive resizing: train image sizes in equal shares of train.epochs, e.g. [96, 112, 128] over 6 "
        "epochs trains 2 at 96, 2 at 112, then 2 at 128 (the size is a function of the epoch, so resume is "
        "exact); eval stays at image_size; [] = off")


@dataclass
class OptimCfg:
    name: Literal["sgd", "rmsprop", "adamw"] = _f("sgd", "optimizer")
    lr: float = _f(0.1, "peak learning rate (after warmup)", gt=0)
    momentum: float = _f(0.9, "sgd / rmsprop momentum", ge=0, lt=1)
    nesterov: bool = _f(False, "sgd: Nesterov momentum")
    weight_decay: float = _f(1e-4, "L2 weight decay (decoupled for adamw)", ge=0)
    no_decay_bn_bias: bool = _f(False, "exclude BatchNorm parameters and biases from weight decay")
    alpha: float = _f(0.9, "rmsprop: decay of the squared-gradient average", gt=0, lt=1)
    eps: float = _f(1e-8, "rmsprop / adamw epsilon (the seeds' TF-style rmsprop uses 1.0)", gt=0)
    betas: list[float] = _f([0.9, 0.999], "adamw betas")
    grad_clip: float | None = _f(None, "clip the global gradient norm to this value", gt=0)


@dataclass
class ScheduleCfg:
    name: Literal["constant", "step", "multistep", "cosine", "onecycle", "flat_cosine"] = _f(
        "cosine", "constant; step (lr x gamma at each epoch in `milestones`); multistep (lr x gamma at "
        "each fraction of training in `fractions`); cosine (to eta_min); onecycle (torch's OneCycleLR: cosine "
        "rise from lr / div_factor to lr over pct_start of training, cosine fall to lr / (div_factor x "
        "final_div_factor)); flat_cosine (fast.ai's fit_flat_cos: lr for flat_fraction of training, then cosine to "
        "eta_min)")
    milestones: list[float] = _f([], "step: epochs at which the lr is multiplied by gamma")
    fractions: list[float] = _f([], "multistep: fractions of training at which the lr is multiplied by gamma")
    gamma: float = _f(0.1, "step / multistep factor", gt=0)
    eta_min: float = _f(0.0, "cosine / flat_cosine: final learning rate", ge=0)
    warmup_epochs: float = _f(0.0, "linear warmup length in epochs (may be fractional)", ge=0)
    warmup_start: float = _f(0.0, "warmup starts at lr x warmup_start", ge=0, le=1)
    pct_start: float = _f(0.3, "onecycle: fraction of training spent rising to the peak lr", gt=0, lt=1)
    div_factor: float = _f(25.0, "onecycle: the lr starts at lr / div_factor", ge=1)
    final_div_factor: float = _f(1e4, "onecycle: the lr ends at lr / (div_factor x final_div_factor)", ge=1)
    flat_fraction: float = _f(0.75, "flat_cosine: fraction of training (after any warmup) held at the peak lr "
                                    "before the cosine decay", ge=0, lt=1)


CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = typing.get_args(CompileMode)   # torch.compile's modes


@dataclass
class TrainCfg:
    epochs: int = _f(10, "training epochs", ge=1)
    batch_size: int = _f(128, "images per step", ge=1)
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy loss", ge=0, lt=1)
    log_interval: int = _f(50, "log loss, lr and img/s every N steps", ge=1)
    ckpt_interval: int = _f(0, "also save a checkpoint every N steps (0 = only at epoch ends)", ge=0)
    keep_checkpoint_max: int = _f(5, "periodic checkpoints kept (last and best are kept besides)", ge=1)
    eval_interval: int = _f(1, "evaluate every N epochs (and always after the last)", ge=1)
    seed: int = _f(0, "random seed; a CPU run with the same seed repeats exactly")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N, mps, npu or npu:N (Ascend NPUs: needs torch_npu)")
    output_dir: str | None = _f(None, "run directory; default runs/<model>-<dataset>-<time>")
    threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)", ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "fp32; bf16 or fp16 autocast (BatchNorm and the loss stay fp32); auto: bf16 on CPUs with native bf16 "
        "(AVX512-BF16, AMX) and on GPUs with it (Ampere and later), fp32 elsewhere (the run's log names the choice)")
    loss_scale: float | None = _f(None, "fp16: a static loss scale (the seeds' 1024), or with train.dynamic_loss_scale "
                                        "the dynamic scale's start; default: dynamic scaling from 65536", gt=0)
    dynamic_loss_scale: bool = _f(False, "fp16: scale dynamically (halved on overflow, doubled after 2000 good "
                                         "steps) from train.loss_scale, as PaddleClas's use_dynamic_loss_scaling "
                                         "and MindSpore's is_dynamic_loss_scale do")
    channels_last: bool | None = _f(None, "NHWC memory format; default (null): on for CUDA and for x86 CPUs with "
                                          "AVX-512, where it is measured faster")
    compile: bool | None = _f(
        None, "torch.compile the training step (forward and loss in one graph, backward traced with it); a batch of "
        "another shape runs eagerly; default (null): on for CUDA, off elsewhere (see `inception bench model "
        "--compile`)")
    compile_mode: CompileMode = _f(
        "default", "torch.compile mode of the training step: reduce-overhead replays it as CUDA graphs; max-autotune "
        "also tunes kernels (long compilation)")
    sync_bn: bool = _f(False, "distributed: synchronise BatchNorm statistics across processes")
    time_limit: str | None = _f(None, "stop cleanly after this wall time (3600, 90m, 1h30m, 2h): checkpoint, "
                                      "evaluate, print the epoch reached, loss and top-1/top-5; resume to go on")
    tensorboard: bool = _f(False, "also log the metrics to RUN/tensorboard (needs `pip install tensorboard`)")
    max_bad_steps: int = _f(
        10, "stop after this many consecutive steps with a NaN/Inf loss (each one is skipped, not applied)", ge=1)
    tta_flip: bool = _f(
        False, "evaluate each image and its horizontal mirror and average the logits (test-time augmentation; twice "
        "the eval compute); `inception eval` does the same unless told --no-tta-flip")
    ema_decay: float | None = _f(
        None, "keep an exponential moving average of the weights and BatchNorm statistics, updated after every "
        "optimizer step with this decay (e.g. 0.999; null = off); evaluated beside the model (ema_val_* in "
        "metrics.jsonl) and checkpointed; best.pt, eval and export use whichever of the two scored higher", gt=0, lt=1)
    ema_warmup: bool = _f(
        False, "EMA decay warmup (timm's): the decay at update n is min(ema_decay, (1 + n) / (10 + n)), so a short "
        "run soon forgets its first, random weights")


@dataclass
class Config:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    train: TrainCfg = field(default_factory=TrainCfg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# Keys that only apply for some values of another key: key -> (that key, the values it applies to).
# --print-config marks the others "not used" (a selector inside a mapping, model.options.X, may be unset).
APPLIES_WHEN: dict[str, tuple[str, tuple]] = {
    "model.aux_weight": ("model.options.aux_logits", (True,)),
    "data.data_dir": ("data.dataset", ("cifar10", "cifar100", "folder", "list")),
    "data.train_list": ("data.dataset", ("list",)),
    "data.val_list": ("data.dataset", ("list",)),
    "data.gpu_decode": ("data.pipeline", ("fast",)),
    "data.synthetic_images": ("data.dataset", ("synthetic",)),
    "data.synthetic_classes": ("data.dataset", ("synthetic",)),
    "data.randaugment_magnitude": ("data.auto_augment", ("randaugment",)),
    "data.randaugment_ops": ("data.auto_augment", ("randaugment",)),
    "optim.momentum": ("optim.name", ("sgd", "rmsprop")),
    "optim.nesterov": ("optim.name", ("sgd",)),
    "optim.alpha": ("optim.name", ("rmsprop",)),
    "optim.eps": ("optim.name", ("rmsprop", "adamw")),
    "optim.betas": ("optim.name", ("adamw",)),
    "schedule.milestones": ("schedule.name", ("step",)),
    "schedule.fractions": ("schedule.name", ("multistep",)),
    "schedule.gamma": ("schedule.name", ("step", "multistep")),
    "schedule.eta_min": ("schedule.name", ("cosine", "flat_cosine")),
    "schedule.warmup_epochs": ("schedule.name", ("constant", "step", "multistep", "cosine", "flat_cosine")),
    "schedule.warmup_start": ("schedule.name", ("constant", "step", "multistep", "cosine", "flat_cosine")),
    "schedule.pct_start": ("schedule.name", ("onecycle",)),
    "schedule.div_factor": ("schedule.name", ("onecycle",)),
    "schedule.final_div_factor": ("schedule.name", ("onecycle",)),
    "schedule.flat_fraction": ("schedule.name", ("flat_cosine",)),
    "train.loss_scale": ("train.precision", ("fp16",)),
    "train.dynamic_loss_scale": ("train.precision", ("fp16",)),
    "train.compile_mode": ("train.compile", (True, None)),
}

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_CLASSES = {"model": ModelCfg, "data": DataCfg, "optim": OptimCfg, "schedule": ScheduleCfg, "train": TrainCfg}


def all_keys() -> list[str]:
    """Every valid dotted key, e.g. ``optim.lr``."""
    return [f"{s}.{f.name}" for s, cls in _SECTION_CLASSES.items() for f in dataclasses.fields(cls)]


def _unknown(key: str, where: str, choices: list[str]) -> UserError:
    close = []
    if "." in key:  # a key under the wrong section: match on the last part first
        tail = key.rsplit(".", 1)[1]
        close = [c for c in choices if c.endswith("." + tail)][:1]
    close = close or difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(choices)}"
    return UserError(f"unknown config key '{key}'{where}; {hint}")


def _coerce(key: str, value: Any, tp: Any, meta: dict) -> Any:
    """Check ``value`` against the annotation ``tp`` and the field limits; return it converted."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], meta)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(map(str, args))}"
            raise UserError(f"config key '{key}' = {value!r} is not valid; {hint}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise UserError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, args[0], {}) for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}")
        return _yaml12_floats(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise UserError(f"config key '{key}' must be an integer, got {value!r}")
        value = int(value)
    elif tp is float:
        value = _to_float(key, value)
    elif tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"config key '{key}' must be a string, got {value!r}")
        value = str(value)
    for op, test, words in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        if op in meta and not test(value, meta[op]):
            raise UserError(f"config key '{key}' = {value!r} is out of range; it must be {words} {meta[op]}")
    return value


def _to_float(key: str, value: Any) -> float:
    """A number, or a string in any float spelling (``1e-4``, ``5E3``, ``.5``, ``1_000``, ``inf``): YAML 1.1,
    which PyYAML reads, takes ``1e-4`` (no dot) for a string."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # value != value: NaN
        raise UserError(f"config key '{key}' must be a number, got {value!r}; write e.g. 0.1, 1e-4 or 5e3")
    return float(value)


_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


def _yaml12_floats(value: Any) -> Any:
    """Free-form mappings (model.options): strings such as ``1e-4`` that YAML 1.1 leaves as text -> floats."""
    if isinstance(value, dict):
        return {k: _yaml12_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml12_floats(v) for v in value]
    return float(value) if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()) else value


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def choices(key: str) -> tuple[str, ...]:
    """The values a choice key (``schedule.name``) takes, from the type the config validates
    against: help texts list them from here, so they never drift from what is accepted."""
    section, _, name = key.partition(".")
    return typing.get_args(_hints(_SECTION_CLASSES[section])[name])


def apply(cfg: Config, data: dict, where: str = "") -> Config:
    """Apply a nested mapping ``{section: {key: value}}`` to ``cfg`` (validated)."""
    if not isinstance(data, dict):
        raise UserError(f"config{where} must be a mapping of sections ({', '.join(SECTIONS)})")
    for section, values in data.items():
        if section not in _SECTION_CLASSES:
            raise _unknown(str(section), where, list(_SECTION_CLASSES))
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"config section '{section}'{where} must be a mapping of keys")
        obj = getattr(cfg, section)
        hints = _hints(type(obj))
        fields = {f.name: f for f in dataclasses.fields(obj)}
        for key, value in values.items():
            if key not in fields:
                raise _unknown(f"{section}.{key}", where, all_keys())
            setattr(obj, key, _coerce(f"{section}.{key}", value, hints[key], dict(fields[key].metadata)))
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=0.05'`` -> ``('optim.lr', 0.05)`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like section.key=value, e.g. optim.lr=0.05")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_key(cfg: Config, key: str, value: Any, where: str = " (command line)") -> None:
    """Set one dotted key. A path into a mapping key (``model.options.aux_logits``) merges into it."""
    if "." not in key:
        raise _unknown(key, where, all_keys())
    section, name, *inner = key.split(".")
    if inner and section in _SECTION_CLASSES:
        fields = {f.name: f for f in dataclasses.fields(_SECTION_CLASSES[section])}
        if name not in fields:
            raise _unknown(f"{section}.{name}", where, all_keys())
        if _hints(_SECTION_CLASSES[section])[name] is not dict:
            raise UserError(f"config key '{section}.{name}'{where} is not a mapping, so '{key}' does not exist; "
                            f"set it whole: {section}.{name}=VALUE")
        merged = node = dict(getattr(getattr(cfg, section), name))   # a copy: a failed check changes nothing
        for part in inner[:-1]:
            node[part] = dict(node[part]) if isinstance(node.get(part), dict) else {}
            node = node[part]
        node[inner[-1]] = value
        value = merged
    apply(cfg, {section: {name: value}}, where)


def read_documents(path: str | Path) -> list:
    """Every YAML document of ``path`` (a model zoo's config may hold several)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist; see configs/ for the recipes")
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text())]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"config file '{path}' is not valid YAML{f' at line {mark.line + 1}' if mark else ''}") \
            from None


def read_recipe(path: str | Path) -> dict:
    """The nested mapping of one of our recipe files: one YAML mapping of sections. (A model
    zoo's own config is read by :func:`inception.vendor_config.load_config`.)"""
    docs = read_documents(path)
    if len(docs) > 1:
        raise UserError(f"config file '{path}' holds {len(docs)} YAML documents; a recipe is one mapping of "
                        f"sections ({', '.join(SECTIONS)})")
    return docs[0] if docs and docs[0] is not None else {}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                recipe: dict | None = None) -> Config:
    """Defaults, then the recipe file ``path`` (or ``recipe``, the mapping already read from
    it), then ``overrides`` (``{'optim.lr': 0.05}``), validated. A MindSpore or PaddleClas
    config is read by :func:`inception.vendor_config.load_config`, which translates it."""
    cfg = Config()
    overrides = overrides or {}
    if recipe is None and path is not None:
        recipe = read_recipe(path)
    if recipe is not None:
        apply(cfg, recipe, f" in {path}" if path is not None else "")
    for key, value in overrides.items():
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Checks that span several keys."""
    s = cfg.schedule
    if s.name == "step" and not s.milestones:
        raise UserError("schedule.name 'step' needs schedule.milestones (epochs), e.g. [30, 60, 80]")
    if s.name == "multistep" and not s.fractions:
        raise UserError("schedule.name 'multistep' needs schedule.fractions, e.g. [0.3, 0.6, 0.8]")
    if any(not 0 < f < 1 for f in s.fractions):
        raise UserError(f"schedule.fractions {s.fractions} must lie strictly between 0 and 1")
    if s.name == "onecycle" and s.warmup_epochs:
        raise UserError("schedule.name 'onecycle' warms up by itself (over schedule.pct_start of training); "
                        "remove schedule.warmup_epochs")
    if s.warmup_epochs > cfg.train.epochs:
        raise UserError(f"schedule.warmup_epochs ({s.warmup_epochs}) must not exceed train.epochs ({cfg.train.epochs})")
    lo, hi = (cfg.data.crop_scale + [None, None])[:2]
    if len(cfg.data.crop_scale) != 2 or not 0 < lo <= hi <= 1:
        raise UserError(f"data.crop_scale {cfg.data.crop_scale} must be two numbers 0 < min <= max <= 1")
    sizes = cfg.data.progressive_sizes
    if any(size < 1 for size in sizes) or len(sizes) > cfg.train.epochs:
        raise UserError(f"data.progressive_sizes {sizes} must be at most train.epochs ({cfg.train.epochs}) sizes "
                        ">= 1, e.g. [96, 112, 128]")
    if len(cfg.optim.betas) != 2:
        raise UserError(f"optim.betas {cfg.optim.betas} must be two numbers, e.g. [0.9, 0.999]")
    if cfg.data.dataset not in ("digits", "synthetic") and not cfg.data.data_dir:
        raise missing_data_dir(cfg.data.dataset)
    if cfg.train.time_limit is not None:
        parse_duration(cfg.train.time_limit, "train.time_limit")


_DATA_DIR_HINTS = {
    "folder": "a folder of train/<class>/ and val/<class>/ images, or a .tar/.tar.gz/.tgz of one",
    "list": "the folder the list files' image paths are relative to",
    "cifar10": "the CIFAR-10 binary or python files, or a .tar.gz of train/<class>/ and test/<class>/ images",
    "cifar100": "the CIFAR-100 binary or python files, or a .tar.gz of train/<class>/ and test/<class>/ images",
}


def missing_data_dir(dataset: str) -> UserError:
    """The one message for a dataset given no data.data_dir: what to pass."""
    return UserError(f"data.dataset '{dataset}' needs its data: pass --data-dir PATH "
                     f"({_DATA_DIR_HINTS.get(dataset, 'the dataset root')})")


def parse_duration(text, what: str = "duration") -> float:
    """Seconds in ``3600``, ``45s``, ``90m``, ``1h30m``, ``2h``, ``1.5h``, ``1d``."""
    value = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise UserError(f"{what} '{text}' is not a duration; write e.g. 3600, 90m, 1h30m or 2h")
        seconds = sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"{what} '{text}' must be longer than 0")
    return seconds


def lookup(cfg: Config, key: str) -> Any:
    """The value of a dotted key; a path into a mapping (``model.options.aux_logits``) gives None when missing."""
    section, name, *inner = key.split(".")
    value = getattr(getattr(cfg, section), name)
    for part in inner:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def unused_reason(cfg: Config, key: str) -> str | None:
    """Why ``key`` does not apply to ``cfg`` (e.g. ``'not used with schedule.name=cosine'``), or None."""
    if key not in APPLIES_WHEN:
        return None
    selector, values = APPLIES_WHEN[key]
    current = lookup(cfg, selector)
    if current in values:
        return None
    if current is None:   # a mapping entry that is not set
        return f"not used unless {selector}={' or '.join(_yaml_word(v) for v in values)}"
    return f"not used with {selector}={_yaml_word(current)}"


def _yaml_word(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def to_yaml(cfg: Config) -> str:
    """The config as YAML that :func:`load_config` reads back, each key that does not apply to it
    marked with a trailing comment (``# not used with optim.name=sgd``)."""
    lines = ["# resolved config; a key marked 'not used' has no effect with the setting it names"]
    for section, cls in _SECTION_CLASSES.items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            # one flow-style line per key, so the comment can follow it
            text = yaml.safe_dump({f.name: getattr(getattr(cfg, section), f.name)}, default_flow_style=True,
                                  sort_keys=False, width=1 << 30).strip()[1:-1]
            reason = unused_reason(cfg, f"{section}.{f.name}")
            lines.append(f"  {text}" + (f"  # {reason}" if reason else ""))
    return "\n".join(lines) + "\n"


def describe() -> str:
    """Every key with its default and documentation (for `inception train --help-config`)."""
    lines = []
    for section, cls in _SECTION_CLASSES.items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            lines.append(f"  {f.name}: {default!r}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)

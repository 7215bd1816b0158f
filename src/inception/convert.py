"""``inception convert SRC DST``: any weights file this tool reads (a MindSpore ``.ckpt``, a
PaddleClas ``.pdparams``, Cadene / timm / torchvision state dicts, our own checkpoints) as
one of our checkpoints, which ``eval``, ``export``, ``infer`` and ``--pretrained`` take like
a trained run's; or as safetensors with the export metadata.

The architecture and its options come from the file (``googlenet`` with
``variant=mindspore`` for MindSpore's GoogLeNet...), the class count from its classifier.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ._version import __version__
from .config import Config, apply
from .engine.checkpoint import CHECKPOINT_FORMAT, save_file, sha256_file
from .errors import UserError
from .models import apply_weights, create_model, read_weights
from .models.card import all_cards
from .models.pretrained import LoadResult, detect_layout
from .models.vendor import LABELS as VENDOR_LABELS


@dataclass
class ConvertResult:
    path: Path
    arch: str
    options: dict
    num_classes: int
    source: str                          # who wrote the file: MindSpore, PaddleClas, timm...
    load: LoadResult
    class_names: list[str] = field(default_factory=list)

    def line(self) -> str:
        opts = "".join(f", {k}={v}" for k, v in self.options.items())
        return (f"wrote {self.path}: {self.arch}{opts}, {self.num_classes} classes, from {self.source} weights")


def _classes(class_names: str | Path | list[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(class_names, (str, Path)):
        path = Path(class_names)
        if not path.is_file():
            raise UserError(f"class names file '{path}' does not exist; give a text file with one class per line")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        # PaddleClas label lists are "index name" lines
        if names and all(n.split(maxsplit=1)[0].isdigit() and " " in n for n in names):
            names = [n.split(maxsplit=1)[1] for n in names]
    else:
        names = list(class_names)
    if len(names) != num_classes:
        raise UserError(f"{len(names)} class names for a classifier of {num_classes} classes; give one name per "
                        "class, in the classifier's order")
    return names


def _classifier_outputs(model_arch: str, options: dict, state_dict: dict) -> int:
    probe = create_model(model_arch, num_classes=1, **options)
    key = f"{probe.classifier_name}.weight"
    aliases = {"last_linear.weight": ("classif.weight",)}
    for k in (key, *aliases.get(key, ())):
        if k in state_dict:
            return int(state_dict[k].shape[0])
    raise UserError(f"the weights have no classifier ({key}); pass --num-classes N")


def convert(src: str | Path, dst: str | Path, *, model: str | None = None, options: dict | None = None,
            num_classes: int | None = None, class_names: str | Path | list[str] | None = None) -> ConvertResult:
    """Write the weights of ``src`` as our checkpoint (``.pt``) or as safetensors with the
    export metadata (``.safetensors``) at ``dst``."""
    src, dst = Path(src), Path(dst)
    if dst.suffix not in (".pt", ".pth", ".safetensors"):
        raise UserError(f"output '{dst}' must end in .pt (our checkpoint) or .safetensors")
    if dst.resolve() == src.resolve():
        raise UserError("the output would overwrite the input; give another path")
    state_dict, extras = read_weights(src)
    if extras.get("vendor"):
        arch, file_options, source = extras["arch"], dict(extras["model_options"]), extras["vendor"]
    elif extras:
        arch, file_options, source = extras.get("arch"), dict(extras.get("model_options") or {}), "inception"
    else:
        found, file_options = detect_layout(state_dict), {}
        if found is None:
            known = ", ".join(f"{lay.label} {c.name}" for c in all_cards() for lay in c.layouts)
            raise UserError(f"'{src}' is not weights of a model this tool knows ({known}, or ours)")
        arch, source = found[0], found[1].source
    if model and model != arch:
        raise UserError(f"'{src}' holds {arch} weights, not {model}; leave --model out (it is read from the file)")
    file_options.update(options or {})
    n = num_classes or _classifier_outputs(arch, file_options, state_dict)
    net = create_model(arch, num_classes=n, **file_options)
    loaded = apply_weights(net, state_dict, extras, path=src)
    names = _classes(class_names if class_names is not None else extras.get("class_names"), n)
    cfg = Config()
    apply(cfg, {"model": {"name": arch, "options": file_options, "num_classes": n},
                "data": {"image_size": loaded.data_config.input_size[1]}}, " (convert)")
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "inception_version": __version__,
        "arch": arch,
        "model_class": type(net).__name__,
        "model_options": file_options,
        "num_classes": n,
        "class_names": names,
        "data_config": loaded.data_config.to_dict(),
        "image_size": loaded.data_config.input_size[1],
        "model": net.state_dict(),
        "config": cfg.to_dict(),
        "best_source": "model",
        "metrics": {},
        "converted_from": {"path": str(src), "source": VENDOR_LABELS.get(source, source), "sha256": sha256_file(src)},
    }
    if dst.suffix == ".safetensors":
        from .export import export_checkpoint  # noqa: PLC0415 - export pulls in onnx; only for this output

        with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as tmp:
            tmp_ckpt = Path(tmp) / "converted.pt"
            save_file(ckpt, tmp_ckpt)
            export_checkpoint(tmp_ckpt, fmt="safetensors", output=dst)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_file(ckpt, dst)
    return ConvertResult(dst, arch, file_options, n, VENDOR_LABELS.get(source, source), loaded, names)


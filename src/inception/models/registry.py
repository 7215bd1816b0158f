"""Model registry: names -> constructors, with metadata computed from the models."""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UserError
from .layers import DataConfig, InceptionBase
from .pretrained import load_pretrained


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., InceptionBase]
    description: str
    defaults: dict
    init: str = ""


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, builder: Callable[..., InceptionBase], description: str, *, init: str = "",
                   **defaults) -> None:
    """Register ``builder`` under ``name``; ``init`` says how its weights are initialised when trained
    from scratch; ``defaults`` are keyword arguments it is called with."""
    _REGISTRY[name] = _Entry(name, builder, description, defaults, init)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(list_models())}"
        raise UserError(f"unknown model '{name}': {hint}")
    return _REGISTRY[name]


def model_options(name: str) -> list[str]:
    """The keyword options ``create_model(name, ...)`` accepts."""
    params = inspect.signature(_entry(name).builder).parameters
    return [p for p in params if p != "self"]


def create_model(name: str, num_classes: int = 1000, pretrained: str | None = None, **kwargs) -> InceptionBase:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs (0 for a feature extractor returning pooled features).
        pretrained: optional path to weights (this project's checkpoint, or a torchvision /
            timm state dict in .pth/.pt/.safetensors); see :func:`load_pretrained`.
        **kwargs: model options, e.g. ``aux_logits=True``, ``stem="cifar"``, ``dropout=0.3``.
    """
    entry = _entry(name)
    options = model_options(name)
    bad = [k for k in kwargs if k not in options]
    if bad:
        close = difflib.get_close_matches(bad[0], options, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid options: {', '.join(options)}"
        raise UserError(f"model '{name}' has no option '{bad[0]}': {hint}")
    model = entry.builder(num_classes=num_classes, **{**entry.defaults, **kwargs})
    model.arch = name
    if pretrained:
        load_pretrained(model, pretrained)
    return model


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered model (computed by building it on the meta device)."""

    name: str
    description: str
    params: int
    macs: int
    num_features: int
    data_config: DataConfig
    init: str = ""

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.data_config.input_size

    @property
    def min_input_size(self) -> int:
        return self.data_config.min_input_size


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one eval-mode forward pass at ``input_size`` (C, H, W).

    Counted by ``torch.utils.flop_counter`` (convolutions and matmuls; FLOPs = 2 x MACs)
    on the model's own device; use a meta-device model for a free count.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, *input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@functools.lru_cache(maxsize=None)
def _info(name: str, frozen_kwargs: tuple) -> ModelInfo:
    with torch.device("meta"):
        model = create_model(name, **dict(frozen_kwargs))
    return ModelInfo(
        name=name,
        description=_entry(name).description,
        params=count_params(model),
        macs=count_macs(model, model.data_config.input_size),
        num_features=model.num_features,
        data_config=model.data_config,
        init=_entry(name).init,
    )


def get_model_info(name: str, **kwargs) -> ModelInfo:
    """Parameters, MACs at the default input size, and preprocessing of a model.

    ``kwargs`` are model options (``num_classes=10``, ``aux_logits=True``...).
    """
    return _info(name, tuple(sorted(kwargs.items())))


def model_summary(name_or_model: str | InceptionBase, input_size: tuple[int, int, int] | None = None,
                  **kwargs) -> list[tuple[str, str, tuple[int, ...] | None, int]]:
    """Rows ``(block, type, output shape, params)`` of one eval forward pass.

    Blocks are the model's top-level modules (a top-level ``nn.Sequential`` is opened one
    level). Modules that do not run in eval mode (auxiliary heads) have no shape.
    """
    if isinstance(name_or_model, str):
        with torch.device("meta"):
            model = create_model(name_or_model, **kwargs)
    else:
        model = name_or_model
    input_size = input_size or model.data_config.input_size
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential) and len(child) > 0 and name == "features":
            blocks += [(f"{name}.{i}", c) for i, c in enumerate(child)]
        else:
            blocks.append((name, child))
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        mod.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape)))
        for name, mod in blocks
    ]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.empty(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [(n, type(m).__name__, shapes.get(n), count_params(m)) for n, m in blocks]

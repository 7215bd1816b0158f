"""Model registry: names -> model cards (:mod:`.card`), and building models from them."""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UserError
from .card import ModelCard, card_names, close_names, find_card, register_card, unregister_card
from .layers import DataConfig, InceptionBase
from .pretrained import load_pretrained


def register_model(card: ModelCard) -> None:
    """Register an architecture by its :class:`~.card.ModelCard` (the package's own models are
    found by themselves: each model file's ``CARDS``). A card with missing fields is refused."""
    if not isinstance(card, ModelCard):
        raise TypeError(f"register_model takes a ModelCard, got {type(card).__name__}")
    if card.missing():
        raise ValueError(f"model card '{card.name}' is incomplete: {', '.join(card.missing())}")
    register_card(card)
    _info.cache_clear()                     # a card replacing another of the same name


def unregister_model(name: str) -> None:
    """Remove a registered model (a test's, a plugin's); unknown names are ignored."""
    unregister_card(name)
    _info.cache_clear()


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in card_names() if fnmatch.fnmatch(n, pattern))


def get_card(name: str) -> ModelCard:
    """The card of a registered model; an unknown name gets the closest one as a hint."""
    card = find_card(name)
    if card is None:
        close = close_names(name)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(list_models())}"
        raise UserError(f"unknown model '{name}': {hint}")
    return card


def model_data_config(name: str, options: dict | None = None) -> DataConfig:
    """The preprocessing of model ``name`` built with ``options``, read from its card (no
    model is built); a run then lets its checkpoint or weights file override mean/std."""
    return get_card(name).data_config_for(options)


def model_options(name: str) -> list[str]:
    """The keyword options ``create_model(name, ...)`` accepts."""
    params = inspect.signature(get_card(name).builder).parameters
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
    card = get_card(name)
    options = model_options(name)
    bad = [k for k in kwargs if k not in options]
    if bad:
        close = difflib.get_close_matches(bad[0], options, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid options: {', '.join(options)}"
        raise UserError(f"model '{name}' has no option '{bad[0]}': {hint}")
    model = card.builder(num_classes=num_classes, **{**card.defaults, **kwargs})
    model.arch = name
    if pretrained:
        load_pretrained(model, pretrained)
    return model


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered model: its card's, or for other options, measured on a
    meta-device build."""

    name: str
    description: str
    params: int
    macs: int
    num_features: int
    data_config: DataConfig
    init: str = ""
    origin: str = ""
    card: ModelCard | None = None

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
    card = get_card(name)
    kwargs = dict(frozen_kwargs)
    info = ModelInfo(name=name, description=card.description, params=card.params, macs=card.macs,
                     num_features=card.num_features, data_config=card.data_config_for(kwargs), init=card.init,
                     origin=card.origin, card=card)
    if not kwargs:
        return info                         # the card's own figures (the tests check them against a build)
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return replace(info, params=count_params(model), macs=count_macs(model, info.data_config.input_size),
                   num_features=model.num_features)


def get_model_info(name: str, **kwargs) -> ModelInfo:
    """Parameters, MACs at the default input size, and preprocessing of a model, from its
    card; ``kwargs`` (model options: ``num_classes=10``, ``aux_logits=True``...) are measured
    on a meta-device build."""
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

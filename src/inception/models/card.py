"""Model cards: one static, declarative record per registered architecture, kept in the
architecture's own model file (as timm keeps ``default_cfgs`` beside each model and
torchvision its ``Weights.meta``).

A model file ends with ``CARDS = (ModelCard(...), ...)``. The package finds the cards by itself
(``inception.models`` imports every module of the package and registers each ``CARDS`` entry),
and everything that needs to know about an architecture reads its card:

* ``inception models``, :func:`~inception.models.get_model_info` and the docs' model pages:
  description, origin, parameters, MACs, features, preprocessing, initialisation;
* the trainer, eval, export, bench: the preprocessing (:attr:`ModelCard.data_config`, or
  :meth:`ModelCard.data_config_for` the model's options), which a checkpoint or weights file
  then overrides in the run's own data config (never on the model instance);
* the pretrained loader and ``inception convert``: the weight layouts the architecture loads
  (:class:`WeightLayout`: torchvision, timm, Cadene, MindSpore, PaddleClas), found by a key
  only that layout has, with its key aliases or its full renaming table;
* ``inception convert-config``: the names the vendor zoos' config files give the architecture
  (:class:`VendorName`);
* ``inception bench --peer``: the same architecture as torchvision or timm builds it (``peers``).

Adding an architecture is one model file with its ``CARDS``, plus its line in the tests' model
list; ``tests/models/test_cards.py`` fails when a card is incomplete or disagrees with the model
it builds. This module is a leaf of ``models``: it imports only :mod:`inception.spec`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Callable, Mapping

from ..spec import DataConfig

#: The weight sources a layout may name, and how messages call them.
SOURCES = {"torchvision": "torchvision", "timm": "timm", "torchvision/timm": "torchvision and timm",
           "inception": "this project", "mindspore": "MindSpore", "paddle": "PaddleClas"}
#: The vendor zoos whose config files ``inception convert-config`` reads.
VENDOR_ZOOS = ("mindspore", "paddleclas")


class Renames:
    """``vendor name -> (our name, transform)`` of one vendor layout, built by the layout's
    ``renames`` function (MindSpore and Paddle name every tensor differently from ours)."""

    _BN_MS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    _BN_PADDLE = {"weight": "weight", "bias": "bias", "_mean": "running_mean", "_variance": "running_var"}

    def __init__(self) -> None:
        self.names: dict[str, tuple[str, str]] = {}
        self.bns: list[str] = []

    def param(self, src: str, dst: str, how: str = "") -> None:
        """``how``: "" (as is) or ``"transpose*S"`` (a Paddle Linear weight, stored (in, out), scaled by S)."""
        self.names[src] = (dst, how)

    def ms_convbn(self, src: str, dst: str, conv: str = "conv", bn: str = "bn") -> None:
        self.param(f"{src}.{conv}.weight", f"{dst}.conv.weight")
        for a, b in self._BN_MS.items():
            self.param(f"{src}.{bn}.{a}", f"{dst}.bn.{b}")
        self.bns.append(f"{dst}.bn")

    def paddle_convbn(self, src: str, dst: str) -> None:
        self.param(f"{src}._conv.weight", f"{dst}.conv.weight")
        for a, b in self._BN_PADDLE.items():
            self.param(f"{src}._batch_norm.{a}", f"{dst}.bn.{b}")
        self.bns.append(f"{dst}.bn")

    def paddle_linear(self, src: str, dst: str, scale: float = 1.0) -> None:
        self.param(f"{src}.weight", f"{dst}.weight", f"transpose*{scale}")
        self.param(f"{src}.bias", f"{dst}.bias")


@dataclass(frozen=True)
class WeightLayout:
    """One state-dict layout an architecture loads, recognised by ``marker``, a key that only
    this layout has.

    * Layouts that share our names (torchvision, timm, Cadene, our own) at most rename a few
      prefixes: ``aliases`` ``((theirs, ours), ...)`` (Cadene's ``last_linear.`` is our
      Inception-ResNet-v2's ``classif.``).
    * Vendor layouts (``source`` ``mindspore`` or ``paddle``) rename everything: ``renames``
      builds their table, ``fold`` (optional) turns the tensors renamed to ``head:*`` into our
      classifier's, and ``options`` are the model options their outputs need (``variant``).
    """

    source: str
    marker: str
    aliases: tuple[tuple[str, str], ...] = ()
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    renames: Callable[[], Renames] | None = None
    fold: Callable[[dict], dict] | None = None

    @property
    def vendor(self) -> bool:
        return self.source in ("mindspore", "paddle")

    @property
    def label(self) -> str:
        return SOURCES.get(self.source, self.source)


@dataclass(frozen=True)
class VendorName:
    """What a vendor zoo's config file calls this architecture (MindSpore's ``net_name``,
    PaddleClas's ``Arch.name``), and the model options its recipe builds it with."""

    zoo: str                       # one of VENDOR_ZOOS
    name: str
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ModelCard:
    """Everything the package knows about one registered architecture, declared in its file.

    ``params``, ``macs`` and ``num_features`` are of the model built with ``defaults`` and 1000
    classes, ``macs`` at ``data_config.input_size``; the tests build every model and check them.
    ``data_config`` is the preprocessing of those defaults; ``data_config_options`` the
    preprocessing an option changes (``{"stem": {"cifar": DataConfig(...)}}``); ``in_chans``
    changes the input's channels of any of them (:meth:`data_config_for`).
    """

    name: str
    builder: Callable
    description: str
    origin: str                    # where it comes from and which weights it loads (the README's table)
    data_config: DataConfig
    params: int
    macs: int
    num_features: int
    init: str                      # how it starts when trained from scratch
    layouts: tuple[WeightLayout, ...] = ()
    vendor_names: tuple[VendorName, ...] = ()
    defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    peers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))   # `bench --peer`: the
    # same architecture as another library builds it, {"torchvision": model function, "timm": timm name}
    data_config_options: Mapping[str, Mapping[object, DataConfig]] = field(
        default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in ("defaults", "peers", "data_config_options"):      # frozen: a card's mappings are read-only too
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def data_config_for(self, options: Mapping[str, object] | None = None) -> DataConfig:
        """The preprocessing of this architecture built with ``options`` (its own defaults
        first), from the card alone: no model is built."""
        merged = {**self.defaults, **(options or {})}
        dc = self.data_config
        for option, by_value in self.data_config_options.items():
            if option in merged and merged[option] in by_value:
                dc = by_value[merged[option]]
        channels = merged.get("in_chans")
        return dc if channels is None else dc.replace(input_size=(int(channels), *dc.input_size[1:]))

    def missing(self) -> list[str]:
        """The fields left empty (a complete card has none; the tests check every card)."""
        optional = {"layouts", "vendor_names", "defaults", "peers", "data_config_options"}
        return [f.name for f in fields(self) if f.name not in optional and not getattr(self, f.name)]


_CARDS: dict[str, ModelCard] = {}


def register_card(card: ModelCard) -> None:
    """Register ``card`` under its name (a later card of the same name replaces it); checked by
    :func:`~.registry.register_model`."""
    _CARDS[card.name] = card


def unregister_card(name: str) -> None:
    _CARDS.pop(name, None)


def card_names() -> list[str]:
    return list(_CARDS)


def find_card(name: str) -> ModelCard | None:
    return _CARDS.get(name)


def close_names(name: str) -> list[str]:
    return difflib.get_close_matches(name, list(_CARDS), n=1)


def all_cards() -> tuple[ModelCard, ...]:
    return tuple(_CARDS.values())


def card_of_class(class_name: str) -> ModelCard | None:
    """The first registered card whose builder is the class ``class_name`` (a checkpoint's
    ``model_class``): ``googlenet`` for ``GoogLeNet``, not ``googlenet_cifar``."""
    return next((c for c in _CARDS.values() if getattr(c.builder, "__name__", None) == class_name), None)

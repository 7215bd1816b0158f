"""The Inception model zoo.

Each architecture is one model file ending in ``CARDS``, its :class:`~.card.ModelCard` (s):
this package imports every module of its own and registers the cards it finds, so a new
model file is found without being listed anywhere else.
"""

import importlib
import pkgutil

from .card import ModelCard, VendorName, WeightLayout
from .googlenet import GoogLeNet
from .googlenet_v1 import GoogLeNetV1
from .inception_resnet_v2 import InceptionResNetV2
from .inception_v3 import InceptionV3
from .inception_v4 import InceptionV4
from .layers import AuxOutputs, DataConfig, InceptionBase
from .pretrained import apply_weights, eval_weights, load_pretrained, read_weights, weights_data_config
from .registry import (
    ModelInfo,
    count_macs,
    count_params,
    create_model,
    get_card,
    get_model_info,
    list_models,
    model_data_config,
    model_options,
    model_summary,
    register_model,
)


def _register_model_files() -> None:
    for module in pkgutil.iter_modules(__path__):
        for card in getattr(importlib.import_module(f"{__name__}.{module.name}"), "CARDS", ()):
            register_model(card)


_register_model_files()

__all__ = [
    "AuxOutputs", "DataConfig", "GoogLeNet", "GoogLeNetV1", "InceptionBase", "InceptionResNetV2", "InceptionV3",
    "InceptionV4", "ModelCard", "ModelInfo", "VendorName", "WeightLayout", "apply_weights", "count_macs",
    "count_params", "create_model", "eval_weights", "get_card", "get_model_info", "list_models", "load_pretrained",
    "model_data_config", "model_options", "model_summary", "read_weights", "register_model", "weights_data_config",
]

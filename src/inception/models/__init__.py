"""The Inception model zoo."""

from .googlenet import GoogLeNet
from .inception_resnet_v2 import InceptionResNetV2
from .inception_v3 import InceptionV3
from .inception_v4 import InceptionV4
from .layers import AuxOutputs, DataConfig, InceptionBase
from .pretrained import apply_weights, load_pretrained, read_weights, weights_data_config
from .registry import (
    ModelInfo,
    count_macs,
    count_params,
    create_model,
    get_model_info,
    list_models,
    model_options,
    model_summary,
    register_model,
)

register_model("googlenet", GoogLeNet, "GoogLeNet / Inception v1 with BatchNorm (224 stem)")
register_model("googlenet_cifar", GoogLeNet, "GoogLeNet with the 32x32 CIFAR stem", stem="cifar")
register_model("inception_v3", InceptionV3, "Inception v3")
register_model("inception_v4", InceptionV4, "Inception v4")
register_model("inception_resnet_v2", InceptionResNetV2, "Inception-ResNet-v2")

__all__ = [
    "AuxOutputs", "DataConfig", "GoogLeNet", "InceptionBase", "InceptionResNetV2", "InceptionV3",
    "InceptionV4", "ModelInfo", "apply_weights", "count_macs", "count_params", "create_model", "get_model_info",
    "list_models", "load_pretrained", "model_options", "model_summary", "read_weights", "register_model",
    "weights_data_config",
]

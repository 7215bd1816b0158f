"""The Inception model zoo."""

from .googlenet import GoogLeNet
from .googlenet_v1 import INIT as _GOOGLENET_V1_INIT
from .googlenet_v1 import GoogLeNetV1
from .inception_resnet_v2 import InceptionResNetV2
from .inception_v3 import InceptionV3
from .inception_v4 import InceptionV4
from .layers import INIT_DESCRIPTION, AuxOutputs, DataConfig, InceptionBase
from .pretrained import apply_weights, eval_weights, load_pretrained, read_weights, weights_data_config
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

# How each model starts when trained from scratch (pretrained weights replace all of it), and how
# that differs from the implementation whose weights it loads.
_TORCHVISION_GOOGLENET = ("; torchvision's googlenet draws convolutions and linear layers from a truncated normal "
                          "with std 0.01 (cut at +-2, in effect a plain normal), which trains slowly from scratch")
_TIMM = "; timm's {} keeps PyTorch's default (Kaiming-uniform) initialisation"

register_model("googlenet", GoogLeNet, "GoogLeNet / Inception v1 with BatchNorm (224 stem)",
               init=INIT_DESCRIPTION + _TORCHVISION_GOOGLENET)
register_model("googlenet_cifar", GoogLeNet, "GoogLeNet with the 32x32 CIFAR stem", stem="cifar",
               init=INIT_DESCRIPTION + _TORCHVISION_GOOGLENET)
register_model("googlenet_v1", GoogLeNetV1, "GoogLeNet as PaddleClas builds it: Inception v1 without BatchNorm, "
               "5x5 branches, two aux heads", init=_GOOGLENET_V1_INIT)
register_model("inception_v3", InceptionV3, "Inception v3",
               init=INIT_DESCRIPTION + "; torchvision's inception_v3 uses a truncated normal with std 0.1 (0.01 "
                                       "for the aux head's 5x5 convolution, 0.001 for its classifier)")
register_model("inception_v4", InceptionV4, "Inception v4",
               init=INIT_DESCRIPTION + _TIMM.format("inception_v4"))
register_model("inception_resnet_v2", InceptionResNetV2, "Inception-ResNet-v2",
               init=INIT_DESCRIPTION + _TIMM.format("inception_resnet_v2"))

__all__ = [
    "AuxOutputs", "DataConfig", "GoogLeNet", "GoogLeNetV1", "InceptionBase", "InceptionResNetV2", "InceptionV3",
    "InceptionV4", "ModelInfo", "apply_weights", "count_macs", "count_params", "create_model", "eval_weights",
    "get_model_info", "list_models", "load_pretrained", "model_options", "model_summary", "read_weights",
    "register_model", "weights_data_config",
]

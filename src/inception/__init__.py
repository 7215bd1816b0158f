"""inception: train, evaluate, export and deploy the Inception family on plain PyTorch."""

from ._version import __version__
from .errors import CheckpointError, UserError
from .models import create_model, get_model_info, list_models, load_pretrained

__all__ = ["CheckpointError", "UserError", "__version__", "create_model", "get_model_info",
           "list_models", "load_pretrained"]

"""inception: train, evaluate, export and deploy the Inception family on plain PyTorch."""

__version__ = "0.1.0"

from .errors import CheckpointError, UserError  # noqa: E402
from .models import create_model, get_model_info, list_models, load_pretrained  # noqa: E402

__all__ = ["CheckpointError", "UserError", "__version__", "create_model", "get_model_info",
           "list_models", "load_pretrained"]

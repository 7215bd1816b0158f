"""The optional parts of the install (pyproject's extras) and the modules each brings.

The core (``pip install inception``) trains, evaluates and fine-tunes: torch, torchvision,
numpy, pyyaml, tqdm, safetensors, pillow. Export, ONNX inference and INT8 need ``export``; the
HTTP server ``serve``; curves and confusion-matrix images ``plot``; MindSpore ``.ckpt`` files
``vendor``. A command that reaches a module of a missing extra stops with one line naming the
extra to install (:func:`extra_of`, used by the CLI)."""

from __future__ import annotations

EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "serve": ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart", "prometheus_client", "httpx",
              "httptools", "uvloop"),
    "plot": ("matplotlib",),
    "vendor": ("google",),
    "tensorboard": ("tensorboard",),
}


def extra_of(module: str) -> str | None:
    """The extra that installs ``module`` (a dotted name: its top package counts), or None."""
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)

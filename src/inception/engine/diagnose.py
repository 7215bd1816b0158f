"""How hard one SGD step hits each layer at init: the gradient of every convolution's weight
relative to the weight itself (``inception models --init-gradients``).

A convolution followed by BatchNorm is scale-invariant, so its gradient grows as its weight
shrinks, and in a deep network the stem's can be many times its own norm: an SGD step of
``lr x |grad| / |w|`` then rewrites the layer, which is why a recipe that trains GoogLeNet can
make Inception v3 or v4 diverge (docs/results.md, "Every seed architecture on Imagenette").
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import create_model


@dataclass(frozen=True)
class GradientScale:
    model: str
    grad_norm: float          # of all parameters
    max_ratio: float          # the largest |grad| / |w| of a convolution's weight
    max_layer: str            # ... and its parameter name
    median_ratio: float       # the median over the convolutions


def init_gradient_scale(name: str, *, image_size: int = 128, batch_size: int = 32, num_classes: int = 10,
                        label_smoothing: float = 0.1, seed: int = 0) -> GradientScale:
    """One forward and backward pass of model ``name`` at init (seeded by ``seed``), in fp32
    on the CPU in train mode, on a batch of standard-normal images with random labels, through
    the main classifier's cross-entropy (auxiliary heads left out)."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes).train()
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, num_classes, (batch_size,))
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    F.cross_entropy(logits, y, label_smoothing=label_smoothing).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    ratios = [(n, (p.grad.norm() / p.norm()).item()) for n, p in model.named_parameters()
              if p.dim() == 4 and p.grad is not None and p.norm() > 0]
    layer, worst = max(ratios, key=lambda r: r[1])
    return GradientScale(name, torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item(), worst,
                         layer.removesuffix(".weight"), statistics.median(r for _, r in ratios))

"""Fine-tuning helpers: which parameters are the head, freezing the backbone, frozen
BatchNorm statistics.

The *head* is the classifier (``model.classifier_name``) and the auxiliary heads
(``model.aux_keys``), the parts :meth:`reset_classifier` replaces for a new class count;
everything else is the *backbone*.
"""

from __future__ import annotations

from torch import nn


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    return (f"{getattr(model, 'classifier_name', 'fc')}.",) + tuple(getattr(model, "aux_keys", ()))


def is_head(model: nn.Module, name: str) -> bool:
    return name.startswith(head_prefixes(model))


def freeze_backbone(model: nn.Module) -> int:
    """``requires_grad=False`` on every backbone parameter; returns how many were frozen."""
    frozen = 0
    for name, p in model.named_parameters():
        if not is_head(model, name):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def freeze_batchnorm(model: nn.Module, *, backbone_only: bool = False) -> None:
    """Put BatchNorm layers in eval mode (running statistics neither used from the batch nor
    updated); call after every ``model.train()``. ``backbone_only`` leaves the heads' alone."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (backbone_only and is_head(model, name + ".")):
            m.eval()

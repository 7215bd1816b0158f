"""One training step, the same in the trainer and in ``inception bench model``.

    step = TrainStep(model, criterion, precision, optimizer, params, compile=True)
    loss, logits, applied = step(images, target)

A step is: clear the gradients, forward and loss under autocast, backward, (unscale, clip,)
optimizer step. With ``compile``, the forward *and the loss* are one ``torch.compile`` graph
(AOTAutograd traces the backward of the whole of it too), so inductor fuses BatchNorm, ReLU,
the concatenations and the cross-entropy; the optimizer step is the fused (CUDA) or foreach
kernel it always is. ``compile_mode`` is ``torch.compile``'s: ``default``, ``reduce-overhead``
(CUDA graphs: the step is replayed, not launched kernel by kernel), ``max-autotune`` or
``max-autotune-no-cudagraphs``.

The compiled graph is specialised to the first batch's shape (``dynamic=False``): a batch of
another shape (an epoch's short last batch, progressive resizing) runs eagerly, the same
arithmetic on the same parameters, instead of compiling again. Under DDP the wrapped model is
compiled and the loss stays outside (DDP's bucketed all-reduce splits the graph anyway).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor, nn

from ..config import COMPILE_MODES
from ..models import AuxOutputs
from .amp import Precision

log = logging.getLogger("inception")

__all__ = ["COMPILE_MODES", "ForwardLoss", "TrainStep", "check_compile_mode", "compute_loss"]


def compute_loss(out: Tensor | AuxOutputs | tuple, target: Tensor, criterion: nn.Module,
                 aux_weight: float) -> tuple[Tensor, Tensor]:
    """``(loss, main_logits)``: cross-entropy of the main logits plus ``aux_weight`` times
    that of each auxiliary head. ``out`` is logits, an :class:`AuxOutputs`, or a plain tuple
    ``(logits, aux, ...)`` (torchvision's GoogLeNetOutputs and InceptionOutputs)."""
    if isinstance(out, AuxOutputs):
        logits, aux = out.logits, out.aux
    elif isinstance(out, tuple):
        logits, aux = out[0], [a for a in out[1:] if a is not None]
    else:
        return criterion(out, target), out
    loss = criterion(logits, target)
    for a in aux:
        loss = loss + aux_weight * criterion(a, target)
    return loss, logits


class ForwardLoss(nn.Module):
    """``(images, target) -> (loss, logits)`` under the step's autocast: what gets compiled."""

    def __init__(self, model: nn.Module, criterion: nn.Module, aux_weight: float, precision: Precision) -> None:
        super().__init__()
        self.model, self.criterion, self.aux_weight = model, criterion, aux_weight
        self.precision = precision

    def forward(self, images: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        with self.precision.autocast():
            return compute_loss(self.model(images), target, self.criterion, self.aux_weight)


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
    return mode


class TrainStep:
    """The training step (see the module doc). ``model`` is what the forward calls (the plain
    module, or DDP around it: set ``distributed``); ``params`` are the trained parameters
    (for gradient clipping)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, precision: Precision,
                 optimizer: torch.optim.Optimizer, params: list[nn.Parameter], *, aux_weight: float = 0.3,
                 grad_clip: float | None = None, compile: bool = False, compile_mode: str = "default",
                 distributed: bool = False) -> None:
        self.precision, self.optimizer, self.params, self.grad_clip = precision, optimizer, params, grad_clip
        self.compile_mode = check_compile_mode(compile_mode)
        self.cudagraphs = compile and compile_mode in ("reduce-overhead", "max-autotune")
        self.eager = ForwardLoss(model, criterion, aux_weight, precision)
        self.compiled: Callable | None = None
        self.shape: tuple | None = None      # the batch shape the compiled graph is specialised to
        self.eager_steps = 0                 # steps of another shape, run eagerly
        if compile:
            options = {} if compile_mode == "default" else {"mode": compile_mode}
            if distributed:   # compile DDP(model); the loss stays outside the graph
                compiled_model = torch.compile(model, dynamic=False, **options)
                self.compiled = ForwardLoss(compiled_model, criterion, aux_weight, precision)
            else:
                self.compiled = torch.compile(self.eager, dynamic=False, **options)

    @property
    def what(self) -> str:
        """How the step runs, for the log and the bench (``eager``, ``compiled step (default)``...)."""
        if self.compiled is None:
            return "eager"
        graphs = ", CUDA graphs" if self.cudagraphs else ""
        return f"compiled step (torch.compile mode {self.compile_mode}{graphs})"

    def __call__(self, images: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(loss, logits, applied)``: ``applied`` as :meth:`Precision.step` returns it."""
        self.optimizer.zero_grad(set_to_none=True)   # before the forward: no gradient of the last step is alive
        forward = self.eager
        if self.compiled is not None:
            key = (tuple(images.shape), tuple(target.shape))
            if self.shape is None:
                self.shape = key
            if key == self.shape:
                forward = self.compiled
                if self.cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()
            else:
                self.eager_steps += 1
        loss, logits = forward(images, target)
        self.precision.backward(loss)
        applied = self.precision.step(self.optimizer, self.params, self.grad_clip)   # non-finite: skipped
        if self.cudagraphs:     # the graph's outputs are overwritten by its next replay: keep copies
            loss, logits = loss.detach().clone(), logits.detach().clone()
        return loss, logits, applied

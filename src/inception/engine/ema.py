"""An exponential moving average (EMA) of the model's weights and BatchNorm statistics.

Built on ``torch.optim.swa_utils.AveragedModel(..., use_buffers=True)``: the running
statistics are averaged along with the weights, so the averaged model is evaluated as it
is. After every optimizer step ::

    ema = decay * ema + (1 - decay) * model          (torch's get_ema_multi_avg_fn)

with two differences from ``get_ema_multi_avg_fn``: a step the optimizer skipped
(non-finite gradients) leaves the EMA as it is, decided on the device (no host sync), and
with ``warmup`` the decay at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` (timm's
ModelEma warmup), so a short run does not average in its first, random weights.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

log = logging.getLogger("inception")


class ModelEma:
    """The EMA of ``model`` (a copy made now, on the model's device and memory format)."""

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0                           # updates so far (a host counter: no device sync)
        self._weight: Tensor | float = 0.0         # 1 - decay of the update in progress (x 0 when skipped)
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)
        self.averaged.n_averaged.fill_(1)          # the copy is the first average: every update is an EMA step
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged model: evaluate, checkpoint or export it like the model."""
        return self.averaged.module

    def decay_at(self, n: int) -> float:
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, applied: Tensor | None = None) -> None:
        """Average in ``model`` after an optimizer step; ``applied`` (a one-element tensor on
        the device, 1 when the step was applied and 0 when it was skipped) gates the update."""
        w = 1.0 - self.decay_at(self.updates)
        self._weight = w if applied is None else (applied.reshape(()).to(torch.float32) * w)
        self.averaged.update_parameters(model)
        self.updates += 1

    def _lerp(self, ema: list[Tensor], current: list[Tensor], _n_averaged) -> None:
        if torch.is_floating_point(ema[0]):
            weight = self._weight
            if isinstance(weight, Tensor) and (weight.device != ema[0].device or weight.dtype != ema[0].dtype):
                weight = weight.to(ema[0].device, ema[0].dtype)
            torch._foreach_lerp_(ema, current, weight)
        else:                                      # BatchNorm's num_batches_tracked: a counter, not averaged
            torch._foreach_copy_(ema, current)

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.averaged.n_averaged.fill_(self.updates + 1)


def best_top1(metrics: dict) -> float:
    """The higher val top-1 of the model and its EMA in ``validate``'s metrics."""
    return max(metrics["val_top1"], metrics.get("ema_val_top1", float("-inf")))


def checkpoint_entries(ema: ModelEma | None) -> dict:
    """What a training checkpoint holds of the EMA: ``ema`` (a state dict of the model's
    layout, loadable into the model) and ``ema_updates``."""
    if ema is None:
        return {}
    state = ema.state_dict()
    return {"ema": state["model"], "ema_updates": state["updates"]}


def restore(ema: ModelEma, ckpt: dict, path) -> None:
    """Resume the EMA from a checkpoint; one written without an EMA starts it from the model."""
    if "ema" in ckpt:
        ema.load_state_dict({"model": ckpt["ema"], "updates": ckpt.get("ema_updates", 0)})
    else:
        log.info("%s has no EMA of the weights; the EMA starts from its weights", path)

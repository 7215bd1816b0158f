"""Mixed precision: autocast, and loss scaling for fp16.

* ``fp32``: no autocast.
* ``bf16``: autocast to bfloat16; no loss scaling (bf16 has fp32's range).
* ``fp16``: autocast to float16 with dynamic loss scaling (``torch.amp.GradScaler``), or a
  static scale (the seeds' ``loss_scale: 1024``) via :class:`StaticLossScaler`.

Parameters, BatchNorm statistics and the optimizer state stay fp32 (the model is never
cast; autocast runs BatchNorm and the loss in fp32). Gradients are unscaled before
clipping, and a step whose gradients are not finite is skipped, not applied.
"""

from __future__ import annotations

import contextlib

import torch

from .. import accel

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StaticLossScaler:
    """A fixed loss scale with GradScaler's interface (scale, unscale_, step, update)."""

    def __init__(self, scale: float) -> None:
        self.scale_value = float(scale)
        self.skipped = 0
        self._found_inf: dict[int, torch.Tensor] = {}

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_value

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if id(optimizer) in self._found_inf:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        device = grads[0].device if grads else torch.device("cpu")
        found_inf = torch.zeros(1, device=device)
        inv = torch.full((1,), 1.0 / self.scale_value, device=device)
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for grad in grads:
            by_dtype.setdefault(grad.dtype, []).append(grad)
        for group in by_dtype.values():
            torch._amp_foreach_non_finite_check_and_unscale_(group, found_inf, inv)
        self._found_inf[id(optimizer)] = found_inf

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.unscale_(optimizer)
        if self._found_inf[id(optimizer)].item():   # one sync per step, fp16 static scaling only
            self.skipped += 1
        else:
            optimizer.step()

    def update(self) -> None:
        self._found_inf.clear()

    def get_scale(self) -> float:
        return self.scale_value

    def state_dict(self) -> dict:
        return {"scale": self.scale_value, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.scale_value = float(state["scale"])
        self.skipped = int(state.get("skipped", 0))


def _found_inf(scaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """1 when ``unscale_`` found non-finite gradients (so the step will be skipped), else 0."""
    if isinstance(scaler, StaticLossScaler):
        return scaler._found_inf[id(optimizer)]
    # GradScaler keeps it per device between unscale_ and update (private, but stable since torch 1.6).
    return sum(scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values())


class Precision:
    """Autocast and loss scaling for one of ``fp32``, ``bf16``, ``fp16``.

    ``guard=True`` (the trainer) also skips fp32/bf16 steps whose gradients are not finite."""

    def __init__(self, precision: str, device: torch.device, loss_scale: float | None = None, *,
                 dynamic: bool = False, guard: bool = False) -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
        accel.check_precision(device, precision)
        self.precision = precision
        self.device = device
        self.dtype = DTYPES.get(precision)
        self.scaler: torch.amp.GradScaler | StaticLossScaler | None = None
        if precision == "fp16":
            if loss_scale and not dynamic:
                self.scaler = StaticLossScaler(loss_scale)
            else:
                self.scaler = torch.amp.GradScaler(device.type, init_scale=loss_scale or 2.0**16)
        elif guard:
            # fp32/bf16: a scale of exactly 1 (so the arithmetic is unchanged) that still finds
            # non-finite gradients and skips that step. With a fused optimizer (CUDA) GradScaler
            # hands the check to it (no host sync); elsewhere one sync per step is cheap.
            self.scaler = (torch.amp.GradScaler(device.type, init_scale=1.0, growth_interval=2**30)
                           if accel.fused_optimizer(device) else StaticLossScaler(1.0))

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters, grad_clip: float | None) -> torch.Tensor | None:
        """Unscale (fp16), clip, step (skipped on non-finite fp16 gradients), update the scale.

        Returns, with a scaler, a one-element tensor on the device: 1 when the step was
        applied, 0 when it was skipped (read without a host sync; the EMA uses it)."""
        applied = None
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
            applied = 1.0 - _found_inf(self.scaler, optimizer)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return applied

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

"""Optimizers and per-step learning-rate schedules."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .. import accel
from ..config import OptimCfg, ScheduleCfg
from ..errors import UserError
from .finetune import is_head


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp as TensorFlow (and the seeds' Inception v4 recipe) define it.

    Unlike ``torch.optim.RMSprop``: epsilon is added inside the square root, the
    squared-gradient average starts at one, and the learning rate is applied inside the
    momentum buffer, so an lr change does not jolt the accumulated momentum::

        ms  = alpha * ms + (1 - alpha) * g^2
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        p  -= mom

    ``weight_decay`` is added to the gradient (L2), as in TF's regulariser.
    """

    def __init__(self, params: Iterable, lr: float = 0.01, alpha: float = 0.9, eps: float = 1.0,
                 momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        if lr <= 0 or eps <= 0 or not 0 < alpha < 1 or momentum < 0 or weight_decay < 0:
            raise ValueError("RMSpropTF: invalid lr/alpha/eps/momentum/weight_decay")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            square_avgs, moms = [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                square_avgs.append(state["square_avg"])
                moms.append(state["momentum_buffer"])
            alpha = group["alpha"]
            torch._foreach_mul_(square_avgs, alpha)
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
            denom = torch._foreach_add(square_avgs, group["eps"])
            torch._foreach_sqrt_(denom)
            if group["momentum"] > 0:
                torch._foreach_mul_(moms, group["momentum"])
                torch._foreach_addcdiv_(moms, grads, denom, value=group["lr"])
                torch._foreach_sub_(params, moms)
            else:
                torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool, *, lr: float | None = None,
                 backbone_lr_scale: float = 1.0) -> list[dict]:
    """The trainable parameters in groups: split by weight decay when BatchNorm parameters
    and biases (every parameter of one dimension or less) are excluded from it, and into
    head and backbone (:mod:`~inception.engine.finetune`) when the backbone's learning rate
    is ``backbone_lr_scale`` x ``lr``. Empty groups are left out."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    parts = [(named, 1.0)]
    if backbone_lr_scale != 1.0:
        parts = [([(n, p) for n, p in named if is_head(model, n)], 1.0),
                 ([(n, p) for n, p in named if not is_head(model, n)], backbone_lr_scale)]
    groups = []
    for members, scale in parts:
        extra = {"lr": lr * scale} if lr is not None else {}
        if not no_decay_bn_bias or weight_decay == 0:
            splits = [([p for _, p in members], weight_decay)]
        else:
            splits = [([p for _, p in members if p.ndim > 1], weight_decay),
                      ([p for _, p in members if p.ndim <= 1], 0.0)]
        groups += [{"params": ps, "weight_decay": wd, **extra} for ps, wd in splits if ps]
    return groups


def build_optimizer(model: nn.Module, cfg: OptimCfg, device: torch.device | None = None, *,
                    backbone_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_bn_bias, lr=cfg.lr,
                          backbone_lr_scale=backbone_lr_scale)
    if not groups:
        raise UserError("no parameter is left to train (every one is frozen); drop model.freeze_backbone or "
                        "give the model a classifier")
    # One fused kernel for the whole update on CUDA; foreach (batched) kernels elsewhere.
    fast = {"fused": True} if accel.fused_optimizer(device) else {"foreach": True}
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **fast)
    if cfg.name == "rmsprop":
        return RMSpropTF(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **fast)
    raise ValueError(f"unknown optimizer {cfg.name}")


def lr_factor_fn(cfg: ScheduleCfg, *, lr: float, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """The learning-rate multiplier at global step ``s`` (0-based, one optimizer step each).

    Warmup rises linearly from ``warmup_start`` to 1 over ``warmup_epochs``; then
    ``constant``: 1; ``step``: ``gamma ** (number of milestone epochs passed)``;
    ``multistep``: ``gamma ** (number of fractions of the total steps passed)``;
    ``cosine``: from 1 to ``eta_min / lr`` over the steps after warmup;
    ``flat_cosine``: 1 for ``flat_fraction`` of the steps after warmup, then cosine to
    ``eta_min / lr`` (fast.ai's ``fit_flat_cos``);
    ``onecycle``: torch's ``OneCycleLR`` (cosine annealing, two phases) without warmup of
    its own: cosine from ``1 / div_factor`` up to 1 over ``pct_start`` of training, then
    cosine down to ``1 / (div_factor * final_div_factor)``.
    """
    total = max(1, epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "onecycle":
        return _one_cycle(cfg, total)
    flat_end = warm + cfg.flat_fraction * (total - warm) if cfg.name == "flat_cosine" else warm
    boundaries: list[int] = []
    if cfg.name == "step":
        boundaries = sorted(int(round(m * steps_per_epoch)) for m in cfg.milestones)
    elif cfg.name == "multistep":
        boundaries = sorted(int(round(f * total)) for f in cfg.fractions)
    floor = cfg.eta_min / lr

    def factor(s: int) -> float:
        if s < warm:
            return cfg.warmup_start + (1.0 - cfg.warmup_start) * s / warm
        if cfg.name in ("cosine", "flat_cosine"):
            t = min(1.0, max(0.0, (s - flat_end) / max(1, total - flat_end)))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
        if boundaries:
            return cfg.gamma ** sum(1 for b in boundaries if s >= b)
        return 1.0

    return factor


def _cos(start: float, end: float, t: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * min(1.0, max(0.0, t))) + 1.0)


def _one_cycle(cfg: ScheduleCfg, total: int) -> Callable[[int], float]:
    """OneCycleLR's multiplier (``anneal_strategy='cos'``, ``three_phase=False``): its phase
    boundaries are steps ``pct_start * total - 1`` and ``total - 1``."""
    start, end = 1.0 / cfg.div_factor, 1.0 / (cfg.div_factor * cfg.final_div_factor)
    peak = float(cfg.pct_start * total) - 1

    def factor(s: int) -> float:
        if s <= peak:
            return _cos(start, 1.0, s / peak if peak > 0 else 1.0)
        return _cos(1.0, end, (s - peak) / max(total - 1 - peak, 1e-12))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleCfg, *, steps_per_epoch: int,
                    epochs: int) -> LambdaLR:
    """A per-step scheduler (call ``.step()`` after every optimizer step). Its state is the
    step count, so a resumed run continues the same schedule."""
    base_lr = max(g.get("initial_lr", g["lr"]) for g in optimizer.param_groups)
    return LambdaLR(optimizer, lr_factor_fn(cfg, lr=base_lr, steps_per_epoch=steps_per_epoch, epochs=epochs))

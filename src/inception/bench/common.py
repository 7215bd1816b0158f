"""What every bench shares: percentiles, device syncs and labels, model options."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import yaml

from .. import accel
from ..errors import UserError


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def align_table(rows: Sequence[Sequence[str]], left: Iterable[int] = (0,)) -> str:
    """``rows`` (the header first) as text columns two spaces apart: the columns in ``left``
    flush left, the rest (figures) flush right; no trailing spaces."""
    left = set(left)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return "\n".join("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in rows)


sync = accel.synchronize   # wait for the device's queued work (a no-op on a CPU)


def device_label(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``, ``npu:0 (Ascend910B3), 8 visible``, ``cpu (2 threads)``:
    any accelerator's own name, and how many of its type there are when more than one."""
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'' if n == 1 else 's'})"
    name = accel.device_name(device)
    if name is None:
        return str(device)
    count = accel.device_count(device.type)
    return f"{device.type}:{accel.device_index(device)} ({name})" + (f", {count} visible" if count > 1 else "")


def parse_model_options(items: Iterable[str] | None) -> dict:
    """``["aux_logits=true", "dropout=0.3"]`` -> ``{"aux_logits": True, "dropout": 0.3}`` (values are YAML)."""
    options = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"model option '{item}' must look like KEY=VALUE, e.g. aux_logits=true")
        try:
            options[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            options[key.strip()] = raw
    return options


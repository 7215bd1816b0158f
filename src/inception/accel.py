"""Device specifics in one place: picking a device, and what each kind of device needs.

Everything that differs between a CPU, a CUDA GPU, an Ascend NPU (``torch_npu``), Apple's
MPS or another accelerator PyTorch knows is decided here; the rest of the package asks
these functions instead of naming device types. The work is done by each device type's own
module (``torch.cuda``, ``torch.npu``, ``torch.xpu``..., from ``torch.get_device_module``):
out-of-tree backends such as ``torch_npu`` implement those modules (synchronize, memory
statistics, RNG states, device names) most completely, while the device-generic
``torch.accelerator`` memory functions need the backend's allocator to be registered with
PyTorch's core, which an out-of-tree backend may not do. ``torch.accelerator`` picks the
device for ``auto``.

Three kinds of device:

* the CPU;
* *discrete* accelerators (CUDA, NPU, XPU...): memory of their own, several to a node, one
  process each under torchrun; host batches are pinned and copied without blocking, DDP
  gets ``device_ids`` and SyncBatchNorm works;
* MPS: Apple's unified memory, one device; no pinning, gloo for collectives.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch

from .errors import UserError

DEVICE_HELP = "auto, cpu, cuda, cuda:N, mps, npu or npu:N"

# Device types whose PyTorch support is a package of its own, imported when the type is asked for.
BACKEND_PACKAGES = {"npu": ("torch_npu", "pip install torch-npu==2.14.0 (needs the Ascend CANN toolkit)")}

# Collective backends by device type; other types: torch.distributed's default for the type, else gloo.
DIST_BACKENDS = {"cuda": "nccl", "npu": "hccl"}

_NAMES = {"cuda": "CUDA device", "npu": "Ascend NPU", "mps": "MPS device", "xpu": "Intel XPU"}

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)   # every device's (torch >= 2.5)


def _kind(device_type: str) -> str:
    return _NAMES.get(device_type, f"'{device_type}' device")


# --------------------------------------------------------------------------------------
# Finding and picking devices

def load_backend(device_type: str, asked: str | None = None) -> None:
    """Import the package that adds ``device_type`` to PyTorch (``torch_npu`` for ``npu``);
    a no-op for built-in types. A missing or broken package is a one-line :class:`UserError`.

    (With ``torch_npu`` installed, ``import torch`` normally imports it already, through
    PyTorch's device-backend autoloading; this covers ``TORCH_DEVICE_BACKEND_AUTOLOAD=0``.)"""
    if device_type not in BACKEND_PACKAGES:
        return
    package, install = BACKEND_PACKAGES[device_type]
    if sys.modules.get(package) is not None:
        return
    asked = asked or device_type
    try:
        importlib.import_module(package)
    except ModuleNotFoundError as e:
        if e.name != package:
            raise UserError(f"device '{asked}': {package} is installed but cannot be imported ({e}); "
                            f"reinstall it ({install}) or use --device cpu") from None
        raise UserError(f"device '{asked}' needs {package}, which is not installed: {install}; "
                        "or use --device cpu") from None
    except Exception as e:   # CANN libraries not found, a torch it does not match, a CUDA build of torch...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"device '{asked}': {package} is installed but cannot be imported ({first}); check the "
                        f"Ascend CANN toolkit set-up (source its set_env.sh) and that torch is the build "
                        f"{package} wants, or use --device cpu") from None


def device_module(device_type: str) -> ModuleType | None:
    """``torch.cuda``, ``torch.npu``, ``torch.mps``, ``torch.cpu``...; None when PyTorch has none
    for ``device_type`` (``meta``, or ``npu`` before ``torch_npu`` is imported)."""
    try:
        return torch.get_device_module(device_type)
    except (RuntimeError, AttributeError, ValueError):
        return None


def is_available(device_type: str) -> bool:
    """Whether a device of this type can be used now (the CPU always can)."""
    if device_type == "cpu":
        return True
    if device_type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    module = device_module(device_type)
    return bool(module is not None and hasattr(module, "is_available") and module.is_available())


def device_count(device_type: str) -> int:
    """Devices of this type this process can see (0 when none; 1 for the CPU and MPS)."""
    if device_type in ("cpu", "mps"):
        return int(is_available(device_type))
    module = device_module(device_type)
    if module is None or not hasattr(module, "device_count") or not is_available(device_type):
        return 0
    return int(module.device_count())


def resolve_device(name: str) -> torch.device:
    """The device called ``name``: ``auto``, ``cpu``, ``cuda[:N]``, ``mps``, ``npu[:N]`` (imports
    ``torch_npu``) or another type PyTorch has a device module for. ``auto`` picks this
    build's accelerator (``torch.accelerator``: CUDA, MPS, an NPU when ``torch_npu`` is
    loaded...) when one is usable, else the CPU. A device that is not there is a clear error."""
    if name == "auto":
        return _auto()
    load_backend(name.split(":", 1)[0], name)
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"device '{name}' is not valid; use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return device
    module = device_module(device.type)
    if module is None:
        raise UserError(f"device '{name}' is not supported; use {DEVICE_HELP}")
    if not is_available(device.type):
        what = "no CUDA GPU is" if device.type == "cuda" else (
            "MPS is not" if device.type == "mps" else f"no {_kind(device.type)} is")
        raise UserError(f"device '{name}' asked for but {what} available; use --device cpu")
    count = device_count(device.type)
    if device.index is not None and device.index >= count:
        raise UserError(f"device '{name}' does not exist: {count} {_kind(device.type)}(s) here")
    return device


def _auto() -> torch.device:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:   # torch >= 2.6
        found = accelerator.current_accelerator(check_available=True)
        return torch.device(found.type) if found is not None else torch.device("cpu")
    for device_type in ("cuda", "mps"):
        if is_available(device_type):
            return torch.device(device_type)
    return torch.device("cpu")


def device_index(device: torch.device) -> int:
    """The index of ``device`` (the type's current device when it has none)."""
    if device.index is not None:
        return device.index
    module = device_module(device.type)
    return int(module.current_device()) if module is not None and hasattr(module, "current_device") else 0


def device_name(device: torch.device) -> str | None:
    """The device's own name (``NVIDIA H100 80GB HBM3``, ``Ascend910B3``); None for the CPU,
    MPS and types whose module cannot tell."""
    if not is_discrete(device):
        return None
    get_name = getattr(device_module(device.type), "get_device_name", None)
    return str(get_name(device_index(device))) if get_name is not None else None


def set_device(device: torch.device) -> None:
    """Make ``device`` this process's current device of its type (discrete accelerators)."""
    if is_discrete(device):
        device_module(device.type).set_device(device)


# --------------------------------------------------------------------------------------
# What each kind of device needs

def is_discrete(device: torch.device) -> bool:
    """An accelerator with memory of its own, several to a node, one per process (CUDA, NPU,
    XPU...): not the CPU, and not MPS (unified memory, one device)."""
    return device.type not in ("cpu", "mps", "meta")


def pin_memory(device: torch.device) -> bool:
    """Pin host batches bound for ``device`` (then copied with ``non_blocking=True``)."""
    return is_discrete(device)


def cpu_features() -> frozenset[str]:
    """What this CPU offers the kernels PyTorch runs, as far as they will use it: ``avx2``,
    ``avx512``, ``avx512_bf16`` (native bf16 dot products), ``amx`` (Intel's AMX tiles); empty
    on CPUs other than x86.

    The vector width is ATen's own (:func:`torch.backends.cpu.get_cpu_capability`, which
    ``ATEN_CPU_CAPABILITY`` lowers); the bf16 units come from ``torch.cpu`` (else
    ``/proc/cpuinfo``) and count only when oneDNN may use them (``ONEDNN_MAX_CPU_ISA`` set to
    an ISA without them turns them off, as it does for oneDNN)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return frozenset()
    capability = torch.backends.cpu.get_cpu_capability()
    found = {"avx2"} if capability in ("AVX2", "AVX512") else set()
    if capability == "AVX512":
        found.add("avx512")
    probe = {name: getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")}
    if all(probe.values()):
        has_bf16, has_amx = bool(probe["avx512_bf16"]()), bool(probe["amx_tile"]())
    else:   # an older torch: the kernel's flags
        flags = _proc_cpu_flags()
        has_bf16, has_amx = "avx512_bf16" in flags, "amx_bf16" in flags
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ("ALL", ""):
        has_amx = has_amx and "AMX" in isa
        has_bf16 = has_bf16 and ("BF16" in isa or "AMX" in isa or "AVX10" in isa)
    if has_bf16 and "avx512" in found:
        found.add("avx512_bf16")
    if has_amx and "avx512" in found:
        found.add("amx")
    return frozenset(found)


def _proc_cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True)
class SpeedDefaults:
    """What a run on a device uses unless told otherwise, and why (:func:`speed_defaults`)."""

    precision: str          # "bf16" or "fp32"
    channels_last: bool
    reason: str             # what on the device decided it

    def describe(self, precision: str, channels_last: bool) -> str:
        """The choice in force (``precision``, ``channels_last``: after a run's own settings)
        and what decided it, in a few words: ``bf16 autocast + channels_last (auto, for this
        CPU's AVX512-BF16)``."""
        layout = "channels_last" if channels_last else "NCHW"
        what = f"{'bf16 autocast' if precision == 'bf16' else precision} + {layout}"
        if (precision, channels_last) == (self.precision, self.channels_last):
            return f"{what} (auto, for {self.reason})"
        return f"{what} (as set; auto here: {self.precision} + " \
               f"{'channels_last' if self.channels_last else 'NCHW'}, for {self.reason})"


def speed_defaults(device: torch.device) -> SpeedDefaults:
    """The precision and memory format that train fastest on ``device`` (``train.precision:
    auto``, ``train.channels_last: null``; eval and ``inception bench`` too).

    * CUDA: channels_last (tensor-core convolutions want NHWC); bf16 autocast on GPUs with
      native bf16 (Ampere and later), else fp32 (TF32).
    * x86 CPUs with AVX-512: channels_last (oneDNN's blocked NHWC kernels; measured 1.27x
      in fp32 on an AMD EPYC, 1.39x on an Intel Xeon); bf16 autocast where the CPU has native
      bf16 (AVX512-BF16 or AMX): 2.0x and 2.5x with channels_last. A CPU with AVX-512 but
      no bf16 units would emulate bf16, slower than fp32: fp32 there.
    * other CPUs (AVX2 only, Arm, Apple), MPS, Ascend NPUs and other types: fp32 NCHW,
      today's path, where nothing is measured."""
    if device.type == "cuda":
        usable = is_available("cuda")
        gpu = device_name(device) if usable else "this GPU"
        if usable and torch.cuda.get_device_capability(device_index(device))[0] >= 8:
            return SpeedDefaults("bf16", True, f"{gpu}'s native bf16")
        return SpeedDefaults("fp32", True, f"{gpu}, which has no native bf16")
    if device.type == "cpu":
        features = cpu_features()
        if "avx512_bf16" in features or "amx" in features:
            units = "AMX" if "amx" in features else "AVX512-BF16"
            return SpeedDefaults("bf16", True, f"this CPU's {units}")
        if "avx512" in features:
            return SpeedDefaults("fp32", True, "this CPU's AVX-512, without native bf16")
        have = ", ".join(sorted(features)).upper() or platform.machine()
        return SpeedDefaults("fp32", False, f"this CPU ({have}), without AVX-512 or native bf16")
    return SpeedDefaults("fp32", False, f"the {_kind(device.type)}, where nothing is measured faster yet")


def resolve_precision(device: torch.device, precision: str) -> str:
    """``precision`` with ``auto`` replaced by :func:`speed_defaults`' choice."""
    return speed_defaults(device).precision if precision == "auto" else precision


def channels_last_default(device: torch.device) -> bool:
    """NHWC by default where :func:`speed_defaults` measured it faster: CUDA, x86 CPUs with
    AVX-512; NCHW elsewhere (Ascend NPUs convert to their own internal layouts whatever the
    input's)."""
    return speed_defaults(device).channels_last


def compile_default(device: torch.device) -> bool:
    """Compile the training step by default on CUDA, where it is measured faster than eager
    (``inception bench gpu-report``); elsewhere eager (on a CPU inductor's compilation takes
    minutes and bf16 + channels_last eager is faster; Ascend NPUs have their own graph mode)."""
    return device.type == "cuda"


def fused_optimizer(device: torch.device | None) -> bool:
    """One fused kernel for the whole optimizer step (SGD, AdamW) on CUDA, where GradScaler
    also hands it the inf check without a host sync; foreach (batched) kernels elsewhere
    (torch_npu's fused optimizer kernels depend on the chip)."""
    return device is not None and device.type == "cuda"


def bf16_supported(device: torch.device) -> bool:
    """Whether autocast can run in bfloat16 on ``device``: always on a CPU; the device module's
    ``is_bf16_supported`` where it has one (CUDA: Ampere or later, or emulated; Ascend: 910B
    and later, not 910A); assumed otherwise."""
    if device.type == "cpu":
        return True
    check = getattr(device_module(device.type), "is_bf16_supported", None)
    return True if check is None else bool(check())


def check_precision(device: torch.device, precision: str) -> None:
    """A :class:`UserError` for ``bf16`` on a device without it (autocast would otherwise
    fail, or on an NPU quietly fall back to fp32)."""
    if precision == "bf16" and not bf16_supported(device):
        raise UserError(f"{device_name(device) or device} does not support bf16; use fp16 precision "
                        "(--precision fp16, or --set train.precision=fp16 for training)")


def dist_backend(device: torch.device) -> str:
    """The ``torch.distributed`` backend for processes on ``device``: ``nccl`` on CUDA, ``hccl``
    on Ascend NPUs, the type's default (``xccl`` on XPU) elsewhere, ``gloo`` on CPU and MPS."""
    if device.type in DIST_BACKENDS:
        return DIST_BACKENDS[device.type]
    defaults = getattr(torch.distributed.Backend, "default_device_backend_map", {})
    return defaults.get(device.type, "gloo") if is_discrete(device) else "gloo"


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on a CPU)."""
    if device.type == "cpu":
        return
    module = device_module(device.type)
    if module is None or not hasattr(module, "synchronize"):
        return
    if device.type == "mps":
        module.synchronize()          # one device, no argument
    else:
        module.synchronize(device)


def timing_event(device: torch.device) -> Callable[[], object] | None:
    """A factory of timing events on ``device`` (``record()``, ``elapsed_time(other)`` in ms),
    for timing queued work without host syncs; None where host timers are used (CPU, MPS)."""
    event = getattr(device_module(device.type), "Event", None) if is_discrete(device) else None
    return None if event is None else (lambda: event(enable_timing=True))


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring :func:`peak_memory` afresh (where it is measured)."""
    reset = getattr(device_module(device.type), "reset_peak_memory_stats", None) if is_discrete(device) else None
    if reset is not None:
        reset(device)


def peak_memory(device: torch.device) -> int | None:
    """Bytes of the largest allocation of tensors on ``device`` since :func:`reset_peak_memory`;
    None where it is not measured (CPU, MPS)."""
    peak = getattr(device_module(device.type), "max_memory_allocated", None) if is_discrete(device) else None
    return int(peak(device)) if peak is not None else None


def tune_for_speed(device: torch.device) -> Callable[[], None]:
    """Set what training runs with on ``device``: on CUDA, cuDNN autotuning and TF32
    convolutions and matmuls. Returns a function that puts the previous settings back."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)

    def restore() -> None:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = flags

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return restore


# --------------------------------------------------------------------------------------
# RNG states (checkpoints)

def _rng_device_types() -> list[str]:
    types = ["cuda", *BACKEND_PACKAGES]
    accelerator = getattr(torch, "accelerator", None)
    current = accelerator.current_accelerator() if accelerator is not None else None
    if current is not None and current.type not in types and current.type != "mps":
        types.append(current.type)
    return types


def rng_states() -> dict[str, list[torch.Tensor]]:
    """``{device type: [RNG state of each device]}`` for every accelerator type whose runtime
    this process started (``"cuda"``, ``"npu"``...); nothing for types never used. Asking
    never imports a backend package nor starts a runtime."""
    out = {}
    for device_type in _rng_device_types():
        module = device_module(device_type)
        if (module is not None and all(hasattr(module, f) for f in ("is_initialized", "get_rng_state_all"))
                and is_available(device_type) and module.is_initialized()):
            out[device_type] = module.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, list[torch.Tensor]]) -> None:
    """Restore :func:`rng_states` where the device type is usable here (other types are
    skipped: a CUDA checkpoint resumes on a CPU), on at most as many devices as there are."""
    for device_type, per_device in states.items():
        module = device_module(device_type)
        if module is None or not hasattr(module, "set_rng_state_all") or not is_available(device_type):
            continue
        module.set_rng_state_all(list(per_device)[:device_count(device_type)])

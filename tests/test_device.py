"""Device handling (inception.accel): the generic path on the CPU, and the Ascend NPU path
against a fake ``torch_npu``.

No Ascend hardware was available. The fake is a package named ``torch_npu`` that does what the
real one does to PyTorch at import time (torch_npu/_init/registry: rename the PrivateUse1
backend to ``npu``, register a ``torch.npu`` device module, register the ``hccl`` collective
backend for ``npu``), with a device module that records what it is asked. Renaming PrivateUse1
is process-wide and irreversible, so the fake runs in a subprocess; its observations come back
as JSON and each test below checks one of them.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from inception import accel
from inception.bench.common import device_label
from inception.engine import distributed as dist_utils
from inception.engine.amp import Precision, StaticLossScaler
from inception.engine.checkpoint import rng_state, set_rng_state
from inception.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"

# --------------------------------------------------------------------------------------
# The generic path on the CPU


def test_cpu_and_auto():
    assert accel.resolve_device("cpu") == torch.device("cpu")
    found = torch.accelerator.current_accelerator(check_available=True)
    assert accel.resolve_device("auto") == (torch.device(found.type) if found else torch.device("cpu"))


def test_auto_prefers_the_builds_accelerator(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda check_available=False: torch.device("xpu") if check_available else None)
    assert accel.resolve_device("auto") == torch.device("xpu")
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)
    assert accel.resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name, message", [
    ("gpu", "device 'gpu' is not valid; use auto, cpu, cuda, cuda:N, mps, npu or npu:N"),
    ("cuda:x", "is not valid"),
    ("meta", "device 'meta' is not supported"),
])
def test_bad_names_are_user_errors(name, message):
    with pytest.raises(UserError, match=message):
        accel.resolve_device(name)


def test_unavailable_and_missing_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU is available; use --device cpu"):
        accel.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert accel.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match=r"device 'cuda:2' does not exist: 2 CUDA device\(s\) here"):
        accel.resolve_device("cuda:2")


def test_npu_without_torch_npu_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)     # `import torch_npu` fails as if not installed
    with pytest.raises(UserError) as err:
        accel.resolve_device("npu:0")
    assert str(err.value) == ("device 'npu:0' needs torch_npu, which is not installed: pip install "
                              "torch-npu==2.14.0 (needs the Ascend CANN toolkit); or use --device cpu")


def test_npu_with_a_broken_torch_npu(tmp_path, monkeypatch):
    # What the real package raises on a CUDA build of torch (torch_npu/__init__.py).
    (tmp_path / "torch_npu").mkdir()
    (tmp_path / "torch_npu" / "__init__.py").write_text(
        'raise RuntimeError("Two accelerators cannot be used at the same time in PyTorch: npu and cuda.\\n[ERROR]")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    with pytest.raises(UserError, match=r"torch_npu is installed but cannot be imported \(Two accelerators cannot "
                                        r"be used at the same time in PyTorch: npu and cuda.\); check the Ascend"):
        accel.resolve_device("npu")
    assert "torch_npu" not in sys.modules


@pytest.mark.parametrize("device, discrete, backend, channels_last, fused", [
    ("cpu", False, "gloo", "avx512" in accel.cpu_features(), False),
    ("mps", False, "gloo", False, False),
    ("cuda", True, "nccl", True, True),
    ("xpu", True, "xccl", False, False),
])
def test_policies_by_device_type(device, discrete, backend, channels_last, fused):
    d = torch.device(device)
    assert accel.is_discrete(d) is discrete and accel.pin_memory(d) is discrete
    assert accel.dist_backend(d) == backend
    assert accel.channels_last_default(d) is channels_last
    assert accel.fused_optimizer(d) is fused


# The CPU rules, for each kind of CPU seen: what decides them is the features, faked here.
@pytest.mark.parametrize("features, precision, channels_last, reason", [
    ({"avx2", "avx512", "avx512_bf16", "amx"}, "bf16", True, "this CPU's AMX"),              # Intel Sapphire Rapids
    ({"avx2", "avx512", "avx512_bf16"}, "bf16", True, "this CPU's AVX512-BF16"),             # AMD Zen 4 and later
    ({"avx2", "avx512"}, "fp32", True, "this CPU's AVX-512, without native bf16"),           # Intel Skylake-SP
    ({"avx2"}, "fp32", False, "this CPU (AVX2), without AVX-512 or native bf16"),             # today's path
    (set(), "fp32", False, "without AVX-512 or native bf16"),                                # Arm, Apple: today's path
])
def test_cpu_speed_defaults_follow_the_features(monkeypatch, features, precision, channels_last, reason):
    monkeypatch.setattr(accel, "cpu_features", lambda: frozenset(features))
    d = accel.speed_defaults(torch.device("cpu"))
    assert (d.precision, d.channels_last) == (precision, channels_last) and reason in d.reason
    assert accel.channels_last_default(torch.device("cpu")) is channels_last
    assert accel.resolve_precision(torch.device("cpu"), "auto") == precision
    assert accel.resolve_precision(torch.device("cpu"), "fp16") == "fp16"
    assert d.describe(precision, channels_last).endswith(f"(auto, for {d.reason})")
    if (precision, channels_last) != ("fp32", False):
        assert d.describe("fp32", False) == (f"fp32 + NCHW (as set; auto here: {precision} + "
                                             f"{'channels_last' if channels_last else 'NCHW'}, for {d.reason})")


def test_cpu_features_honour_the_isa_caps(monkeypatch):
    """ATen's capability (ATEN_CPU_CAPABILITY lowers it) gives the vector width; the bf16 units
    count only when oneDNN may use them (ONEDNN_MAX_CPU_ISA)."""
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert accel.cpu_features() == {"avx2", "avx512", "avx512_bf16", "amx"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert accel.cpu_features() == {"avx2", "avx512", "avx512_bf16"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert accel.cpu_features() == {"avx2", "avx512"}
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert accel.cpu_features() == {"avx2"}       # bf16 units without AVX-512 kernels: not used
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert accel.cpu_features() == frozenset()


def test_speed_defaults_of_other_devices(monkeypatch):
    monkeypatch.setattr(accel, "is_available", lambda t: t == "cuda")
    monkeypatch.setattr(accel, "device_name", lambda d: "NVIDIA H200")
    monkeypatch.setattr(accel, "device_index", lambda d: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    d = accel.speed_defaults(torch.device("cuda"))
    assert (d.precision, d.channels_last, d.reason) == ("bf16", True, "NVIDIA H200's native bf16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (7, 0))
    assert accel.speed_defaults(torch.device("cuda")).precision == "fp32"     # a V100: fp16 is one flag away
    d = accel.speed_defaults(torch.device("mps"))
    assert (d.precision, d.channels_last) == ("fp32", False) and "MPS" in d.reason


def test_cpu_measurements():
    cpu = torch.device("cpu")
    accel.synchronize(cpu)
    accel.reset_peak_memory(cpu)
    assert accel.peak_memory(cpu) is None and accel.timing_event(cpu) is None
    assert accel.device_name(cpu) is None and accel.device_count("cpu") == 1
    assert device_label(cpu) == f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"


def test_bf16_on_a_device_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla P100")
    with pytest.raises(UserError, match="Tesla P100 does not support bf16; use fp16"):
        Precision("bf16", torch.device("cuda:0"))
    assert Precision("bf16", torch.device("cpu")).dtype == torch.bfloat16


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_guard_scaler_follows_the_optimizer():
    assert isinstance(Precision("fp32", torch.device("cpu"), guard=True).scaler, StaticLossScaler)
    assert isinstance(Precision("fp32", torch.device("cuda"), guard=True).scaler, torch.amp.GradScaler)


def test_sync_bn_needs_accelerators():
    with pytest.raises(UserError, match="train.sync_bn needs CUDA or NPU devices"):
        dist_utils.check_sync_bn(torch.device("cpu"))
    dist_utils.check_sync_bn(torch.device("cuda", 0))


def test_checkpoint_rng_keeps_reading_cuda_states(monkeypatch):
    """Checkpoints keep the ``cuda`` key, and one from a CUDA machine resumes on a CPU."""
    state = rng_state()
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    set_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2})
    assert len(restored) == 1 and len(restored[0]) == 1      # the states of the devices there are
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    set_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)]})   # skipped, no error
    assert len(restored) == 1


# --------------------------------------------------------------------------------------
# A fake Ascend NPU, in a subprocess

FAKE_TORCH_NPU = '''
"""A stand-in for torch_npu: what the real package does to torch when imported, no device."""
import types

import torch
import torch.distributed as dist

calls = []
state = {"rng": [torch.full((8,), 1, dtype=torch.uint8), torch.full((8,), 2, dtype=torch.uint8)], "bf16": False}

npu = types.ModuleType("torch_npu.npu")
npu.is_available = lambda: True
npu.device_count = lambda: 2
npu.current_device = lambda: 0
npu.is_initialized = lambda: True
npu.get_device_name = lambda index=None: f"Ascend910B3 #{index}"
npu.set_device = lambda device: calls.append(("set_device", str(device)))
npu.synchronize = lambda device=None: calls.append(("synchronize", str(device)))
npu.reset_peak_memory_stats = lambda device=None: calls.append(("reset_peak_memory_stats", str(device)))
npu.max_memory_allocated = lambda device=None: 123 * 2**20
npu.get_rng_state_all = lambda: [t.clone() for t in state["rng"]]
npu.set_rng_state_all = lambda states: state.update(rng=[t.clone() for t in states])
npu.is_bf16_supported = lambda: state["bf16"]
npu.get_amp_supported_dtype = lambda: [torch.float16, torch.float32] + ([torch.bfloat16] if state["bf16"] else [])


class Event:
    def __init__(self, enable_timing=False):
        self.enable_timing = enable_timing


npu.Event = Event

torch.utils.rename_privateuse1_backend("npu")
torch._register_device_module("npu", npu)
dist.Backend.register_backend("hccl", lambda *args: None, extended_api=True, devices=["npu"])
'''

PROBE = '''
import io, json, os, sys, traceback
import torch
import torch.distributed as dist

from inception import accel
from inception.bench.common import device_label
from inception.bench.model import peak_flops
from inception.config import OptimCfg
from inception.engine import distributed as dist_utils
from inception.engine.amp import Precision
from inception.engine.checkpoint import rng_state, set_rng_state
from inception.engine.optim import build_optimizer
from inception.errors import UserError

out = {}


def npu(index):   # "npu" parses once torch_npu is imported
    return torch.device("npu", index)


def resolve():
    accel.resolve_device("cpu")
    accel.rng_states()
    out["imported_before"] = "torch_npu" in sys.modules
    out["npu"] = str(accel.resolve_device("npu"))
    out["imported_after"] = "torch_npu" in sys.modules
    out["npu:1"] = str(accel.resolve_device("npu:1"))
    try:
        accel.resolve_device("npu:2")
    except UserError as e:
        out["npu:2"] = str(e)
    out["auto"] = str(accel.resolve_device("auto"))


def policies():
    out["backend"] = accel.dist_backend(npu(0))
    out["discrete"] = [accel.is_discrete(npu(0)), accel.pin_memory(npu(0)), accel.channels_last_default(npu(0)),
                       accel.fused_optimizer(npu(0))]
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimCfg(name="sgd", lr=0.1), npu(0))
    out["optimizer"] = [opt.defaults.get("foreach"), opt.defaults.get("fused")]


def bench():
    import torch_npu

    torch_npu.calls.clear()
    out["label"] = device_label(npu(1))
    out["peak_flops"] = peak_flops(npu(0), "fp16")
    accel.synchronize(npu(1))
    accel.reset_peak_memory(npu(1))
    out["peak_memory"] = accel.peak_memory(npu(1))
    out["timing_event"] = accel.timing_event(npu(1))().enable_timing    # NPU events, not host timers
    out["calls"] = list(torch_npu.calls)


def distributed():   # one process of two under torchrun, on its local rank's NPU
    import torch_npu

    torch_npu.calls.clear()
    os.environ.update(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1")
    seen = {}
    dist.init_process_group = lambda **kw: seen.update({k: str(v) for k, v in kw.items()})
    info, device = dist_utils.init_distributed(torch.device("npu"))
    out["dist"] = {"device": str(device), "backend": seen.get("backend"), "device_id": seen.get("device_id"),
                   "calls": list(torch_npu.calls)}


def precision():
    import torch_npu

    p16 = Precision("fp16", npu(0))
    out["fp16_scaler"] = [type(p16.scaler).__name__, getattr(p16.scaler, "_device", None)]
    with p16.autocast():
        out["fp16_autocast"] = [torch.is_autocast_enabled("npu"), str(torch.get_autocast_dtype("npu"))]
    out["guard_scaler"] = type(Precision("fp32", npu(0), guard=True).scaler).__name__
    torch_npu.state["bf16"] = False
    try:
        Precision("bf16", npu(0))
    except UserError as e:
        out["bf16_unsupported"] = str(e)
    torch_npu.state["bf16"] = True
    with Precision("bf16", npu(0)).autocast():
        out["bf16_autocast"] = [torch.is_autocast_enabled("npu"), str(torch.get_autocast_dtype("npu"))]


def rng():   # through a checkpoint, saved and loaded as the trainer does (weights_only)
    import torch_npu

    buf = io.BytesIO()
    torch.save({"rng": rng_state()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)["rng"]
    out["rng_keys"] = sorted(saved)
    out["rng_saved"] = [t.tolist() for t in saved.get("npu", [])]
    torch_npu.state["rng"] = [torch.zeros(8, dtype=torch.uint8)] * 2
    set_rng_state(saved)
    out["rng_restored"] = [t.tolist() for t in torch_npu.state["rng"]]


for section in (resolve, policies, bench, distributed, precision, rng):
    try:
        section()
    except Exception:
        out[section.__name__ + "_error"] = traceback.format_exc()
print("PROBE " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def fake_npu(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_npu")
    (root / "torch_npu").mkdir()
    (root / "torch_npu" / "__init__.py").write_text(textwrap.dedent(FAKE_TORCH_NPU))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(SRC), os.environ.get("PYTHONPATH", "")])}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_USE_AGENT_STORE"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("PROBE "):])


def _section(fake_npu: dict, name: str) -> dict:
    """The probe's observations, failing with its traceback when section ``name`` raised."""
    assert name + "_error" not in fake_npu, fake_npu[name + "_error"]
    return fake_npu


def test_npu_imports_torch_npu_when_asked_for_only(fake_npu):
    fake_npu = _section(fake_npu, "resolve")
    assert fake_npu["imported_before"] is False      # cpu, and checkpoint RNG states, leave it alone
    assert fake_npu["npu"] == "npu" and fake_npu["imported_after"] is True


def test_npu_indices_and_auto(fake_npu):
    fake_npu = _section(fake_npu, "resolve")
    assert fake_npu["npu:1"] == "npu:1"
    assert fake_npu["npu:2"] == "device 'npu:2' does not exist: 2 Ascend NPU(s) here"
    assert fake_npu["auto"] == "npu"                   # torch.accelerator knows the NPU once torch_npu is in


def test_npu_policies(fake_npu):
    fake_npu = _section(fake_npu, "policies")
    assert fake_npu["backend"] == "hccl"
    assert fake_npu["discrete"] == [True, True, False, False]   # pinned copies; NCHW; foreach optimizers
    assert fake_npu["optimizer"] == [True, None]                # foreach, not fused


def test_npu_bench_figures(fake_npu):
    fake_npu = _section(fake_npu, "bench")
    assert fake_npu["label"] == "npu:1 (Ascend910B3 #1), 2 visible"
    assert fake_npu["peak_flops"] is None                        # not in the GPU table: MFU needs --peak-tflops
    assert fake_npu["peak_memory"] == 123 * 2**20 and fake_npu["timing_event"] is True
    assert fake_npu["calls"] == [["synchronize", "npu:1"], ["reset_peak_memory_stats", "npu:1"]]


def test_npu_distributed(fake_npu):
    fake_npu = _section(fake_npu, "distributed")
    assert fake_npu["dist"] == {"device": "npu:1", "backend": "hccl", "device_id": "npu:1",
                                "calls": [["set_device", "npu:1"]]}


def test_npu_mixed_precision(fake_npu):
    fake_npu = _section(fake_npu, "precision")
    assert fake_npu["fp16_scaler"] == ["GradScaler", "npu"]
    assert fake_npu["fp16_autocast"] == [True, "torch.float16"]
    assert fake_npu["guard_scaler"] == "StaticLossScaler"
    assert fake_npu["bf16_unsupported"].startswith("Ascend910B3 #0 does not support bf16; use fp16")
    assert fake_npu["bf16_autocast"] == [True, "torch.bfloat16"]


def test_npu_rng_states_round_trip(fake_npu):
    fake_npu = _section(fake_npu, "rng")
    assert fake_npu["rng_keys"] == ["npu", "numpy", "python", "torch"]
    assert fake_npu["rng_saved"] == [[1] * 8, [2] * 8]
    assert fake_npu["rng_restored"] == fake_npu["rng_saved"]

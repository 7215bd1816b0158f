"""Weights from the vendor model zoos, read without their frameworks installed.

* MindSpore ``.ckpt``: a protobuf ``Checkpoint`` message of ``Value{tag, tensor{dims,
  tensor_type, tensor_content}}`` records (a tensor too large for one record is split over
  several with the same tag), decoded with the ``protobuf`` runtime from a descriptor built
  here; MindSpore's ``format="safetensors"`` files are plain safetensors with MindSpore's
  names.
* Paddle / PaddleClas ``.pdparams``: a pickle of a dict of numpy arrays, read by an
  unpickler that resolves only numpy's array reconstruction (and plain containers): any
  other global in the file, e.g. one that would run code, is refused before it is looked up.
* bfloat16 weights (a model trained or cast in bf16): MindSpore writes them as ``BFloat16``
  records, Paddle as ``uint16`` arrays of the bf16 bit patterns (numpy has no bfloat16);
  both are read as ``torch.bfloat16`` (exact in a float32 model).

The layouts of four models are recognised from their names and renamed to ours:

==========================  ===============================================================
MindSpore GoogLeNet         ``googlenet`` with ``variant="mindspore"`` (TensorFlow ``same``
                            padding); ``conv.weight``, ``bn.gamma/beta/moving_mean/
                            moving_variance``, ``classifier``
MindSpore InceptionV4       ``inception_v4`` with ``variant="mindspore"`` (BatchNorm eps
                            1e-5); its head BatchNorm1d -> dense -> BatchNorm1d is folded
                            into ``last_linear`` (exact in eval mode; it ends in a
                            log-softmax, which a softmax of our logits equals)
PaddleClas GoogLeNet        ``googlenet_v1``; ``_conv.weight``, Linear weights stored
                            (in, out); the inference-time dropout scaling
                            (``downscale_in_infer``) folded into the classifiers
PaddleClas InceptionV4      ``inception_v4`` with ``variant="paddleclas"``;
                            ``_batch_norm.weight/bias/_mean/_variance``
==========================  ===============================================================

Optimizer and training state that MindSpore stores beside the weights and Paddle's
``StructuredToParameterName@@`` table are skipped: the optimizers' per-parameter slots, named
``<slot>.<parameter>`` (Momentum's ``moments.*``, RMSProp's ``mean_square.*`` and ``moment.*``
as the zoo's InceptionV4 recipe writes them, Adam's ``adam_m.*``...), and the scalars
(``learning_rate``, ``global_step``, ``epoch_num``...). Any other name left over is an error
that lists it.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError
from ..safe_pickle import UnsafePickleError, load_numpy_pickle

# ---------------------------------------------------------------------------------------------
# MindSpore .ckpt

_MS_DTYPES = {
    "Float16": np.float16, "Float32": np.float32, "Float64": np.float64,
    "Int8": np.int8, "Int16": np.int16, "Int32": np.int32, "Int64": np.int64,
    "UInt8": np.uint8, "UInt16": np.uint16, "UInt32": np.uint32, "UInt64": np.uint64,
    "Bool": np.bool_,
}
_BF16 = "BFloat16"                      # no numpy dtype: read as 16-bit patterns, viewed as torch.bfloat16
_checkpoint_class = None


def _bf16(bits: np.ndarray) -> Tensor:
    """bfloat16 values from their 16-bit patterns (any 16-bit integer array)."""
    return torch.from_numpy(np.ascontiguousarray(bits).view(np.int16).copy()).view(torch.bfloat16)


def _mindspore_message():
    """The ``Checkpoint`` message class of MindSpore's ``checkpoint.proto`` (proto2), built
    from a descriptor (field numbers are all the wire format needs)."""
    global _checkpoint_class
    if _checkpoint_class is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: PLC0415 - only for .ckpt

        F = descriptor_pb2.FieldDescriptorProto
        proto = descriptor_pb2.FileDescriptorProto(name="inception/mindspore_checkpoint.proto",
                                                   package="inception_mindspore", syntax="proto2")
        tensor = proto.message_type.add(name="TensorProto")
        tensor.field.add(name="dims", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
        tensor.field.add(name="tensor_type", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        tensor.field.add(name="tensor_content", number=3, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
        ckpt = proto.message_type.add(name="Checkpoint")
        value = ckpt.nested_type.add(name="Value")
        value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        value.field.add(name="tensor", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                        type_name=".inception_mindspore.TensorProto")
        ckpt.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                       type_name=".inception_mindspore.Checkpoint.Value")
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto)
        message = pool.FindMessageTypeByName("inception_mindspore.Checkpoint")
        _checkpoint_class = message_factory.GetMessageClass(message)
    return _checkpoint_class


def read_mindspore_ckpt(path: str | Path) -> dict[str, Tensor]:
    """Every numeric tensor of a MindSpore ``.ckpt`` file, by its MindSpore name."""
    path = Path(path)
    from google.protobuf.message import DecodeError  # noqa: PLC0415 - protobuf comes with onnx; only for .ckpt

    msg = _mindspore_message()()
    try:
        msg.ParseFromString(path.read_bytes())
    except DecodeError:
        raise CheckpointError(f"'{path}' is not a MindSpore checkpoint (not a protobuf Checkpoint message; "
                              "an encrypted checkpoint must be decrypted with MindSpore first)") from None
    parts: dict[str, list] = {}
    for value in msg.value:
        if not value.tag:
            continue
        t = value.tensor
        parts.setdefault(value.tag, []).append((t.tensor_type, list(t.dims), t.tensor_content))
    if not parts:
        raise CheckpointError(f"'{path}' holds no tensors; is it a MindSpore checkpoint?")
    out = {}
    for tag, pieces in parts.items():
        kind, dims = pieces[0][0], pieces[0][1]
        if kind not in _MS_DTYPES and kind != _BF16:
            continue                     # strings ("str") and other non-numeric entries
        dtype = np.dtype(np.uint16 if kind == _BF16 else _MS_DTYPES[kind])
        data_bytes = sum(len(p[2]) for p in pieces)
        if any(d < 0 for d in dims) or len(dims) > 8:
            raise CheckpointError(f"'{path}': tensor '{tag}' declares the shape {dims} (negative or more than 8 "
                                  "dimensions): a damaged or hostile checkpoint")
        count = math.prod(dims)          # Python integers: no int64 overflow
        if count * dtype.itemsize != data_bytes:
            raise CheckpointError(f"'{path}': tensor '{tag}' has {data_bytes // dtype.itemsize:,} values for shape "
                                  f"{dims} (a truncated or damaged checkpoint)")
        data = b"".join(p[2] for p in pieces)
        array = np.frombuffer(data, dtype=dtype)
        array = array.reshape(dims)
        out[tag] = _bf16(array) if kind == _BF16 else torch.from_numpy(array.copy())
    return out


# ---------------------------------------------------------------------------------------------
# Paddle .pdparams

# Beyond plain numpy arrays, a .pdparams pickle needs only these (paddle.save's OrderedDict and
# its (name, array) tuples).
_PADDLE_GLOBALS = (("collections", "OrderedDict"), ("builtins", "tuple"), ("__builtin__", "tuple"))


def read_pdparams(path: str | Path) -> dict[str, Tensor]:
    """The arrays of a Paddle ``.pdparams`` file, by Paddle's structured names, without
    running any code the file might carry (the project's one restricted unpickler:
    :func:`~inception.safe_pickle.load_numpy_pickle`)."""
    path = Path(path)
    try:
        obj = load_numpy_pickle(path.read_bytes(), extra_globals=_PADDLE_GLOBALS, encoding="latin1")
    except UnsafePickleError as e:
        raise CheckpointError(f"'{path}' is not loaded, for safety: it asks for {e}; a .pdparams file only needs "
                              "numeric numpy arrays") from None
    except Exception as e:   # a truncated or foreign pickle: EOFError, UnpicklingError, ValueError, ...
        raise CheckpointError(f"'{path}' is not a readable .pdparams pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"'{path}' holds a {type(obj).__name__}, not a Paddle state dict")
    out = {}
    for key, value in obj.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]                      # paddle.save's (name, array) reduction of a Tensor
        if isinstance(value, np.ndarray) and value.dtype == np.uint16:
            out[str(key)] = _bf16(value)          # Paddle's bfloat16 (its only uint16 arrays)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            out[str(key)] = torch.from_numpy(np.ascontiguousarray(value).copy())
    if not out:
        raise CheckpointError(f"'{path}' holds no arrays; is it a Paddle state dict (.pdparams)?")
    return out


# ---------------------------------------------------------------------------------------------
# Name maps

#: How each source is named in messages.
LABELS = {"mindspore": "MindSpore", "paddle": "PaddleClas"}

@dataclass
class VendorWeights:
    """A vendor file renamed to one of our models."""

    source: str                                   # "mindspore" or "paddle"
    arch: str
    options: dict
    state_dict: dict[str, Tensor]
    skipped: list[str] = field(default_factory=list)   # optimizer/training state left out

    @property
    def label(self) -> str:
        return LABELS[self.source]


_BN_MS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_BN_PADDLE = {"weight": "weight", "bias": "bias", "_mean": "running_mean", "_variance": "running_var"}
# Besides any "<slot>.<one of the model's parameters>" (an optimizer's per-parameter state):
_MS_TRAINING_STATE = ("moments.", "accum.", "adam_m.", "adam_v.", "momentum_", "global_step", "learning_rate",
                      "momentum", "scale_sense", "current_iterator_step", "last_overflow_iterator_step",
                      "epoch_num", "step_num", "loss_scale", "beta1_power", "beta2_power")


class _Mapper:
    """Collects ``vendor name -> (our name, transform)`` for one layout."""

    def __init__(self) -> None:
        self.names: dict[str, tuple[str, str]] = {}
        self.bns: list[str] = []

    def param(self, src: str, dst: str, how: str = "") -> None:
        self.names[src] = (dst, how)

    def ms_convbn(self, src: str, dst: str, conv: str = "conv", bn: str = "bn") -> None:
        self.param(f"{src}.{conv}.weight", f"{dst}.conv.weight")
        for a, b in _BN_MS.items():
            self.param(f"{src}.{bn}.{a}", f"{dst}.bn.{b}")
        self.bns.append(f"{dst}.bn")

    def paddle_convbn(self, src: str, dst: str) -> None:
        self.param(f"{src}._conv.weight", f"{dst}.conv.weight")
        for a, b in _BN_PADDLE.items():
            self.param(f"{src}._batch_norm.{a}", f"{dst}.bn.{b}")
        self.bns.append(f"{dst}.bn")

    def paddle_linear(self, src: str, dst: str, scale: float = 1.0) -> None:
        self.param(f"{src}.weight", f"{dst}.weight", f"transpose*{scale}")
        self.param(f"{src}.bias", f"{dst}.bias")


_GOOGLENET_BLOCKS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


def _mindspore_googlenet() -> _Mapper:
    m = _Mapper()
    for name in ("conv1", "conv2", "conv3"):
        m.ms_convbn(name, name)
    for b in _GOOGLENET_BLOCKS:
        src, dst = f"block{b}", f"inception{b}"
        m.ms_convbn(f"{src}.b1", f"{dst}.branch1")
        for i in (0, 1):
            m.ms_convbn(f"{src}.b2.{i}", f"{dst}.branch2.{i}")
            m.ms_convbn(f"{src}.b3.{i}", f"{dst}.branch3.{i}")
        m.ms_convbn(f"{src}.b4", f"{dst}.branch4.1")
    m.param("classifier.weight", "fc.weight")
    m.param("classifier.bias", "fc.bias")
    return m


def _paddle_googlenet() -> _Mapper:
    m = _Mapper()
    for src, dst in (("_conv", "conv1"), ("_conv_1", "conv2"), ("_conv_2", "conv3")):
        m.param(f"{src}._conv.weight", f"{dst}.weight")
    branches = {"_conv1": "branch1", "_conv3r": "branch2.0", "_conv3": "branch2.1", "_conv5r": "branch3.0",
                "_conv5": "branch3.1", "_convprj": "branch4.1"}
    for b in _GOOGLENET_BLOCKS:
        for src, dst in branches.items():
            m.param(f"_ince{b}.{src}._conv.weight", f"inception{b}.{dst}.weight")
    # Paddle's dropout scales by (1 - p) at inference: 0.4 before the classifier, 0.7 in the aux heads.
    m.paddle_linear("_fc_out", "fc", scale=0.6)
    for i in (1, 2):
        m.param(f"_conv_o{i}._conv.weight", f"aux{i}.conv.weight")
        m.paddle_linear(f"_fc_o{i}", f"aux{i}.fc1")
        m.paddle_linear(f"_out{i}", f"aux{i}.fc2", scale=0.3)
    return m


def _mindspore_inception_v4() -> _Mapper:
    """MindSpore's ``features`` holds Stem, 4 A, RedA, 7 B, RedB, 3 C; ours holds the stem's
    six parts first, so block i of theirs (i >= 1) is block i + 5 of ours."""
    m = _Mapper()

    def cba(src: str, dst: str) -> None:            # their Conv2d wraps nn.Conv2dBnAct (conv, batchnorm)
        m.ms_convbn(f"{src}.conv", dst, conv="conv", bn="batchnorm")

    s = "features.0"
    cba(f"{s}.conv2d_1a_3x3", "features.0")
    cba(f"{s}.conv2d_2a_3x3", "features.1")
    cba(f"{s}.conv2d_2b_3x3", "features.2")
    cba(f"{s}.mixed_3a_branch_1", "features.3.conv")
    for i in range(2):
        cba(f"{s}.mixed_4a_branch_0.{i}", f"features.4.branch0.{i}")
    for i in range(4):
        cba(f"{s}.mixed_4a_branch_1.{i}", f"features.4.branch1.{i}")
    cba(f"{s}.mixed_5a_branch_0", "features.5.conv")
    for j in range(1, 17):
        src, dst = f"features.{j}", f"features.{j + 5}"
        if j <= 4 or 6 <= j <= 12:                   # InceptionA / InceptionB
            n1, n2 = (2, 3) if j <= 4 else (3, 5)
            cba(f"{src}.branch_0", f"{dst}.branch0")
            for i in range(n1):
                cba(f"{src}.branch_1.{i}", f"{dst}.branch1.{i}")
            for i in range(n2):
                cba(f"{src}.branch_2.{i}", f"{dst}.branch2.{i}")
            cba(f"{src}.branch_3.1", f"{dst}.branch3.1")
        elif j == 5:                                 # ReductionA
            cba(f"{src}.branch_0", f"{dst}.branch0")
            for i in range(3):
                cba(f"{src}.branch_1.{i}", f"{dst}.branch1.{i}")
        elif j == 13:                                # ReductionB
            for i in range(2):
                cba(f"{src}.branch_0.{i}", f"{dst}.branch0.{i}")
            for i in range(4):
                cba(f"{src}.branch_1.{i}", f"{dst}.branch1.{i}")
        else:                                        # InceptionC
            for a, b in (("branch_0", "branch0"), ("branch_1", "branch1_0"), ("branch_1_1", "branch1_1a"),
                         ("branch_1_2", "branch1_1b"), ("branch_2.0", "branch2_0"), ("branch_2.1", "branch2_1"),
                         ("branch_2.2", "branch2_2"), ("branch_2_1", "branch2_3a"), ("branch_2_2", "branch2_3b"),
                         ("branch_3.1", "branch3.1")):
                cba(f"{src}.{a}", f"{dst}.{b}")
    # The head (bn0 -> dense -> batchnorm) is folded by _fold_mindspore_v4_head.
    for name in ("bn0.gamma", "bn0.beta", "bn0.moving_mean", "bn0.moving_variance", "softmax.dense.weight",
                 "softmax.dense.bias", "softmax.batchnorm.gamma", "softmax.batchnorm.beta",
                 "softmax.batchnorm.moving_mean", "softmax.batchnorm.moving_variance"):
        m.param(name, "head:" + name)
    return m


def _paddle_inception_v4() -> _Mapper:
    m = _Mapper()
    stem = {"_conv_1": "features.0", "_conv_2": "features.1", "_conv_3": "features.2", "_conv2": "features.3.conv",
            "_conv1_1": "features.4.branch0.0", "_conv1_2": "features.4.branch0.1",
            "_conv2_1": "features.4.branch1.0", "_conv2_2": "features.4.branch1.1",
            "_conv2_3": "features.4.branch1.2", "_conv2_4": "features.4.branch1.3", "_conv3": "features.5.conv"}
    for src, dst in stem.items():
        m.paddle_convbn(f"_inception_stem.{src}", dst)
    blocks = {
        "A": {"_conv1": "branch3.1", "_conv2": "branch0", "_conv3_1": "branch1.0", "_conv3_2": "branch1.1",
              "_conv4_1": "branch2.0", "_conv4_2": "branch2.1", "_conv4_3": "branch2.2"},
        "B": {"_conv1": "branch3.1", "_conv2": "branch0", "_conv3_1": "branch1.0", "_conv3_2": "branch1.1",
              "_conv3_3": "branch1.2", **{f"_conv4_{i + 1}": f"branch2.{i}" for i in range(5)}},
        "C": {"_conv1": "branch3.1", "_conv2": "branch0", "_conv3_0": "branch1_0", "_conv3_1": "branch1_1a",
              "_conv3_2": "branch1_1b", "_conv4_0": "branch2_0", "_conv4_00": "branch2_1", "_conv4_000": "branch2_2",
              "_conv4_1": "branch2_3a", "_conv4_2": "branch2_3b"},
    }
    for kind, first, count in (("A", 6, 4), ("B", 11, 7), ("C", 19, 3)):
        for i in range(count):
            for src, dst in blocks[kind].items():
                m.paddle_convbn(f"_inception{kind}_{i + 1}.{src}", f"features.{first + i}.{dst}")
    for src, dst in {"_conv2": "branch0", "_conv3_1": "branch1.0", "_conv3_2": "branch1.1",
                     "_conv3_3": "branch1.2"}.items():
        m.paddle_convbn(f"_reductionA.{src}", f"features.10.{dst}")
    for src, dst in {"_conv2_1": "branch0.0", "_conv2_2": "branch0.1", "_conv3_1": "branch1.0",
                     "_conv3_2": "branch1.1", "_conv3_3": "branch1.2", "_conv3_4": "branch1.3"}.items():
        m.paddle_convbn(f"_reductionB.{src}", f"features.18.{dst}")
    m.paddle_linear("out", "last_linear", scale=0.8)          # Paddle's dropout 0.2, scaled at inference
    return m


# key that only this layout has -> (source, our arch, model options, mapper)
_VENDOR_LAYOUTS = {
    "block3a.b1.conv.weight": ("mindspore", "googlenet", {"variant": "mindspore"}, _mindspore_googlenet),
    "features.0.conv2d_1a_3x3.conv.conv.weight": ("mindspore", "inception_v4", {"variant": "mindspore"},
                                                  _mindspore_inception_v4),
    "_ince3a._conv1._conv.weight": ("paddle", "googlenet_v1", {}, _paddle_googlenet),
    "_inception_stem._conv_1._conv.weight": ("paddle", "inception_v4", {"variant": "paddleclas"},
                                             _paddle_inception_v4),
}


def detect_vendor(raw: dict[str, Tensor]) -> str | None:
    """The distinctive key of the vendor layout ``raw`` has, or None."""
    return next((key for key in _VENDOR_LAYOUTS if key in raw), None)


def _fold_mindspore_v4_head(head: dict[str, Tensor]) -> dict[str, Tensor]:
    """``BatchNorm1d(eps 1e-3) -> Linear -> BatchNorm1d(eps 1e-5)`` as one Linear (eval mode)."""
    g = {k.split("head:")[-1]: v.double() for k, v in head.items()}
    s0 = g["bn0.gamma"] / torch.sqrt(g["bn0.moving_variance"] + 1e-3)
    t0 = g["bn0.beta"] - g["bn0.moving_mean"] * s0
    w, b = g["softmax.dense.weight"], g["softmax.dense.bias"]
    s1 = g["softmax.batchnorm.gamma"] / torch.sqrt(g["softmax.batchnorm.moving_variance"] + 1e-5)
    weight = s1[:, None] * w * s0[None, :]
    bias = s1 * (w @ t0 + b - g["softmax.batchnorm.moving_mean"]) + g["softmax.batchnorm.beta"]
    return {"last_linear.weight": weight.float(), "last_linear.bias": bias.float()}


def to_ours(raw: dict[str, Tensor], path: str | Path) -> VendorWeights:
    """Rename a vendor state dict (MindSpore or Paddle names) to our model's."""
    key = detect_vendor(raw)
    if key is None:
        raise CheckpointError(f"'{path}' is not a MindSpore GoogLeNet/InceptionV4 or PaddleClas GoogLeNet/InceptionV4 "
                              f"checkpoint this tool knows (first keys: {', '.join(list(raw)[:3])})")
    source, arch, options, build = _VENDOR_LAYOUTS[key]
    mapper = build()
    out: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    skipped, unknown = [], []
    for name, value in raw.items():
        if name not in mapper.names:
            if source == "paddle" and name.endswith("@@") or source == "mindspore" and (
                    name.startswith(_MS_TRAINING_STATE) or name.partition(".")[2] in mapper.names):
                skipped.append(name)
            else:
                unknown.append(name)
            continue
        dst, how = mapper.names[name]
        if how.startswith("transpose"):          # scaled in float32: a bf16/fp16 product would round again
            value = value.float().t() * float(how.split("*")[1])
        if dst.startswith("head:"):
            head[dst] = value
        else:
            out[dst] = value.contiguous()
    missing = [src for src, (dst, _) in mapper.names.items() if src not in raw]
    if missing or unknown:
        label = LABELS[source]
        problems = ([f"missing {', '.join(missing[:6])}" + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")]
                    if missing else [])
        problems += ([f"unexpected {', '.join(unknown[:6])}" + (f" (+{len(unknown) - 6} more)" if len(unknown) > 6
                                                                else "")] if unknown else [])
        raise CheckpointError(f"'{path}' looks like a {label} {arch} checkpoint but does not fit it "
                              f"({'; '.join(problems)}); is it complete, and from the model zoo's own network?")
    if head:
        out.update(_fold_mindspore_v4_head(head))
    for bn in mapper.bns:
        out[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    return VendorWeights(source, arch, dict(options), out, skipped)


def read_vendor(path: str | Path) -> VendorWeights | None:
    """A MindSpore (``.ckpt``, or safetensors with MindSpore names) or Paddle (``.pdparams``)
    file renamed to our names; None when ``path`` is neither."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ckpt" and not zipfile.is_zipfile(path):    # a zip .ckpt is PyTorch's (Lightning's)
        return to_ours(read_mindspore_ckpt(path), path)
    if suffix in (".pdparams", ".pdparam"):
        return to_ours(read_pdparams(path), path)
    return None

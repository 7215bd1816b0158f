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

The layouts of four models are recognised from their names and renamed to ours, by the vendor
layouts of the model cards (:class:`~.card.WeightLayout`; each table lives in its model file):

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
from .card import SOURCES, WeightLayout, all_cards

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
# Renaming, by the vendor layouts of the model cards (each model file holds its own tables)

#: How each source is named in messages.
LABELS = {source: SOURCES[source] for source in ("mindspore", "paddle")}


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


# Besides any "<slot>.<one of the model's parameters>" (an optimizer's per-parameter state):
_MS_TRAINING_STATE = ("moments.", "accum.", "adam_m.", "adam_v.", "momentum_", "global_step", "learning_rate",
                      "momentum", "scale_sense", "current_iterator_step", "last_overflow_iterator_step",
                      "epoch_num", "step_num", "loss_scale", "beta1_power", "beta2_power")


def detect_vendor(raw: dict[str, Tensor]) -> tuple[str, WeightLayout] | None:
    """``(architecture, vendor layout)`` of the model card whose vendor layout ``raw`` has (by
    the layout's marker key), or None."""
    return next(((card.name, layout) for card in all_cards() for layout in card.layouts
                 if layout.vendor and layout.marker in raw), None)


def vendor_models() -> str:
    """The vendor layouts the cards know, for messages: "MindSpore googlenet, ..."."""
    return ", ".join(f"{layout.label} {card.name}" for card in all_cards() for layout in card.layouts if layout.vendor)


def to_ours(raw: dict[str, Tensor], path: str | Path) -> VendorWeights:
    """Rename a vendor state dict (MindSpore or Paddle names) to our model's."""
    found = detect_vendor(raw)
    if found is None:
        raise CheckpointError(f"'{path}' is not a vendor checkpoint this tool knows ({vendor_models()}; first keys: "
                              f"{', '.join(list(raw)[:3])})")
    arch, layout = found
    source, options, mapper = layout.source, layout.options, layout.renames()
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
        out.update(layout.fold(head))
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

"""Vendor checkpoints (MindSpore .ckpt, Paddle .pdparams) read without their frameworks.

Files are written here in the vendors' formats from our own models through the inverse of
the name maps; the proof against MindSpore and Paddle themselves is tests/interop (make
test-interop)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from inception.errors import CheckpointError
from inception.models import create_model, load_pretrained
from inception.models import googlenet as googlenet_mod
from inception.models import googlenet_v1 as googlenet_v1_mod
from inception.models import inception_v4 as inception_v4_mod
from inception.models import vendor as V
from inception.models.layers import pad_same


def write_ckpt(tensors: dict[str, torch.Tensor], path, split: set[str] = frozenset()) -> None:
    """A MindSpore Checkpoint protobuf; tags in ``split`` are stored in two records, as
    MindSpore does for large tensors."""
    msg = V._mindspore_message()()
    names = {v: k for k, v in V._MS_DTYPES.items()}
    for tag, t in tensors.items():
        a = np.ascontiguousarray(t.detach().numpy())
        data = a.tobytes()
        chunks = [data[: len(data) // 2], data[len(data) // 2:]] if tag in split else [data]
        for chunk in chunks:
            value = msg.value.add()
            value.tag = tag
            value.tensor.dims.extend(a.shape)
            value.tensor.tensor_type = names[a.dtype.type]
            value.tensor.tensor_content = chunk
    path.write_bytes(msg.SerializeToString())


def write_pdparams(arrays: dict[str, np.ndarray], path) -> None:
    """What paddle.save(layer.state_dict()) writes: numpy arrays + the name table."""
    obj = dict(arrays)
    obj["StructuredToParameterName@@"] = {k: f"param_{i}" for i, k in enumerate(arrays)}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def vendor_names(model, build) -> dict[str, torch.Tensor]:
    """Our model's weights under the vendor's names (the inverse of ``build()``'s map)."""
    ours = model.state_dict()
    out = {}
    for src, (dst, how) in build().names.items():
        if dst.startswith("head:"):
            continue
        v = ours[dst]
        if how.startswith("transpose"):
            v = (v / float(how.split("*")[1])).t()
        out[src] = v.clone()
    return out


def randomize_bn(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_pad_same_matches_tensorflow_rule():
    x = torch.arange(1.0, 8.0).view(1, 1, 1, 7)             # 7 wide, kernel 3, stride 2: out 4, pad 2 -> (1, 1)
    assert pad_same(x, (1, 3), (1, 2)).shape[-1] == 9
    y = torch.ones(1, 1, 8, 8)                                # 8 wide, kernel 3, stride 2: out 4, pad 1 -> (0, 1)
    p = pad_same(y, (3, 3), (2, 2))
    assert p.shape[-2:] == (9, 9) and p[0, 0, 0, 0] == 1 and p[0, 0, -1, -1] == 0
    g = create_model("googlenet", variant="mindspore").eval()
    assert g.conv1.conv(torch.zeros(1, 3, 224, 224)).shape[-1] == 112
    assert g.maxpool1(torch.zeros(1, 1, 113, 113)).shape[-1] == 57       # ceil(113 / 2), unlike ceil_mode's 56


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_mindspore_googlenet_roundtrip(tmp_path, fmt):
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=7, variant="mindspore").eval()
    randomize_bn(model)
    raw = vendor_names(model, googlenet_mod._mindspore_renames)
    assert "block3a.b2.1.bn.moving_variance" in raw and "classifier.weight" in raw
    raw["moments.conv1.conv.weight"] = torch.zeros(1)        # optimizer state saved beside the weights
    raw["mean_square.block3a.b1.conv.weight"] = torch.zeros(1)   # RMSProp's slots (the zoo's InceptionV4 recipe)
    raw["moment.classifier.bias"] = torch.zeros(1)
    raw["global_step"] = torch.tensor([100], dtype=torch.int32)
    path = tmp_path / f"googlenet.{fmt}"
    if fmt == "ckpt":
        write_ckpt(raw, path, split={"inception5b.branch1.conv.weight", "block5b.b1.conv.weight"})
    else:
        save_file(raw, str(path))
    other = create_model("googlenet", num_classes=7, variant="mindspore").eval()
    result = load_pretrained(other, path)
    assert result.source == "mindspore" and result.arch == "googlenet"
    x = torch.randn(2, 3, 67, 67)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="variant=mindspore"):
        load_pretrained(create_model("googlenet", num_classes=7), path)


def test_mindspore_inception_v4_head_is_folded(tmp_path):
    torch.manual_seed(0)
    model = create_model("inception_v4", num_classes=5, variant="mindspore").eval()
    randomize_bn(model)
    raw = vendor_names(model, inception_v4_mod._mindspore_renames)
    g = torch.Generator().manual_seed(1)
    pos = lambda n: torch.rand(n, generator=g) + 0.5  # noqa: E731
    small = lambda *n: torch.randn(*n, generator=g) * 0.1  # noqa: E731
    head = {"bn0.gamma": pos(1536), "bn0.beta": small(1536), "bn0.moving_mean": small(1536),
            "bn0.moving_variance": pos(1536), "softmax.dense.weight": small(5, 1536) / 2,
            "softmax.dense.bias": small(5), "softmax.batchnorm.gamma": pos(5), "softmax.batchnorm.beta": small(5),
            "softmax.batchnorm.moving_mean": small(5), "softmax.batchnorm.moving_variance": pos(5)}
    raw.update(head)
    path = tmp_path / "inceptionv4.ckpt"
    write_ckpt(raw, path)
    other = create_model("inception_v4", num_classes=5, variant="mindspore").eval()
    load_pretrained(other, path)
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        f = F.batch_norm(f, head["bn0.moving_mean"], head["bn0.moving_variance"], head["bn0.gamma"], head["bn0.beta"],
                         eps=1e-3)
        y = F.linear(f, head["softmax.dense.weight"], head["softmax.dense.bias"])
        y = F.batch_norm(y, head["softmax.batchnorm.moving_mean"], head["softmax.batchnorm.moving_variance"],
                         head["softmax.batchnorm.gamma"], head["softmax.batchnorm.beta"], eps=1e-5)
        expected = F.log_softmax(y, 1)                         # MindSpore's head ends in a log-softmax
        torch.testing.assert_close(F.log_softmax(other(x), 1), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch,build,options", [
    ("googlenet_v1", googlenet_v1_mod._paddle_renames, {}),
    ("inception_v4", inception_v4_mod._paddle_renames, {"variant": "paddleclas"}),
])
def test_paddle_roundtrip(tmp_path, arch, build, options):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=6, **options).eval()
    randomize_bn(model)
    raw = {k: v.numpy() for k, v in vendor_names(model, build).items()}
    linear = "_fc_out.weight" if arch == "googlenet_v1" else "out.weight"
    assert raw[linear].shape[0] > raw[linear].shape[1]     # Paddle stores Linear weights (in, out)
    path = tmp_path / "model.pdparams"
    write_pdparams(raw, path)
    other = create_model(arch, num_classes=6, **options).eval()
    result = load_pretrained(other, path)
    assert result.source == "paddle"
    x = torch.randn(1, 3, 75, 75)
    torch.testing.assert_close(other(x), model(x))      # float32 tolerances: the dropout factor is folded back


def test_bfloat16_weights(tmp_path):
    """A bf16 network's file, as the frameworks write it (seen in make test-interop): MindSpore
    stores BFloat16 records, Paddle uint16 arrays of the bit patterns; both read as bfloat16,
    and the Paddle classifiers' dropout factor is applied in float32, not rounded to bf16."""
    w = torch.randn(4, 3).bfloat16()
    bits = w.view(torch.int16).numpy().view(np.uint16)
    msg = V._mindspore_message()()
    value = msg.value.add()
    value.tag = "w"
    value.tensor.dims.extend([4, 3])
    value.tensor.tensor_type = "BFloat16"
    value.tensor.tensor_content = bits.tobytes()
    (tmp_path / "w.ckpt").write_bytes(msg.SerializeToString())
    got = V.read_mindspore_ckpt(tmp_path / "w.ckpt")["w"]
    assert got.dtype == torch.bfloat16 and torch.equal(got, w)

    raw = {k: v.bfloat16() for k, v in vendor_names(create_model("googlenet_v1", num_classes=3),
                                                     googlenet_v1_mod._paddle_renames).items()}
    write_pdparams({k: v.view(torch.int16).numpy().view(np.uint16) for k, v in raw.items()}, tmp_path / "g.pdparams")
    assert torch.equal(V.read_pdparams(tmp_path / "g.pdparams")["_fc_out.weight"], raw["_fc_out.weight"])
    sd = V.read_vendor(tmp_path / "g.pdparams").state_dict
    assert sd["fc.weight"].dtype == torch.float32
    torch.testing.assert_close(sd["fc.weight"], raw["_fc_out.weight"].float().t() * 0.6, rtol=0, atol=0)
    load_pretrained(create_model("googlenet_v1", num_classes=3), tmp_path / "g.pdparams")


def test_paddle_v4_needs_its_variant(tmp_path):
    raw = {k: v.numpy() for k, v in vendor_names(create_model("inception_v4", variant="paddleclas"),
                                                  inception_v4_mod._paddle_renames).items()}
    write_pdparams(raw, tmp_path / "v4.pdparams")
    with pytest.raises(CheckpointError, match="variant=paddleclas"):
        load_pretrained(create_model("inception_v4"), tmp_path / "v4.pdparams")
    with pytest.raises(CheckpointError, match="--model inception_v4"):
        load_pretrained(create_model("googlenet"), tmp_path / "v4.pdparams")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pdparams_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"_conv._conv.weight": np.zeros(3, np.float32), "x": _Evil(marker)}, f, protocol=4)
    with pytest.raises(CheckpointError, match="for safety.*(posix|os)\\.system"):
        V.read_pdparams(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="for safety"):
        load_pretrained(create_model("googlenet_v1"), path)
    assert not marker.exists()


def test_hostile_pdparams_are_refused(tmp_path):
    path = tmp_path / "obj.pdparams"
    with open(path, "wb") as f:     # an object array: arbitrary objects, or a pointer per declared element
        pickle.dump({"w": np.array([1, "x"], dtype=object)}, f, protocol=2)
    with pytest.raises(CheckpointError, match="for safety: it asks for an array of Python objects"):
        V.read_pdparams(path)
    path.write_bytes(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.")   # 1 TiB declared, 3 B there
    with pytest.raises(CheckpointError, match="not a readable .pdparams pickle .MalformedPickleError: a malformed"):
        V.read_pdparams(path)


@pytest.mark.parametrize("dims", [[-2, -3], [2**40, 2**40, 2**40], [1] * 9, [4, 4]])
def test_mindspore_dims_are_validated(tmp_path, dims):
    msg = V._mindspore_message()()
    value = msg.value.add()
    value.tag = "conv1.weight"
    value.tensor.dims.extend(dims)
    value.tensor.tensor_type = "Float32"
    value.tensor.tensor_content = np.ones(6, np.float32).tobytes()
    path = tmp_path / "bad.ckpt"
    path.write_bytes(msg.SerializeToString())
    with pytest.raises(CheckpointError, match="tensor 'conv1.weight' (declares the shape|has 6 values for shape)"):
        V.read_mindspore_ckpt(path)


def test_partial_and_unknown_files_name_the_keys(tmp_path):
    model = create_model("googlenet", num_classes=3, variant="mindspore")
    raw = vendor_names(model, googlenet_mod._mindspore_renames)
    del raw["block4c.b3.1.bn.gamma"]
    raw["extra.layer.weight"] = torch.zeros(2)
    write_ckpt(raw, tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointError, match=r"missing block4c\.b3\.1\.bn\.gamma; unexpected extra\.layer\.weight"):
        load_pretrained(model, tmp_path / "partial.ckpt")
    write_ckpt({"foo.weight": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"not a vendor checkpoint this tool knows \(MindSpore googlenet, "):
        load_pretrained(model, tmp_path / "other.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"\xff\xfe not protobuf at all" * 10)
    with pytest.raises(CheckpointError, match="not a MindSpore checkpoint"):
        load_pretrained(model, tmp_path / "junk.ckpt")
    (tmp_path / "junk.pdparams").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable .pdparams"):
        load_pretrained(model, tmp_path / "junk.pdparams")


def test_cadene_inception_v4_pth_with_ddp_prefix(tmp_path):
    """The Ascend PyTorch port saves Cadene's InceptionV4 as {'state_dict': {'module.' + name}, ...}."""
    model = create_model("inception_v4", num_classes=4).eval()
    randomize_bn(model)
    sd = {"module." + k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"epoch": 3, "arch": "inceptionv4", "state_dict": sd, "best_acc1": torch.tensor(12.5),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, tmp_path / "model_best.pth.tar")
    other = create_model("inception_v4", num_classes=4).eval()
    load_pretrained(other, tmp_path / "model_best.pth.tar")
    x = torch.randn(1, 3, 75, 75)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)

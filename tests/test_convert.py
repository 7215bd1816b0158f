"""`inception convert`: vendor weights become our checkpoint (or safetensors), which eval,
export and --pretrained take; the model, its variant and the class count come from the file."""

from __future__ import annotations

import pytest
import torch

from inception.cli import main
from inception.convert import convert
from inception.engine.evaluate import restore_model
from inception.errors import UserError
from inception.export import export_checkpoint
from inception.infer import load_predictor
from inception.models import create_model, load_pretrained
from inception.models import googlenet as googlenet_mod
from inception.models import googlenet_v1 as googlenet_v1_mod
from tests.models.test_vendor import randomize_bn, vendor_names, write_ckpt, write_pdparams


@pytest.fixture(scope="module")
def mindspore_googlenet(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=4, variant="mindspore").eval()
    randomize_bn(model)
    path = tmp_path_factory.mktemp("ms") / "googlenet.ckpt"
    write_ckpt(vendor_names(model, googlenet_mod._mindspore_renames), path)
    return model, path


def test_convert_mindspore_checkpoint_then_export_to_onnx(mindspore_googlenet, tmp_path, capsys):
    model, src = mindspore_googlenet
    classes = tmp_path / "labels.txt"
    classes.write_text("0 tench\n1 english springer\n2 cassette player\n3 chain saw\n")   # PaddleClas style
    assert main(["convert", str(src), str(tmp_path / "g.pt"), "--classes", str(classes)]) == 0
    out = capsys.readouterr().out
    assert "googlenet, variant=mindspore, 4 classes, from MindSpore weights" in out
    restored, ckpt, cfg, _, _ = restore_model(tmp_path / "g.pt")
    assert ckpt["class_names"] == ["tench", "english springer", "cassette player", "chain saw"]
    assert restored.variant == "mindspore" and ckpt["converted_from"]["source"] == "MindSpore"
    x = torch.randn(2, 3, 96, 96)
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    r = export_checkpoint(tmp_path / "g.pt", fmt="onnx", output=tmp_path / "g.onnx", image_size=96)
    assert r.parity is not None and r.parity.ok and r.metadata["classes"][0] == "tench"
    onnx_logits = load_predictor(tmp_path / "g.onnx", device="cpu")(x.numpy())
    torch.testing.assert_close(torch.from_numpy(onnx_logits), model(x), rtol=1e-4, atol=1e-4)


def test_convert_paddle_to_safetensors_is_a_pretrained_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("googlenet_v1", num_classes=3).eval()
    write_pdparams({k: v.numpy() for k, v in vendor_names(model, googlenet_v1_mod._paddle_renames).items()},
                   tmp_path / "GoogLeNet.pdparams")
    r = convert(tmp_path / "GoogLeNet.pdparams", tmp_path / "g.safetensors")
    assert (r.arch, r.num_classes, r.source) == ("googlenet_v1", 3, "PaddleClas")
    other = create_model("googlenet_v1", num_classes=3).eval()
    load_pretrained(other, tmp_path / "g.safetensors")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(other(x), model(x))


def test_convert_errors(mindspore_googlenet, tmp_path):
    _, src = mindspore_googlenet
    with pytest.raises(UserError, match="holds googlenet weights, not inception_v4"):
        convert(src, tmp_path / "x.pt", model="inception_v4")
    with pytest.raises(UserError, match="must end in .pt"):
        convert(src, tmp_path / "x.onnx")
    with pytest.raises(UserError, match="2 class names for a classifier of 4 classes"):
        convert(src, tmp_path / "x.pt", class_names=["a", "b"])
    r = convert(src, tmp_path / "x.pt", num_classes=10)          # a new head for 10 classes
    assert r.num_classes == 10 and r.load.reinitialized
    assert main(["convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "y.pt")]) != 0

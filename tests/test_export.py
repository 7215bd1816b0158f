"""Export to every format, metadata, parity checks, INT8 quantization."""

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from inception.errors import UserError
from inception.export import ParityError, check_parity, export_checkpoint, fold_batchnorm
from inception.infer import load_predictor, preprocess_transform, run_inference
from inception.metadata import model_kind, read_metadata

from .conftest import SMALL_SIZE, make_checkpoint, randomize_batchnorm, write_images

CLASSES = ["cat", "dog", "fox"]


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "inception_v4", "inception_resnet_v2"])
def test_fold_batchnorm_keeps_outputs(name):
    from inception.models import create_model

    model = create_model(name, num_classes=4).eval()
    randomize_batchnorm(model)
    folded = fold_batchnorm(model)
    left = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not left, f"{len(left)} BatchNorm layers were not folded"
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original model must be untouched"
    x = torch.randn(2, 3, SMALL_SIZE[name], SMALL_SIZE[name])
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert torch.allclose(out, ref, atol=1e-4 * max(1.0, ref.abs().max().item()), rtol=0)


@pytest.mark.parametrize("name", list(SMALL_SIZE))
def test_onnx_round_trip_every_model(tmp_path, name):
    """Export, read the metadata back, infer a labelled folder: same predictions as PyTorch."""
    size = SMALL_SIZE[name]
    ckpt, model = make_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", name, size=size, classes=CLASSES,
                                  dataset="cifar10" if name == "googlenet_cifar" else "folder")
    r = export_checkpoint(ckpt)
    assert r.path == tmp_path / "run" / "export" / f"{name}.onnx" and r.path.is_file()
    assert r.parity.ok and r.parity.max_abs_diff <= r.parity.tolerance and r.parity.top1_agreement == 1.0

    meta = read_metadata(r.path)
    assert meta["model"] == name and meta["classes"] == CLASSES and meta["num_classes"] == 3
    assert meta["image_size"] == size and meta["precision"] == "fp32" and meta["batch_size"] is None
    assert meta["mean"] == list(model.data_config.mean) and meta["std"] == list(model.data_config.std)
    assert meta["interpolation"] == model.data_config.interpolation
    expected_crop = 1.0 if name == "googlenet_cifar" else model.data_config.crop_pct
    assert meta["crop_pct"] == expected_crop and meta["resize_size"] == int(size / expected_crop)
    props = {p.key: p.value for p in onnx.load(str(r.path), load_external_data=False).metadata_props}
    assert json.loads(props["classes"]) == CLASSES and props["interpolation"] == meta["interpolation"]

    data = tmp_path / "data"
    write_images(data, {"cat": 2, "dog": 1, "fox": 1}, size=size + 10)
    res = run_inference(load_predictor(r.path), data, batch_size=3, workers=0, progress=False)
    assert res.images == 4 and not res.skipped and res.metrics["labelled"] == 4
    transform = preprocess_transform(meta)
    from inception.data.folder import load_image

    for p in res.predictions:
        x = transform(load_image(p["path"]))[None]
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        assert p["topk"][0][0] == CLASSES[int(probs.argmax())]
        assert p["topk"][0][1] == pytest.approx(float(probs.max()), abs=1e-4)
        assert len(p["topk"]) == 3    # top-5 capped by the class count


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".torchscript.pt"), ("exported-program", ".pt2"),
                                        ("safetensors", ".safetensors")])
def test_torch_formats_carry_metadata_and_run(tmp_path, fmt, suffix):
    ckpt, model = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    r = export_checkpoint(ckpt, fmt=fmt, output=tmp_path / "out" / "m")
    assert r.path.name == "m" + suffix and model_kind(r.path) == fmt
    assert r.sidecar == r.path.with_name(r.path.name + ".json") and r.sidecar.is_file()
    assert json.loads(r.sidecar.read_text())["classes"] == CLASSES
    r.sidecar.unlink()                     # the metadata also lives inside the file itself
    assert read_metadata(r.path)["classes"] == CLASSES
    assert r.parity.ok
    predictor = load_predictor(r.path)
    assert predictor.runtime == "torch" and predictor.metadata["image_size"] == 32
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(predictor(x.numpy()), ref, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_safetensors_export_is_plain_weights_for_pretrained(tmp_path):
    from safetensors.torch import load_file

    from inception.models import create_model, load_pretrained

    ckpt, model = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    r = export_checkpoint(ckpt, fmt="safetensors", output=tmp_path / "w.safetensors")
    weights = load_file(str(r.path))
    assert set(weights) == set(model.state_dict())     # not BatchNorm-folded: loadable as --pretrained
    fresh = create_model("googlenet", num_classes=3)
    load_pretrained(fresh, r.path)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_fixed_batch_export_pads_partial_batches(tmp_path):
    ckpt, model = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    r = export_checkpoint(ckpt, batch_size=4, output=tmp_path / "fixed.onnx")
    graph_input = onnx.load(str(r.path)).graph.input[0]
    assert graph_input.type.tensor_type.shape.dim[0].dim_value == 4
    predictor = load_predictor(r.path)
    assert predictor.fixed_batch == 4 and read_metadata(r.path)["batch_size"] == 4
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(predictor(x.numpy()), ref, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_dynamic_export_accepts_any_batch(tmp_path):
    ckpt, model = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    predictor = load_predictor(export_checkpoint(ckpt, output=tmp_path / "d.onnx").path)
    for n in (1, 5):
        assert predictor(np.zeros((n, 3, 32, 32), np.float32)).shape == (n, 3)


def test_image_size_and_opset_options(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    r = export_checkpoint(ckpt, output=tmp_path / "big.onnx", image_size=48, opset=20)
    model = onnx.load(str(r.path))
    assert model.opset_import[0].version == 20
    assert model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value == 48
    assert read_metadata(r.path)["image_size"] == 48
    with pytest.raises(UserError, match="minimum"):
        export_checkpoint(ckpt, output=tmp_path / "tiny.onnx", image_size=8)
    with pytest.raises(UserError, match="opset"):
        export_checkpoint(ckpt, output=tmp_path / "x.onnx", opset=9)


def _tamper(path):
    """Scale the largest convolution weight of an ONNX model by 1.5 in place."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(init) * 1.5
    init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(model, str(path))


def test_parity_check_fails_loudly_on_a_tampered_model(tmp_path):
    ckpt, model = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    r = export_checkpoint(ckpt, output=tmp_path / "m.onnx")
    assert check_parity(load_predictor(r.path), model).ok
    _tamper(r.path)
    with pytest.raises(ParityError, match="differs from the PyTorch model"):
        check_parity(load_predictor(r.path), model)
    parity = check_parity(load_predictor(r.path), model, raise_on_fail=False)
    assert not parity.ok and parity.max_abs_diff > parity.tolerance


def test_failed_parity_keeps_the_previous_export(tmp_path, monkeypatch):
    import inception.export as export

    ckpt, _ = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    out = tmp_path / "m.onnx"
    export_checkpoint(ckpt, output=out)
    good = out.read_bytes()

    def broken_fold(model):   # an exporter bug: the exported weights are wrong
        folded = fold_batchnorm(model)
        with torch.no_grad():
            next(folded.parameters()).mul_(3.0)
        return folded
    monkeypatch.setattr(export, "fold_batchnorm", broken_fold)
    with pytest.raises(ParityError, match="was not kept"):
        export_checkpoint(ckpt, output=out)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "model.pt"]   # no temp files left
    export_checkpoint(ckpt, output=out, check=False)          # --no-check writes it anyway
    assert out.read_bytes() != good


def test_user_errors_are_one_line(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "model.pt", size=32, classes=CLASSES)
    with pytest.raises(UserError, match="--calibration-data"):
        export_checkpoint(ckpt, int8=True)
    with pytest.raises(UserError, match="needs --format onnx"):
        export_checkpoint(ckpt, fmt="torchscript", int8=True, calibration_data=tmp_path)
    with pytest.raises(UserError, match="not valid"):
        export_checkpoint(ckpt, fmt="tflite")
    with pytest.raises(UserError, match="does not exist"):
        export_checkpoint(tmp_path / "missing.pt")


def test_int8_quantization_calibrates_and_reports_accuracy(tmp_path):
    ckpt, model = make_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", size=32, classes=CLASSES)
    data = tmp_path / "calib"
    write_images(data, {"cat": 8, "dog": 8, "fox": 8}, size=36)
    r = export_checkpoint(ckpt, int8=True, calibration_data=data, calibration_size=12, max_int8_drop=100)
    assert r.path.name == "googlenet-int8.onnx"
    ops = {n.op_type for n in onnx.load(str(r.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = read_metadata(r.path)
    assert meta["precision"] == "int8" and meta["classes"] == CLASSES
    assert meta["calibration"]["images"] == 12 and meta["calibration"]["reduce_range"] is True
    q = r.int8
    assert q["images"] == 12 and q["labelled"] == 12
    assert 0 <= q["top1_agreement"] <= 100 and "delta" in q
    predictor = load_predictor(r.path)
    res = run_inference(predictor, data, workers=0, progress=False)
    assert res.images == 24 and res.metrics["labelled"] == 24


@pytest.mark.slow
def test_int8_keeps_accuracy_of_a_trained_model(tmp_path):
    """A GoogLeNet trained on the digits loses at most a point of top-1 when quantized."""
    from PIL import Image

    from inception.cli import resolve_config_path
    from inception.config import load_config
    from inception.data.digits import _load
    from inception.engine.loop import train

    cfg = load_config(resolve_config_path("demo"), {"train.epochs": 12, "train.output_dir": str(tmp_path / "run"),
                                                    "train.device": "cpu", "train.log_interval": 1000})
    train(cfg, progress=False)
    for part in ("train", "test"):
        images, labels = _load()[part]
        for i, (im, y) in enumerate(zip(images, labels)):
            d = tmp_path / part / str(int(y))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im.permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    r = export_checkpoint(tmp_path / "run", int8=True, calibration_data=tmp_path / "train", calibration_size=300)
    fp32 = export_checkpoint(tmp_path / "run", output=tmp_path / "fp32.onnx")
    a32 = run_inference(load_predictor(fp32.path), tmp_path / "test", workers=0, progress=False).metrics["top1"]
    a8 = run_inference(load_predictor(r.path), tmp_path / "test", workers=0, progress=False).metrics["top1"]
    assert a32 > 90 and a8 >= a32 - 1.0, (a32, a8)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_onnx_export_with_anti_aliased_pooling(tmp_path, name):
    """aa_pool (a fixed blur after a dense max) exports to ONNX and agrees with PyTorch."""
    size = SMALL_SIZE[name]
    ckpt, model = make_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", name, size=size, classes=CLASSES,
                                  aa_pool=True)
    r = export_checkpoint(ckpt)
    assert r.parity.ok and r.parity.top1_agreement == 1.0 and r.parity.max_abs_diff <= r.parity.tolerance
    assert read_metadata(r.path)["model_options"] == {"aa_pool": True}

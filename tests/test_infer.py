"""inception infer: inputs, skipped files, outputs, accuracy printout, runtimes, bench --runtime."""

import csv
import json

import numpy as np
import pytest
import torch

from inception.cli import main
from inception.errors import UserError
from inception.export import export_checkpoint
from inception.infer import load_predictor, preprocess_transform, resolve_inputs, run_inference

from .conftest import make_checkpoint, write_images

CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A checkpoint and its ONNX export (googlenet, 32x32, classes cat/dog/fox)."""
    root = tmp_path_factory.mktemp("model")
    ckpt, model = make_checkpoint(root / "model.pt", size=32, classes=CLASSES, seed=3)
    onnx_path = export_checkpoint(ckpt, output=root / "model.onnx").path
    return ckpt, onnx_path, model


def _predict(model, paths, metadata):
    from inception.data.folder import load_image

    tf = preprocess_transform(metadata)
    with torch.no_grad():
        x = torch.stack([tf(load_image(p)) for p in paths])
        return model(x).argmax(1).tolist()


def test_accuracy_printout_on_a_labelled_folder(tmp_path, exported, capsys):
    """Put 4 images in the folder of the class the model predicts for them and 2 elsewhere:
    the printout must say exactly 4 of 6 correct."""
    ckpt, onnx_path, model = exported
    staging = tmp_path / "staging"
    paths = write_images(staging, {"x": 6}, size=44, seed=5)
    predicted = _predict(model, paths, load_predictor(onnx_path).metadata)
    data = tmp_path / "data"
    for i, (p, c) in enumerate(zip(paths, predicted)):
        label = c if i < 4 else (c + 1) % 3
        (data / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        p.rename(data / CLASSES[label] / p.name.replace(".jpg", f"_{i}.jpg"))
    assert main(["infer", "--model", str(onnx_path), "--input", str(data), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "top1_correct=4, tot=6, acc=66.67%" in out
    assert "top3_correct=6, tot=6, acc=100.00%" in out     # top-5 capped at the 3 classes
    # the checkpoint on PyTorch agrees with its ONNX export
    assert main(["infer", "--model", str(ckpt), "--input", str(data), "--workers", "0"]) == 0
    assert "top1_correct=4, tot=6, acc=66.67%" in capsys.readouterr().out


def test_corrupt_and_non_image_files_are_skipped_and_reported(tmp_path, exported, capsys, caplog):
    _, onnx_path, _ = exported
    data = tmp_path / "data"
    write_images(data, {"cat": 2, "dog": 2}, size=36)
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (data / "dog" / "empty.png").write_bytes(b"")
    (data / "README.txt").write_text("not an image")
    out_json = tmp_path / "pred.json"
    assert main(["infer", "--model", str(onnx_path), "--input", str(data), "--output", str(out_json),
                 "--workers", "2", "--batch-size", "2"]) == 0
    out = capsys.readouterr()
    assert "predicted 4 images" in out.out and "skipped 3 file(s)" in out.out
    for name in ("broken.jpg", "empty.png", "README.txt"):
        assert name in out.out and name in caplog.text    # listed in the summary and warned as they happen
    doc = json.loads(out_json.read_text())
    assert len(doc["predictions"]) == 4 and len(doc["skipped"]) == 3
    assert {s["path"].split("/")[-1] for s in doc["skipped"]} == {"broken.jpg", "empty.png", "README.txt"}
    assert doc["metrics"]["labelled"] == 4
    for p in doc["predictions"]:
        probs = [t["prob"] for t in p["topk"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert p["label"] in ("cat", "dog")


def test_csv_output_and_topk(tmp_path, exported):
    _, onnx_path, _ = exported
    data = tmp_path / "imgs"
    write_images(data, {"unsorted": 3}, size=36)        # not a class name: an unlabelled folder
    out_csv = tmp_path / "pred.csv"
    assert main(["infer", "--model", str(onnx_path), "--input", str(data), "--output", str(out_csv),
                 "--topk", "2", "--workers", "0"]) == 0
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["path", "label", "class1", "prob1", "class2", "prob2"]
    assert len(rows) == 4
    for row in rows[1:]:
        assert row[1] == "" and row[2] in CLASSES and row[4] in CLASSES and float(row[3]) >= float(row[5])


def test_single_image_list_file_and_folder_inputs(tmp_path, exported, capsys):
    _, onnx_path, model = exported
    paths = write_images(tmp_path / "d", {"cat": 2, "fox": 2}, size=36)
    predictor = load_predictor(onnx_path)
    single = resolve_inputs(paths[0], CLASSES)
    assert single.kind == "image" and single.samples == [(str(paths[0]), None)]

    lst = tmp_path / "val_list.txt"
    lst.write_text("d/cat/0.jpg 0\nd/fox/1.jpg 2\n")
    r = run_inference(predictor, lst, workers=0, progress=False)
    assert r.metrics["labelled"] == 2 and [p["label"] for p in r.predictions] == ["cat", "fox"]
    bad = tmp_path / "bad_list.txt"
    bad.write_text("d/cat/0.jpg 7\n")
    with pytest.raises(UserError, match="labels \\[7\\] but the model has 3 classes"):
        resolve_inputs(bad, CLASSES)

    assert main(["infer", "--model", str(onnx_path), "--input", str(paths[0])]) == 0
    out = capsys.readouterr().out
    assert str(paths[0]) in out and "predicted 1 images" in out and "top1_correct" not in out
    expected = CLASSES[_predict(model, [paths[0]], predictor.metadata)[0]]
    assert f"{paths[0]}: {expected} " in out


def test_bad_model_and_input_are_one_line_errors(tmp_path, exported, capsys):
    _, onnx_path, _ = exported
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[:5000])
    fake_ckpt = tmp_path / "weights.pt"
    fake_ckpt.write_bytes(b"PK\x03\x04 nope")
    cases = [(garbage, "not a"), (truncated, "not a"), (fake_ckpt, "cannot be read"),
             (tmp_path / "nope.onnx", "does not exist")]
    for path, text in cases:
        code = main(["infer", "--model", str(path), "--input", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and text in err and "Traceback" not in err, (path, err)
        assert len(err.strip().splitlines()) == 1, err
    assert main(["infer", "--model", str(onnx_path), "--input", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["infer", "--model", str(onnx_path), "--input", str(tmp_path), "--runtime", "torch"]) == 2
    assert "--runtime onnxruntime" in capsys.readouterr().err


def test_torch_runtime_matches_onnxruntime(exported):
    ckpt, onnx_path, _ = exported
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    a = load_predictor(onnx_path)(x)
    b = load_predictor(ckpt, runtime="torch", device="cpu")(x)
    np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, np.abs(b).max()))
    with pytest.raises(UserError, match="not ONNX"):
        load_predictor(ckpt, runtime="onnxruntime")
    with pytest.raises(UserError, match="CUDAExecutionProvider|tensorrt"):
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this onnxruntime has CUDA")
        load_predictor(onnx_path, device="cuda")


def test_cli_export_prints_parity_and_refuses_bad_flags(tmp_path, exported, capsys):
    ckpt, _, _ = exported
    out = tmp_path / "m.pt2"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "exported-program", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "parity OK: max abs diff" in text and "top-1 agreement 100.0%" in text
    assert f"metadata: {out}.json" in text
    assert main(["export", "--checkpoint", str(ckpt), "--batch-size", "4", "--dynamic-batch"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt), "--int8"]) == 2
    assert "--calibration-data" in capsys.readouterr().err


def test_bench_runtimes_side_by_side(tmp_path, exported, capsys):
    from inception.bench import bench_runtimes, format_runtime_results

    _, onnx_path, _ = exported
    results = bench_runtimes(["googlenet", str(onnx_path)], batch_sizes=[1, 2], image_size=32, steps=2, warmup=1,
                             num_classes=3)
    assert [(r.runtime, r.batch_size) for r in results] == [
        ("torch eager", 1), ("onnxruntime", 1), ("onnxruntime", 1),
        ("torch eager", 2), ("onnxruntime", 2), ("onnxruntime", 2)]
    for r in results:
        assert r.img_per_s > 0 and r.ms_per_batch > 0 and r.p90_ms >= r.ms_per_batch and r.image_size == 32
        assert r.baseline == "googlenet torch eager"
    assert results[0].ratio == 1.0
    assert results[1].ratio == pytest.approx(results[1].img_per_s / results[0].img_per_s)
    table = format_runtime_results(results)
    assert "1.00x (baseline)" in table and "model.onnx" in table

    assert main(["bench", "googlenet", "--runtime", "torch", "onnxruntime", "--batch-size", "1",
                 "--image-size", "32", "--steps", "1", "--warmup", "0", "--num-classes", "3",
                 "--json", str(tmp_path / "b.json")]) == 0
    assert "vs baseline" in capsys.readouterr().out
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["runtime"] for r in doc["runtimes"]] == ["torch eager", "onnxruntime"]
    assert main(["bench", "googlenet", "--runtime", "torch", "--mode", "train"]) == 2

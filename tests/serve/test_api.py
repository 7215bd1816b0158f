"""inception serve through the ASGI test client: every endpoint, every bad input, the OIP v2
shapes, the metrics, the API key, dynamic batching, and equality with `inception infer`."""

import base64
import re
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from inception.infer import _ImageFiles, decode_side, load_predictor, preprocess_transform, run_inference, softmax
from inception.serve import create_app
from inception.serve.images import ImageDecoder

from .conftest import CLASSES, RecordingPredictor, png_header_only, run_concurrently


@pytest.fixture(scope="module")
def onnx_predictor(served):
    return load_predictor(served["onnx"])


@pytest.fixture(scope="module")
def client(onnx_predictor):
    with TestClient(create_app(onnx_predictor, max_wait_ms=1)) as c:
        yield c


def _jpeg(path):
    return {"content": path.read_bytes(), "headers": {"content-type": "image/jpeg"}}


def metric_values(text: str) -> dict:
    """``{(sample name, frozenset(labels)): value}`` of a Prometheus text page."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(values: dict, name: str, **labels) -> float:
    return values.get((name, frozenset(labels.items())), 0.0)


# ------------------------------------------------------------------------------------ equality with infer

def test_large_jpeg_same_tensor_as_infer(tmp_path):
    """A JPEG large enough for a reduced-size decode gives the server and `inception infer` the
    same input tensor, bit for bit (both decode at 1/8 scale here)."""
    meta = {"image_size": 32, "crop_pct": 0.875}
    rng = np.random.default_rng(0)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path, quality=85)
    served_x, _ = ImageDecoder(meta)(path.read_bytes(), "big.jpg")
    infer_x = _ImageFiles([(str(path), None)], preprocess_transform(meta), decode_side(meta))[0][0]
    np.testing.assert_array_equal(served_x, infer_x.numpy())


@pytest.mark.parametrize("kind", ["onnx", "checkpoint"])
def test_probabilities_equal_infer(served, kind):
    """The server's top-k for each file, sent alone and all in one multipart request, equal
    `inception infer`'s on the same files (same decode, same transform, same model)."""
    predictor = load_predictor(served[kind], device="cpu")
    expected = {p["path"]: p["topk"] for p in run_inference(predictor, served["folder"], topk=3, workers=0,
                                                            progress=False).predictions}
    assert len(expected) == len(served["images"])
    top1 = {tops[0][0] for tops in expected.values()}
    assert len(top1) >= 2, "the fixture model should not predict one class for every image"
    with TestClient(create_app(served[kind], device="cpu", max_wait_ms=1)) as c:
        for path in served["images"]:
            r = c.post("/v1/classify?topk=3", content=path.read_bytes(),
                       headers={"content-type": "application/octet-stream"})
            assert r.status_code == 200, r.text
            got = [(t["class"], t["prob"]) for t in r.json()["predictions"][0]["topk"]]
            want = expected[str(path)]
            assert [c for c, _ in got] == [c for c, _ in want]
            np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=0, atol=1e-5)
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in served["images"]]
        r = c.post("/v1/classify?topk=3", files=files)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["filename"] for p in preds] == [p.name for p in served["images"]]
        for path, pred in zip(served["images"], preds):
            want = expected[str(path)]
            assert [t["class"] for t in pred["topk"]] == [c for c, _ in want]
            np.testing.assert_allclose([t["prob"] for t in pred["topk"]], [p for _, p in want], rtol=0, atol=1e-5)


def test_classify_response_shape_and_topk(client, served):
    path = served["images"][0]
    r = client.post("/v1/classify", **_jpeg(path))
    assert r.status_code == 200
    doc = r.json()
    assert doc["model"] == "model" and set(doc) == {"model", "predictions", "latency_ms", "timing_ms"}
    assert set(doc["timing_ms"]) == {"decode", "queue", "model", "batch_size"}
    assert doc["latency_ms"] >= doc["timing_ms"]["model"] > 0
    (pred,) = doc["predictions"]
    assert pred["filename"] == "body" and len(pred["topk"]) == 3            # default 5, capped at the 3 classes
    probs = [t["prob"] for t in pred["topk"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0)
    assert {t["class"] for t in pred["topk"]} == set(CLASSES)
    assert all(CLASSES[t["index"]] == t["class"] for t in pred["topk"])
    r = client.post("/v1/classify?topk=1", **_jpeg(path))
    assert [t["class"] for t in r.json()["predictions"][0]["topk"]] == [pred["topk"][0]["class"]]
    r = client.post("/v1/classify?topk=2", files={"photo": ("x.png", path.read_bytes(), "image/png")})
    assert r.status_code == 200 and r.json()["predictions"][0]["filename"] == "x.png"
    assert len(r.json()["predictions"][0]["topk"]) == 2


# ------------------------------------------------------------------------------------ bad input

def _corrupt_png() -> bytes:
    import io
    import zlib

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 4
    data[start:start + 8] = b"\x00\xff" * 4           # break the zlib stream, keep the header
    assert zlib.crc32(bytes(data)) != zlib.crc32(buf.getvalue())
    return bytes(data)


def _bad_cases(served):
    jpg = served["images"][0].read_bytes()
    big = (served["folder"] / "img7.jpg").read_bytes()
    truncated = big[: len(big) * 2 // 3]
    return [
        ("empty body", {"content": b"", "headers": {"content-type": "image/jpeg"}}, "", 400, "empty_body"),
        ("text as an image", {"content": b"hello, not an image" * 10, "headers": {"content-type": "image/jpeg"}},
         "", 415, "unsupported_image_format"),
        ("EPS (would reach Ghostscript)", {"content": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n" + b"0" * 64,
                                           "headers": {"content-type": "image/jpeg"}}, "", 415,
         "unsupported_image_format"),
        ("PPM (a format PIL reads, not on the list)", {"content": b"P6\n2 2\n255\n" + bytes(12),
                                                       "headers": {"content-type": "image/x-portable-pixmap"}},
         "", 415, "unsupported_image_format"),
        ("PNG with corrupt pixels", {"content": _corrupt_png(), "headers": {"content-type": "image/png"}}, "", 422,
         "truncated_image"),          # PIL: "broken data stream", as for a file cut short
        ("30 MP, over the 25 MP default", {"content": png_header_only(6000, 5000),
                                           "headers": {"content-type": "image/png"}}, "", 413, "decompression_bomb"),
        ("truncated jpeg", {"content": truncated, "headers": {"content-type": "image/jpeg"}}, "", 422,
         "truncated_image"),
        ("PIL's bomb", {"content": png_header_only(100_000, 100_000), "headers": {"content-type": "image/png"}},
         "", 413, "decompression_bomb"),
        ("bomb under PIL's error limit", {"content": png_header_only(10_000, 10_000),
                                          "headers": {"content-type": "image/png"}}, "", 413, "decompression_bomb"),
        ("text/plain", {"content": jpg, "headers": {"content-type": "text/plain"}}, "", 415,
         "unsupported_media_type"),
        ("curl's default form type", {"content": jpg, "headers": {"content-type": "application/x-www-form-urlencoded"}},
         "", 415, "unsupported_media_type"),
        ("topk 0", _jpeg(served["images"][0]), "?topk=0", 422, "bad_topk"),
        ("topk -2", _jpeg(served["images"][0]), "?topk=-2", 422, "bad_topk"),
        ("topk abc", _jpeg(served["images"][0]), "?topk=abc", 422, "bad_topk"),
        ("multipart without boundary", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
         "", 400, "bad_multipart"),
        ("multipart garbage", {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=zz"}},
         "", 400, "bad_multipart"),
        ("multipart without a file", {"data": {"note": "no file here"}, "files": {}}, "", 400, "bad_multipart"),
        ("a text file in multipart", {"files": {"file": ("notes.txt", b"just text", "text/plain")}}, "", 415,
         "unsupported_image_format"),
    ]


def test_bad_inputs_answer_json_errors_and_the_server_goes_on(served, onnx_predictor):
    app = create_app(onnx_predictor, max_wait_ms=1)
    cases = _bad_cases(served)
    good = _jpeg(served["images"][1])
    with TestClient(app) as c:
        for label, kwargs, query, status, kind in cases:
            if label == "multipart without a file":     # a form field only: httpx sends multipart with files={}
                r = c.post("/v1/classify", files={"note": (None, b"no file here")})
            else:
                r = c.post("/v1/classify" + query, **kwargs)
            assert r.status_code == status, (label, r.status_code, r.text)
            body = r.json()
            assert body["kind"] == kind and isinstance(body["error"], str) and "\n" not in body["error"], label
            ok = c.post("/v1/classify", **good)       # the next request is served normally
            assert ok.status_code == 200, (label, ok.text)
        values = metric_values(c.get("/metrics").text)
    kinds = [k for *_, k in cases]
    for kind in set(kinds):
        assert metric(values, "inception_errors_total", kind=kind) == kinds.count(kind), kind
    assert metric(values, "inception_requests_total", endpoint="/v1/classify", status="200") == len(cases)
    statuses = [status for _, _, _, status, _ in cases]
    for status in set(statuses):
        assert metric(values, "inception_requests_total", endpoint="/v1/classify",
                      status=str(status)) == statuses.count(status), status


def test_bad_image_reasons_name_the_problem(client, served):
    big = (served["folder"] / "img7.jpg").read_bytes()
    r = client.post("/v1/classify", content=big[: len(big) * 2 // 3], headers={"content-type": "image/jpeg"})
    assert "truncated" in r.json()["error"] and "send the whole file" in r.json()["error"]
    r = client.post("/v1/classify", content=png_header_only(10_000, 10_000), headers={"content-type": "image/png"})
    assert "10000x10000 = 100,000,000 pixels" in r.json()["error"]
    r = client.post("/v1/classify", content=b"hello", headers={"content-type": "image/jpeg"})
    assert r.json()["error"] == "'body' is not a JPEG, PNG, WebP, BMP, GIF or TIFF image; send one of those"
    r = client.post("/v1/classify", content=b"hello", headers={"content-type": "application/x-www-form-urlencoded"})
    assert "add -H 'Content-Type: image/jpeg'" in r.json()["error"]


def test_upload_limits(served, onnx_predictor):
    """Over --max-upload-mb: 413, from the Content-Length before reading, and while reading a
    chunked body that has none; more images than allowed: 413; more pixels than allowed: 413."""
    image = served["images"][0].read_bytes()
    limit_mb = 0.004             # 4 KiB: the test images are 2-3 KiB
    assert len(image) < limit_mb * 2**20
    app = create_app(onnx_predictor, max_upload_mb=limit_mb, max_images=2, max_pixels=48 * 40 + 1)
    with TestClient(app) as c:
        assert c.post("/v1/classify", **_jpeg(served["images"][0])).status_code == 200
        r = c.post("/v1/classify", content=image + b"\0" * 4096, headers={"content-type": "image/jpeg"})
        assert r.status_code == 413 and r.json()["kind"] == "too_large" and "0.004 MB" in r.json()["error"]

        def chunks():
            for _ in range(8):
                yield b"\0" * 1024

        r = c.post("/v1/classify", content=chunks(), headers={"content-type": "image/jpeg"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["kind"] == "too_large"
        r = c.post("/v1/classify", files=[("f", (f"{i}.jpg", image[:1], "image/jpeg")) for i in range(3)])
        assert r.status_code == 413 and r.json()["kind"] == "too_many_images"
        bigger = served["images"][1].read_bytes()   # 44x50 pixels: over the 1921 allowed
        r = c.post("/v1/classify", content=bigger, headers={"content-type": "image/jpeg"})
        assert r.status_code == 413 and r.json()["kind"] == "decompression_bomb"
        assert c.post("/v1/classify", **_jpeg(served["images"][0])).status_code == 200


def test_unknown_routes_and_methods(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["kind"] == "not_found"
    r = client.get("/v1/classify")
    assert r.status_code == 405 and r.json()["kind"] == "method_not_allowed"


def test_model_failure_is_a_500_and_the_server_recovers(served, onnx_predictor):
    model = RecordingPredictor(onnx_predictor)
    with TestClient(create_app(model, max_wait_ms=1, unhealthy_after=3)) as c:
        model.fail = True
        r = c.post("/v1/classify", **_jpeg(served["images"][0]))
        assert r.status_code == 500 and r.json()["kind"] == "model_error"
        assert "simulated model failure" in r.json()["error"]
        assert c.get("/v2/health/ready").status_code == 200          # 1 failure: still ready
        for _ in range(2):                                           # 3 in a row (--unhealthy-after 3): not ready
            assert c.post("/v1/classify", **_jpeg(served["images"][0])).status_code == 500
        assert c.get("/v2/health/ready").status_code == 503 and c.get("/v2/health/live").status_code == 200
        model.fail = False
        assert c.post("/v1/classify", **_jpeg(served["images"][0])).status_code == 200
        assert c.get("/v2/health/ready").status_code == 200          # the first success: ready again
        values = metric_values(c.get("/metrics").text)
    assert metric(values, "inception_errors_total", kind="model_error") == 3


# ------------------------------------------------------------------------------------ OIP v2

def _tensor(served, n):
    tf = preprocess_transform(load_predictor(served["onnx"]).metadata)
    from inception.data.folder import load_image

    return np.stack([tf(load_image(p)).numpy() for p in served["images"][:n]])


def test_v2_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "inception"
    meta = client.get("/v2/models/model").json()
    assert meta == {"name": "model", "versions": ["1"], "platform": "onnxruntime_onnx",
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
                    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
                                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]}
    assert client.get("/v2/models/model/versions/1").json() == meta
    assert client.get("/v2/models/model/ready").json() == {"name": "model", "ready": True}
    r = client.get("/v2/models/resnet")
    assert r.status_code == 404 and r.json()["kind"] == "model_not_found" and "'model'" in r.json()["error"]
    info = client.get("/v1/model").json()
    assert info["metadata"]["classes"] == CLASSES and info["metadata"]["image_size"] == 32
    assert info["metadata"]["checkpoint"]["val_top1"] == 50.0 and info["limits"]["max_batch"] == 32
    assert info["metadata"]["source"].endswith("model.pt") and not info["metadata"]["source"].startswith("/")


def test_v2_infer_fp32_tensor(client, served, onnx_predictor):
    x = _tensor(served, 3)
    expected = onnx_predictor(x)
    req = {"id": "req-7", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                      "data": x.ravel().tolist()}]}
    r = client.post("/v2/models/model/infer", json=req)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "model" and doc["id"] == "req-7" and doc["model_version"] == "1"
    outs = {o["name"]: o for o in doc["outputs"]}
    assert set(outs) == {"logits", "probabilities"}
    assert outs["logits"]["shape"] == [3, 3] and outs["logits"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(outs["logits"]["data"], (3, 3)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.reshape(outs["probabilities"]["data"], (3, 3)), softmax(expected), atol=1e-6)
    # nested data, one output, the classification extension
    req = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}],
           "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    doc = client.post("/v2/models/model/versions/1/infer", json=req).json()
    (out,) = doc["outputs"]
    assert "id" not in doc and out["datatype"] == "BYTES" and out["shape"] == [3, 2]
    probs = softmax(expected)
    for row in range(3):
        for rank, item in enumerate(out["data"][2 * row: 2 * row + 2]):
            score, index, label = item.split(":")
            j = int(np.argsort(-probs[row])[rank])
            assert int(index) == j and label == CLASSES[j] and float(score) == pytest.approx(probs[row, j], abs=1e-6)


def test_v2_infer_bytes_equals_classify(client, served):
    paths = served["images"][:3]
    req = {"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES",
                       "data": [base64.b64encode(paths[0].read_bytes()).decode(),
                                {"b64": base64.b64encode(paths[1].read_bytes()).decode()},
                                base64.b64encode(paths[2].read_bytes()).decode()]}],
           "outputs": [{"name": "probabilities"}]}
    r = client.post("/v2/models/model/infer", json=req)
    assert r.status_code == 200, r.text
    probs = np.reshape(r.json()["outputs"][0]["data"], (3, 3))
    for row, path in enumerate(paths):
        top = client.post("/v1/classify", **_jpeg(path)).json()["predictions"][0]["topk"]
        for t in top:
            assert probs[row, t["index"]] == pytest.approx(t["prob"], abs=1e-6)


@pytest.mark.parametrize("body, status, kind", [
    ({"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 768}]}, 422,
     "bad_tensor"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 10}]}, 422,
     "bad_tensor"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "INT8", "data": [0] * 3072}]}, 422,
     "bad_tensor"),
    ({"inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}, 422,
     "bad_tensor"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": ["a"] * 3072}]}, 422,
     "bad_tensor"),
    ({"inputs": []}, 422, "bad_tensor"),
    ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}, 422, "bad_tensor"),
    ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]}, 415,
     "unsupported_image_format"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}],
      "outputs": [{"name": "features"}]}, 422, "bad_tensor"),
    ({"inputs": [{"name": "input", "shape": [100, 3, 32, 32], "datatype": "FP32", "data": [0.0]}]}, 413,
     "too_many_images"),
    ({"instances": [1, 2]}, 400, "bad_json"),
    ("[1, 2", 400, "bad_json"),
    # non-finite numbers, beyond float32, deep nesting, a non-string id: 4xx, never a 500
    ('{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [NaN' + ', 0' * 3071 + ']}]}',
     400, "bad_json"),
    ('{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [-Infinity' + ', 0' * 3071
     + ']}]}', 400, "bad_json"),
    ('{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [1e39' + ', 0' * 3071
     + ']}]}', 422, "bad_tensor"),
    ('{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [1e400' + ', 0' * 3071
     + ']}]}', 422, "bad_tensor"),
    ('{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [' + "9" * 400 + ', 0' * 3071
     + ']}]}', 422, "bad_tensor"),
    ('{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [[[[[[0]]]]]]}]}', 400,
     "bad_json"),
    ('{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "bad_json"),
    ('{"inputs": ' + "[" * 100_000 + "}", 400, "bad_json"),
    ({"id": {"a": 1}, "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                  "data": [0.0] * 3072}]}, 400, "bad_json"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [[0.0] * 3, [0.0]]}]}, 422,
     "bad_tensor"),
])
def test_v2_infer_bad_requests(client, body, status, kind):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) else \
        {"json": body}
    r = client.post("/v2/models/model/infer", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["kind"] == kind and isinstance(r.json()["error"], str)


def test_v2_infer_wrong_content_type_model_and_empty_body(client):
    r = client.post("/v2/models/model/infer", content=b"\x00\x01", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415 and r.json()["kind"] == "unsupported_media_type"
    r = client.post("/v2/models/other/infer", json={"inputs": []})
    assert r.status_code == 404 and r.json()["kind"] == "model_not_found"
    r = client.post("/v2/models/model/infer", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["kind"] == "empty_body"


# ------------------------------------------------------------------------------------ metrics

def test_metrics_count_requests_errors_batches_and_latency(served, onnx_predictor):
    with TestClient(create_app(onnx_predictor, max_wait_ms=1)) as c:
        before = metric_values(c.get("/metrics").text)
        assert metric(before, "inception_errors_total", kind="unsupported_image_format") == 0   # every kind at 0
        assert metric(before, "inception_queue_depth") == 0
        for p in served["images"][:3]:
            assert c.post("/v1/classify", **_jpeg(p)).status_code == 200
        files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in served["images"][:4]]
        assert c.post("/v1/classify", files=files).status_code == 200
        assert c.post("/v1/classify", content=b"nope", headers={"content-type": "image/jpeg"}).status_code == 415
        assert c.get("/v2/health/live").status_code == 200
        r = c.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        values = metric_values(r.text)
    assert metric(values, "inception_requests_total", endpoint="/v1/classify", status="200") == 4
    assert metric(values, "inception_requests_total", endpoint="/v1/classify", status="415") == 1
    assert metric(values, "inception_requests_total", endpoint="/v2/health/live", status="200") == 1
    assert metric(values, "inception_requests_total", endpoint="/metrics", status="200") == 1
    assert metric(values, "inception_errors_total", kind="unsupported_image_format") == 1
    assert metric(values, "inception_images_total") == 7
    assert metric(values, "inception_decode_seconds_count") == 7
    assert metric(values, "inception_queue_seconds_count") == 7
    batches = metric(values, "inception_batch_size_count")
    assert 4 <= batches <= 7 and metric(values, "inception_batch_size_sum") == 7
    assert metric(values, "inception_model_seconds_count") == batches
    assert metric(values, "inception_request_duration_seconds_count", endpoint="/v1/classify") == 5
    assert metric(values, "inception_request_duration_seconds_bucket", endpoint="/v1/classify", le="+Inf") == 5
    assert metric(values, "inception_queue_depth") == 0
    assert metric(values, "inception_requests_in_flight") == 1      # the /metrics request itself


# ------------------------------------------------------------------------------------ auth

def test_api_key_on_every_endpoint_but_health(served, onnx_predictor):
    key = "s3cret-key"
    app = create_app(onnx_predictor, api_key=key, max_wait_ms=1)
    image = _jpeg(served["images"][0])
    protected = [("get", "/v1/model", {}), ("post", "/v1/classify", image), ("get", "/v2", {}),
                 ("get", "/v2/models/model", {}), ("get", "/v2/models/model/ready", {}),
                 ("post", "/v2/models/model/infer", {"json": {"inputs": []}}), ("get", "/metrics", {})]
    with TestClient(app) as c:
        for method, url, kwargs in protected:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"},
                            {"Authorization": key}):
                r = c.request(method, url, headers={**kwargs.get("headers", {}), **headers},
                              **{k: v for k, v in kwargs.items() if k != "headers"})
                assert r.status_code == 401, (url, headers, r.status_code)
                assert r.json()["kind"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
            r = c.request(method, url, headers={**kwargs.get("headers", {}), "Authorization": f"Bearer {key}"},
                          **{k: v for k, v in kwargs.items() if k != "headers"})
            assert r.status_code != 401, url
            assert r.status_code in (200, 422), (url, r.text)
        for url in ("/v2/health/live", "/v2/health/ready", "/", "/docs", "/openapi.json"):
            assert c.get(url).status_code == 200, url
        values = metric_values(c.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text)
    assert metric(values, "inception_errors_total", kind="unauthorized") == 4 * len(protected)
    spec = app.openapi()
    assert spec["paths"]["/v1/classify"]["post"]["security"]
    assert "security" not in spec["paths"]["/v2/health/live"]["get"]


# ------------------------------------------------------------------------------------ batching

def _requests(served, n):
    paths = [served["images"][i % len(served["images"])] for i in range(n)]
    return paths, [{"method": "POST", "url": "/v1/classify", **_jpeg(p)} for p in paths]


@pytest.mark.parametrize("max_batch, expected", [(8, [8]), (4, [4, 4]), (1, [1] * 8)])
def test_concurrent_requests_are_batched(served, onnx_predictor, max_batch, expected):
    """8 requests at once with a long max wait: batches of max_batch, run as soon as full
    (not after the wait); max_batch=1: one model call each."""
    model = RecordingPredictor(onnx_predictor)
    app = create_app(model, max_batch=max_batch, max_wait_ms=10_000)
    model.start()
    paths, requests = _requests(served, 8)
    start = time.perf_counter()
    responses = run_concurrently(app, requests)
    elapsed = time.perf_counter() - start
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert model.calls == expected
    assert elapsed < 8.0, f"full batches must not wait for max_wait_ms ({elapsed:.1f} s)"
    assert {r.json()["timing_ms"]["batch_size"] for r in responses} == {max_batch}
    # each answer is its own image's, whatever batch it rode in
    alone = RecordingPredictor(onnx_predictor)
    with TestClient(create_app(alone, max_batch=1)) as c:
        for path, r in zip(paths, responses):
            assert r.json()["predictions"] == c.post("/v1/classify", **_jpeg(path)).json()["predictions"]


def test_a_partial_batch_runs_after_max_wait(served, onnx_predictor):
    model = RecordingPredictor(onnx_predictor)
    app = create_app(model, max_batch=32, max_wait_ms=400)
    model.start()
    start = time.perf_counter()
    responses = run_concurrently(app, _requests(served, 3)[1])
    elapsed = time.perf_counter() - start
    assert [r.status_code for r in responses] == [200] * 3
    assert model.calls == [3]
    assert elapsed >= 0.4
    assert max(r.json()["timing_ms"]["queue"] for r in responses) >= 399    # the first waited the whole 400 ms


# ------------------------------------------------------------------------------------ pages

EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?(https?:)?//|@import|https?://""")


def test_page_and_docs_are_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="files"' in html and "v1/classify" in html and "v1/model" in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/v1/classify" in docs.text and "/v2/models/{name}/infer" in docs.text
    assert "<script" not in docs.text and not EXTERNAL.search(docs.text)
    assert client.get("/redoc").status_code == 404
    spec = client.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/model", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}",
            "/v2/models/{name}/ready", "/v2/models/{name}/infer", "/metrics"} <= set(spec["paths"])
    body = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert {"image/*", "multipart/form-data"} <= set(body)


@pytest.mark.parametrize("spin", [True, False])
def test_spin_reaches_onnx_runtime(served, spin):
    """``--no-spin``: ONNX Runtime's pool threads sleep between calls (a session setting)."""
    options = create_app(served["onnx"], spin=spin).state.service.predictor.session.get_session_options()
    try:
        entry = options.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:   # not set: ONNX Runtime's default, spinning
        entry = None
    assert entry == (None if spin else "0")

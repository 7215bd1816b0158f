"""`inception bench serve`: the load generator, the server's own account from /metrics, the
images it sends, and the whole benchmark against a real `inception serve` process."""

import json
import tarfile

import pytest

from inception.bench.serve import LoadResult, bench_serve, collect_images, format_serve, measure, scrape
from inception.cli import main
from inception.errors import UserError
from inception.serve import serve_in_thread
from inception.serve.metrics import Metrics


def test_scrape_reads_sums_and_counts_of_the_classify_endpoint_only():
    m = Metrics()
    for seconds in (0.010, 0.030):
        m.decode_seconds.observe(seconds)
    m.batch_size.observe(3)
    m.batch_size.observe(5)
    m.latency.labels("/v1/classify").observe(0.2)
    m.latency.labels("/metrics").observe(9.0)          # not an inference request: left out
    got = scrape(m.render().decode())
    assert got["inception_decode_seconds_count"] == 2
    assert got["inception_decode_seconds_sum"] == pytest.approx(0.040)
    assert got["inception_batch_size_sum"] == 8 and got["inception_batch_size_count"] == 2
    assert got["inception_request_duration_seconds_sum"] == pytest.approx(0.2)


def test_collect_images_from_a_folder_an_archive_and_synthetic(served, tmp_path):
    files, source = collect_images(served["folder"], 5, tmp_path / "a")
    assert len(files) == 5 and "files of images" in source
    assert sorted(f.read_bytes() for f in files) == sorted(p.read_bytes() for p in sorted(served["images"])[:5])
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for p in served["images"][:3]:
            tar.add(p, arcname=f"set/train/x/{p.name}")
        for p in served["images"][3:5]:
            tar.add(p, arcname=f"set/val/x/{p.name}")
    files, _ = collect_images(archive, 10, tmp_path / "b")   # the val split, when there is one
    assert sorted(f.read_bytes() for f in files) == sorted(p.read_bytes() for p in served["images"][3:5])
    files, source = collect_images(None, 3, tmp_path / "c")
    assert len(files) == 3 and "synthetic" in source
    with pytest.raises(UserError, match="does not exist"):
        collect_images(tmp_path / "nowhere", 3, tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no image files"):
        collect_images(tmp_path / "empty", 3, tmp_path / "e")
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(UserError, match="cannot be read as a tar archive"):
        collect_images(tmp_path / "bad.tar.gz", 3, tmp_path / "f")


def test_measure_counts_answers_errors_and_wrong_answers(served):
    bodies = [(p.name, p.read_bytes()) for p in served["images"]]
    with serve_in_thread(served["onnx"], max_batch=4, max_wait_ms=20, threads=1, workers=1) as url:
        good = measure(url, bodies, mode="dynamic", max_batch=4, concurrency=3, duration=0.6, warmup=0.1)
        assert good.requests > 0 and good.errors == 0 and good.mismatches == 0
        assert 1.0 <= good.mean_batch <= 4.0 and good.decode_ms > 0 and good.model_ms > 0
        assert good.p50_ms <= good.p90_ms <= good.p99_ms
        # every answer checked against an expectation that no answer meets: all counted
        wrong = measure(url, bodies, mode="dynamic", max_batch=4, concurrency=2, duration=0.4, warmup=0,
                        expected={name: "no-such-class" for name, _ in bodies})
        assert wrong.mismatches == wrong.requests > 0
        # requests the server refuses are errors, by status, and classify no image
        junk = measure(url, [("junk.jpg", b"not an image")], mode="dynamic", max_batch=4, concurrency=2,
                       duration=0.3, warmup=0)
        assert junk.errors == junk.requests > 0 and set(junk.error_kinds) == {"415"} and junk.img_per_s == 0


@pytest.mark.slow          # 20 s: three real servers under load; test_cli_bench_serve keeps one in the default suite
def test_bench_serve_dynamic_vs_max_batch_1_vs_infer(served):
    """A real `inception serve` process per mode; every answer equals infer's top-1."""
    bench = bench_serve(served["onnx"], images=served["folder"], concurrency=(1, 4), duration=1.0, warmup=0.3,
                        max_batch=4, max_wait_ms=50, threads=1, workers=1, infer_passes=1)
    assert [(r.mode, r.concurrency) for r in bench.results] == [("dynamic", 1), ("dynamic", 4),
                                                                 ("max-batch 1", 1), ("max-batch 1", 4)]
    for r in bench.results:
        assert r.requests > 0 and r.errors == 0 and r.mismatches == 0, r
        assert r.img_per_s == pytest.approx(r.requests / r.seconds)
        assert r.server_ms <= r.mean_ms
    by = {(r.mode, r.concurrency): r for r in bench.results}
    assert by["max-batch 1", 4].mean_batch == 1.0 and by["max-batch 1", 4].ratio == 1.0
    assert by["dynamic", 1].mean_batch == 1.0         # one client: nothing to batch with
    assert by["dynamic", 4].mean_batch > 1.0           # four clients and a 50 ms wait: batched
    assert by["dynamic", 4].ratio == pytest.approx(by["dynamic", 4].img_per_s / by["max-batch 1", 4].img_per_s)
    assert bench.infer_img_per_s > 0 and bench.images == len(served["images"])
    assert set(bench.model_alone) == {1, 4} and min(bench.model_alone.values()) > 0
    assert bench.model_batching_gain == pytest.approx(bench.model_alone[4] / bench.model_alone[1])
    text = format_serve(bench)
    assert "1.00x (baseline)" in text and "of infer's img/s" in text and "0 differ" in text
    assert f"{bench.model_batching_gain:.2f}x, what batching gains in the model itself" in text
    assert bench.http_stack.split(", ")[0] in ("h11", "httptools") and f"uvicorn ({bench.http_stack})" in text
    assert json.loads(json.dumps(bench.to_dict()))["model_batching_gain"] == bench.model_batching_gain


def test_cli_bench_serve(served, tmp_path, capsys):
    """A zoo model name on --runtime torch: written to safetensors, served by PyTorch on --device."""
    out = tmp_path / "serve.json"
    rc = main(["bench", "serve", "--model", "googlenet", "--runtime", "torch", "--device", "cpu", "--image-size", "32",
               "--num-classes", "3", "--images", str(served["folder"]), "--concurrency", "2", "--duration", "0.5",
               "--warmup", "0", "--max-batch", "4", "--threads", "1", "--workers", "1", "--no-baseline", "--no-infer",
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "req/s" in text and "where a request's time goes" in text and "infer on the same files" not in text
    assert "googlenet on torch (cpu) at 32 px" in text
    data = json.loads(out.read_text())
    assert data["runtime"] == "torch" and data["device"] == "cpu"
    assert [r["mode"] for r in data["results"]] == ["dynamic"] and data["infer_img_per_s"] is None
    assert data["model_alone"] == {} and data["model_batching_gain"] is None      # no baseline: not timed
    assert set(LoadResult.__dataclass_fields__) <= set(data["results"][0])


@pytest.mark.parametrize("argv, message", [
    (["--model", "no-such-model"], "neither a model file nor a model name"),
    (["--concurrency", "0"], "--concurrency values must be >= 1"),
    (["--duration", "0"], "--duration must be > 0"),
])
def test_cli_bench_serve_mistakes(served, capsys, argv, message):
    argv = ["--model", str(served["onnx"])] + argv if argv[0] != "--model" else argv
    assert main(["bench", "serve", *argv]) != 0
    assert message in capsys.readouterr().err

"""A real `inception serve` process under overload, slow clients, shutdown mid-upload,
`Connection: close` clients past the upload limit, and a fuzz of malformed bodies. Every test
is bounded in time; the figures they measure are printed (`pytest -s`) for the README.

Marked slow (67 s together on 2 cores): `make test-slow` and CI run them; the same admission,
deadline, drain and failing-model logic is tested in-process by the default suite
(test_admission.py, test_batcher.py, test_server.py's real-process SIGTERM drain)."""

import base64
import io
import json
import signal
import socket
import struct
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from inception.bench.serve import format_overload, overload
from inception.cli import main
from inception.serve import ServerProcess

from .conftest import png_header_only

pytestmark = pytest.mark.slow

BASE = ["--threads", "1", "--workers", "2", "--no-access-log"]


@pytest.fixture
def server(served):
    started = []

    def start(*args):
        s = ServerProcess(served["onnx"], args=[*BASE, *args])
        started.append(s)
        return s, s.start()
    yield start
    for s in started:
        s.kill()


def test_overload_answers_200_or_503_with_retry_after_and_bounded_memory(server, served):
    proc, url = server("--max-concurrency", "16", "--max-queue", "64", "--max-batch", "16", "--max-wait-ms", "5")
    bodies = [(p.name, p.read_bytes()) for p in served["images"]]
    r = overload(url, bodies, requests=1000, clients=200, pid=proc.proc.pid, timeout=60,
                 serve_args=["--max-concurrency", "16", "--max-queue", "64"])
    print("\n" + format_overload(r))
    assert sum(r.statuses.values()) == 1000 and r.lost == 0        # none lost, none hung past the client timeout
    assert set(r.statuses) <= {"200", "503"}, r.statuses
    assert r.statuses.get("200") and r.statuses.get("503"), "200 clients against 16 slots must see both"
    assert r.retry_after_missing == 0
    assert r.rss_peak_mb - r.rss_start_mb < 1024
    assert proc.stop(timeout=60) == 0


def test_cli_bench_serve_overload(served, capsys, tmp_path):
    out = tmp_path / "overload.json"
    rc = main(["bench", "serve", "--overload", "--model", str(served["onnx"]), "--images", str(served["folder"]),
               "--requests", "120", "--clients", "40", "--threads", "1", "--workers", "1",
               "--serve-args", "--max-concurrency 4 --max-queue 8", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "overload: 120 requests from 40 clients at once, serve --max-concurrency 4 --max-queue 8" in text
    assert "lost (no HTTP answer): 0; 503 without Retry-After: 0" in text
    data = json.loads(out.read_text())
    assert sum(data["statuses"].values()) == 120 and data["statuses"].get("503", 0) > 0 and data["lost"] == 0


def _slow_socket(url: str, length: int = 100_000) -> socket.socket:
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {length}"
              "\r\n\r\n".encode() + b"\xff\xd8")
    return s


def test_slowloris_does_not_hold_up_others_and_gets_408(server, served):
    proc, url = server("--body-timeout-s", "3")
    slow = [_slow_socket(url) for _ in range(30)]
    good = served["images"][0].read_bytes()
    times = []
    for _ in range(5):
        start = time.monotonic()
        r = httpx.post(url + "/v1/classify", content=good, headers={"content-type": "image/jpeg"}, timeout=30)
        times.append(time.monotonic() - start)
        assert r.status_code == 200
    assert max(times) < 2.0, times
    answers = []
    for s in slow:                                 # each stalled upload is answered 408 once its deadline passed
        s.settimeout(10)
        answers.append(s.recv(4096).split(b"\r\n", 1)[0])
        s.close()
    print(f"\nslowloris: 30 stalled uploads; a normal request took {1000 * max(times):.0f} ms at most; "
          f"each stalled one got {answers[0].decode()} after --body-timeout-s 3")
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), set(answers)
    assert proc.stop(timeout=60) == 0


def test_sigterm_with_a_slow_uploader_exits_within_the_drain_timeout(server):
    proc, url = server("--drain-timeout-s", "3", "--unready-s", "0.5", "--body-timeout-s", "600")
    slow = _slow_socket(url)
    time.sleep(0.2)
    start = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    took = time.monotonic() - start
    slow.close()
    print(f"\nshutdown: SIGTERM with an upload stalled mid-body exited {code} in {took:.1f} s "
          "(--unready-s 0.5, --drain-timeout-s 3)")
    assert code == 0 and took < 0.5 + 3 + 5


def test_early_413_reaches_a_connection_close_client(server, served):
    proc, url = server("--max-upload-mb", "1")
    body = served["images"][0].read_bytes() + b"\0" * (3 * 2**20)       # 3 MB against a 1 MB limit
    request = urllib.request.Request(url + "/v1/classify", data=body, headers={"Content-Type": "image/jpeg"},
                                     method="POST")                   # urllib sends Connection: close
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=30)
    assert e.value.code == 413 and json.loads(e.value.read())["kind"] == "too_large"
    assert proc.stop(timeout=60) == 0


# `inception serve` in a real process whose model raises on an all-white image (any runtime:
# the Predictor's call is wrapped before the CLI starts), for the failing-model test
_FAILING_MODEL = """
import sys
import numpy as np
import inception.infer as infer
run = infer.Predictor.__call__
def call(self, batch):
    if (np.asarray(batch).reshape(len(batch), -1).min(1) > 2.0).any():   # white normalizes to >= 2.25
        raise RuntimeError("poisoned input: an all-white image")
    return run(self, batch)
infer.Predictor.__call__ = call
from inception.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _white_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(buf, format="PNG")
    return buf.getvalue()


def test_a_failing_model_fails_only_its_request_and_turns_readiness(served):
    """A model that raises on one image: batched with good images, only that request gets a
    JSON 500 `model_error` (the batch is run again one image at a time); `--unhealthy-after 3`
    failures in a row turn readiness to 503, the next success turns it back; the server lives."""
    proc = ServerProcess(served["onnx"], args=[*BASE, "--max-batch", "8", "--max-wait-ms", "300",
                                               "--unhealthy-after", "3"])
    proc.command[1:3] = ["-c", _FAILING_MODEL]                      # python -c DRIVER serve --model ...
    url = proc.start()
    try:
        good = [p.read_bytes() for p in served["images"][:5]]
        white = _white_png()

        def post(body):
            return httpx.post(url + "/v1/classify", content=body, headers={"content-type": "image/png"}, timeout=60)

        def ready():
            return httpx.get(url + "/v2/health/ready", timeout=10).status_code

        with ThreadPoolExecutor(6) as pool:                        # one batch: 5 good images and the white one
            answers = list(pool.map(post, [*good[:3], white, *good[3:]]))
        codes = [r.status_code for r in answers]
        assert codes == [200, 200, 200, 500, 200, 200], [r.text for r in answers]
        assert answers[3].json()["kind"] == "model_error" and "poisoned input" in answers[3].json()["error"]
        assert ready() == 200
        for k in range(3):
            assert post(white).status_code == 500
            assert ready() == (200 if k < 2 else 503)              # 3 in a row: unready
        assert post(good[0]).status_code == 200 and ready() == 200  # the next success: ready again
        assert proc.proc.poll() is None
        print(f"\nfailing model: in a batch of 6 only the white image's request failed ({codes}); readiness "
              "503 after 3 failures in a row, 200 after the next success")
    finally:
        assert proc.stop(timeout=60) == 0


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _malformed() -> list[tuple[str, dict]]:
    """(label, request kwargs): truncated and corrupted images of each format, EPS, huge
    headers, and malformed OIP JSON."""
    rng = np.random.default_rng(1)
    cases = []
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"):
        data = _image_bytes(fmt)
        for cut in (1, 8, 32, 100, len(data) // 4, len(data) // 3, len(data) // 2, len(data) - 1):
            cases.append((f"{fmt} cut at {cut}", {"content": data[:cut]}))
        for k in range(16):
            bad = bytearray(data)
            for i in rng.integers(0, len(bad), 8 + 4 * k):
                bad[i] = int(rng.integers(0, 256))
            cases.append((f"{fmt} corrupted {k}", {"content": bytes(bad)}))
    cases.append(("EPS", {"content": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\nshowpage\n"}))
    for w, h in ((100_000, 100_000), (6000, 5000), (1, 2**31 - 1)):
        cases.append((f"PNG header {w}x{h}", {"content": png_header_only(w, h)}))
    ihdr = struct.pack(">IIBBBBB", 2**31 - 1, 2**31 - 1, 16, 6, 0, 0, 0)      # 16-bit RGBA, 2^62 pixels claimed
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    cases.append(("PNG header 2^31-1 squared, 16-bit", {"content": b"\x89PNG\r\n\x1a\n" + chunk}))
    pixels = [0.0] * 3 * 32 * 32
    v2 = [
        '{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [NaN]}]}',
        '{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [Infinity]}]}',
        json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                "data": [1e39] + pixels[1:]}]}),
        '{"inputs": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"inputs": [' + '{"a": ' * 5000 + "1" + "}" * 5000 + "]}",
        json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32], "datatype": "FP32", "data": pixels}]}),
        json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP64", "data": pixels}]}),
        json.dumps({"inputs": [{"name": "input", "shape": [-1, 3, 32, 32], "datatype": "FP32", "data": pixels}]}),
        json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": "x"}]}),
        json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                "data": [base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n").decode()]}]}),
        json.dumps({"inputs": "nope"}), "null", "[]", '"text"', "{", '{"inputs": [}', "\xff\xfe",
    ]
    for i, text in enumerate(v2):
        cases.append((f"v2 #{i}", {"content": text.encode("utf-8", "surrogateescape") if isinstance(text, str)
                                   else text, "v2": True}))
    for k in range(60 - len(v2)):            # random JSON-ish bytes
        cases.append((f"v2 random {k}", {"content": bytes(rng.integers(32, 127, 200, dtype=np.uint8)), "v2": True}))
    return cases


def test_fuzz_never_gives_a_500_nor_kills_the_server(server, served):
    proc, url = server()
    cases = _malformed()
    assert len(cases) >= 200
    statuses = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for label, kwargs in cases:
            v2 = kwargs.pop("v2", False)
            r = client.post("/v2/models/model/infer" if v2 else "/v1/classify", content=kwargs["content"],
                            headers={"content-type": "application/json" if v2 else "image/jpeg"})
            assert r.status_code < 500, (label, r.status_code, r.text)
            body = r.json()
            assert r.status_code == 200 or (isinstance(body["error"], str) and "\n" not in body["error"]), label
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        good = client.post("/v1/classify", content=served["images"][0].read_bytes(),
                           headers={"content-type": "image/jpeg"})
        assert good.status_code == 200
    print(f"\nfuzz: {len(cases)} malformed bodies, statuses {dict(sorted(statuses.items()))}; the server went on")
    assert proc.stop(timeout=60) == 0

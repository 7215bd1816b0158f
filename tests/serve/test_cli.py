"""`inception serve` on the command line: arguments reach the library, one-line errors, the
missing-extra message, and a real HTTP server in a thread."""

import sys

import httpx
import pytest

from inception.cli import main


def test_serve_passes_its_options_to_the_library(monkeypatch, served, capsys):
    import inception.serve as serve
    from inception.serve import ServeSummary

    seen = {}

    def fake_run_server(model, **kwargs):
        seen.update(model=model, **kwargs)
        kwargs["announce"]("serving model at http://127.0.0.1:1234")
        return ServeSummary("http://127.0.0.1:1234", answered=5, images=9, seconds=2.0)

    monkeypatch.setattr(serve, "run_server", fake_run_server)
    monkeypatch.setenv("INCEPTION_API_KEY", "from-env")
    assert main(["serve", "--model", str(served["onnx"]), "--port", "0", "--max-batch", "1", "--max-wait-ms", "2.5",
                 "--workers", "3", "--threads", "1", "--max-upload-mb", "1.5", "--max-images", "7",
                 "--max-megapixels", "2", "--max-queue", "9", "--unhealthy-after", "4",
                 "--name", "digits", "--no-access-log", "--no-spin", "--http", "h11",
                 "--loop", "asyncio"]) == 0
    out = capsys.readouterr().out
    assert "serving model at http://127.0.0.1:1234" in out and "answered 5 inference requests (9 images)" in out
    assert seen["model"] == str(served["onnx"]) and seen["host"] == "127.0.0.1" and seen["port"] == 0
    assert (seen["max_batch"], seen["max_wait_ms"], seen["workers"], seen["threads"]) == (1, 2.5, 3, 1)
    assert (seen["max_upload_mb"], seen["max_images"], seen["max_pixels"]) == (1.5, 7, 2_000_000)
    assert (seen["max_queue"], seen["unhealthy_after"]) == (9, 4)
    assert seen["api_key"] == "from-env" and seen["name"] == "digits" and seen["access_log"] is False
    assert seen["spin"] is False and (seen["http"], seen["loop"]) == ("h11", "asyncio")
    assert main(["serve", "--model", str(served["onnx"]), "--api-key", "flag"]) == 0
    assert seen["api_key"] == "flag" and seen["port"] == 8000 and seen["max_batch"] == 32 and seen["spin"] is True
    assert (seen["max_pixels"], seen["max_queue"], seen["unhealthy_after"]) == (25_000_000, 256, 5)
    assert main(["serve", "--model", str(served["onnx"]), "--max-image-mp", "0.5"]) == 0
    assert seen["max_pixels"] == 500_000
    assert (seen["http"], seen["loop"]) == ("auto", "auto")


def test_serve_user_errors_are_one_line(tmp_path, served, capsys):
    cases = [(["--model", str(tmp_path / "missing.onnx")], "does not exist"),
             (["--model", str(served["onnx"]), "--max-batch", "0"], "max_batch (--max-batch) must be >= 1"),
             (["--model", str(served["onnx"]), "--workers", "0"], "workers (--workers) must be >= 1 (got 0)"),
             (["--model", str(served["onnx"]), "--max-upload-mb", "0"], "must be > 0"),
             (["--model", str(served["onnx"]), "--max-queue", "0"], "max_queue (--max-queue) must be >= 1 (got 0)"),
             (["--model", str(served["onnx"]), "--unhealthy-after", "0"], "unhealthy_after (--unhealthy-after) must"),
             (["--model", str(served["onnx"]), "--runtime", "torch"], "--runtime onnxruntime")]
    for argv, text in cases:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_port_in_use_is_a_one_line_error(served, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(served["onnx"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


def test_missing_serve_extra_names_the_install_command(monkeypatch, served, capsys):
    for name in [m for m in sys.modules if m == "inception.serve" or m.startswith("inception.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)      # import fastapi -> ModuleNotFoundError
    assert main(["serve", "--model", str(served["onnx"])]) == 2
    err = capsys.readouterr().err
    assert "needs the 'fastapi' package" in err and "pip install 'inception[serve]'" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["models"]) == 0                              # the rest of the tool does not need it


def test_serve_in_thread_answers_real_http(served):
    from inception.serve import serve_in_thread

    with serve_in_thread(served["onnx"], max_wait_ms=1) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/v2/health/ready").json() == {"ready": True}
            r = c.post("/v1/classify", files={"file": ("a.jpg", served["images"][0].read_bytes(), "image/jpeg")})
            assert r.status_code == 200 and r.json()["predictions"][0]["filename"] == "a.jpg"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v2/health/live", timeout=5)


def test_uvicorn_http_parser_and_event_loop(monkeypatch):
    import importlib.util

    from inception.errors import UserError
    from inception.serve import server

    real = importlib.util.find_spec
    assert server.uvicorn_impls("h11", "asyncio") == ("h11", "asyncio")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in ("httptools", "uvloop")
                        else real(name))
    assert server.uvicorn_impls() == ("h11", "asyncio")             # auto without the C ones
    with pytest.raises(UserError, match="--http httptools needs the 'httptools' package: pip install httptools"):
        server.uvicorn_impls("httptools", "auto")
    with pytest.raises(UserError, match=r"--loop uvloop needs the 'uvloop' package: pip install uvloop \(or "
                                        r"--loop asyncio\)"):
        server.uvicorn_impls("auto", "uvloop")
    with pytest.raises(UserError, match="--http 'h2' is not valid"):
        server.uvicorn_impls("h2")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in ("httptools", "uvloop")
                        else real(name))
    assert server.uvicorn_impls() == (("httptools", "asyncio") if sys.platform == "win32" else ("httptools", "uvloop"))

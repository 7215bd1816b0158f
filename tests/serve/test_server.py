"""A real `inception serve` process: concurrent clients over HTTP, every answer checked
against `inception infer`, then SIGTERM under load: the requests in flight are answered,
none that the server accepted is lost, and it exits 0."""

import asyncio
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from inception.infer import load_predictor, run_inference
from inception.serve import ServerProcess
from inception.serve.server import bind

CLIENTS = 6


def test_real_server_concurrent_clients_and_sigterm_drain(served):
    expected = {Path(p["path"]).name: p["topk"] for p in run_inference(
        load_predictor(served["onnx"]), served["folder"], topk=3, workers=0, progress=False).predictions}
    images = served["images"]
    # a long max wait keeps requests queued, so that SIGTERM finds some in flight
    args = ["--max-batch", "16", "--max-wait-ms", "250", "--threads", "1", "--workers", "2", "--no-access-log",
            "--unready-s", "1"]
    server = ServerProcess(served["onnx"], args=args)
    url = server.start()
    records, lock = [], threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        i = worker
        # a new connection per request (no keep-alive): once the server stops accepting, connecting fails
        http = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
        while not stop.is_set():
            path = images[i % len(images)]
            i += 1
            start = time.monotonic()
            try:
                r = http.post("/v1/classify?topk=3", content=path.read_bytes(),
                              headers={"content-type": "application/octet-stream"})
                outcome = ("answered", r.status_code, r.json())
            except httpx.ConnectError:
                outcome = ("refused", None, None)
            except httpx.TransportError as e:
                outcome = (f"transport: {type(e).__name__}", None, None)
            with lock:
                records.append((outcome, path.name, start, time.monotonic()))
            if outcome[0] != "answered":
                break
        http.close()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while sum(rec[0][0] == "answered" for rec in records) < 3 * CLIENTS and time.monotonic() < deadline:
            time.sleep(0.02)
        sigterm = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        # readiness turns first, while connections are still accepted (--unready-s 1)
        time.sleep(0.2)
        ready = httpx.get(url + "/v2/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        assert httpx.get(url + "/v2/health/live", timeout=5).status_code == 200
        for t in threads:
            t.join(timeout=120)
        stop.set()
        code = server.wait(timeout=60)
    finally:
        stop.set()
        server.kill()
    answered = [rec for rec in records if rec[0][0] == "answered"]
    other = [rec for rec in records if rec[0][0] != "answered"]
    assert code == 0, server.stderr[-3000:]
    assert len(answered) >= 3 * CLIENTS
    for (_, status, doc), name, _, _ in answered:
        assert status == 200, doc
        got = doc["predictions"][0]["topk"]
        assert [t["class"] for t in got] == [c for c, _ in expected[name]], name
        np.testing.assert_allclose([t["prob"] for t in got], [p for _, p in expected[name]], rtol=0, atol=1e-5)
    batches = {doc["timing_ms"]["batch_size"] for (_, _, doc), *_ in answered}
    assert max(batches) > 1, "concurrent clients should share model calls"
    drained = [rec for rec in answered if rec[2] < sigterm < rec[3]]
    debug = [(r[0][0], round(r[2] - sigterm, 3), round(r[3] - sigterm, 3)) for r in records[-14:]]
    assert drained, ("no request was in flight at SIGTERM: the drain was not exercised", debug, server.stderr)
    # requests that reached the server before the signal were answered, not dropped
    assert all(rec[0][0] == "refused" for rec in other if rec[2] < sigterm), debug
    # no request the server accepted was lost: it answered exactly those the clients received
    summary = re.findall(r"^stopped: answered (\d+) inference requests \((\d+) images\)", server.stdout, re.M)
    assert summary == [(str(len(answered)), str(len(answered)))], (server.stdout, len(answered))
    assert len(other) <= CLIENTS     # each client stops at its first refused connection


@pytest.mark.slow
def test_ctrl_c_also_stops_the_server(served):
    server = ServerProcess(served["onnx"], args=["--no-access-log"])
    try:
        url = server.start()
        assert httpx.get(url + "/v2/health/live", timeout=30).status_code == 200
        code = server.stop(signal.SIGINT, timeout=60)
    finally:
        server.kill()
    assert code == 130 and "interrupted" in server.stderr, (code, server.stderr[-2000:])


def test_accepted_connections_have_tcp_nodelay():
    """uvicorn serves on the socket :func:`bind` makes, through asyncio, which turns Nagle's
    algorithm off (TCP_NODELAY) only on connections accepted from a socket whose proto is
    IPPROTO_TCP. With Nagle on, each response's body waited for the client's delayed ACK of
    its headers: 40 ms on every keep-alive request (measured: 48 ms for /v2/health/live)."""
    sock = bind("127.0.0.1", 0)
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def go():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    try:
        asyncio.run(go())
    finally:
        sock.close()
    assert sock.proto == socket.IPPROTO_TCP
    assert seen and seen[0] != 0, "the server's connections have Nagle's algorithm on"

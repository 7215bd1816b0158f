"""Admission, driven at the ASGI level (the app from create_app, its lifespan, hand-made
receive/send): refusal before the body is read, the body and request deadlines, clients that
leave, and the drain for `Connection: close` clients."""

import asyncio
import json
import threading

import pytest

from inception.infer import load_predictor
from inception.serve import create_app

from .conftest import RecordingPredictor


class SlowPredictor(RecordingPredictor):
    """Records batch sizes; each call waits until ``gate`` is set (or 5 s); ``entered`` is set
    once a call is waiting there."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, batch):
        if self.calls is not None:
            self.entered.set()
            self.gate.wait(5)
        return super().__call__(batch)


@pytest.fixture(scope="module")
def predictor(served):
    return load_predictor(served["onnx"])


def _scope(path="/v1/classify", close=False, length=None):
    headers = [(b"content-type", b"image/jpeg")]
    if close:
        headers.append((b"connection", b"close"))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


class Exchange:
    """One request: ``chunks`` are the body's pieces (a float: sleep that long first); after
    the body, ``then`` is what a second receive gets (None: wait until the response ends)."""

    def __init__(self, chunks, then=None) -> None:
        self.chunks, self.then = list(chunks), then
        self.received = 0
        self.sent: list[dict] = []
        self.done = asyncio.Event()

    async def receive(self):
        while self.chunks and isinstance(self.chunks[0], float):
            await asyncio.sleep(self.chunks.pop(0))
        if self.chunks:
            body = self.chunks.pop(0)
            self.received += len(body)
            return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}
        if self.then is not None:
            await asyncio.sleep(self.then)
            return {"type": "http.disconnect"}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.done.set()

    @property
    def status(self):
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def headers(self):
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def json(self):
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


async def _with_app(app, body):
    async with app.router.lifespan_context(app):
        return await body()


def test_past_max_concurrency_is_503_at_once_with_the_body_unread(predictor, served):
    model = SlowPredictor(predictor)
    app = create_app(model, max_wait_ms=1, max_concurrency=2)
    image = served["images"][0].read_bytes()

    async def body():
        model.start()
        busy = [Exchange([image]) for _ in range(2)]
        tasks = [asyncio.create_task(app(_scope(), e.receive, e.send)) for e in busy]
        await asyncio.sleep(0.3)                  # both in the model, which waits on the gate
        late = Exchange([b"x" * 1000])
        await asyncio.wait_for(app(_scope(), late.receive, late.send), 2)   # answered while the two wait
        model.gate.set()
        await asyncio.gather(*tasks)
        return busy, late
    busy, late = asyncio.run(_with_app(app, body))
    assert [e.status for e in busy] == [200, 200]
    assert late.status == 503 and late.headers["retry-after"] == "1" and late.json["kind"] == "overloaded"
    assert late.received == 0                     # not one byte of its body was read


def test_a_stalled_body_gets_408_and_others_go_on(predictor, served):
    app = create_app(predictor, max_wait_ms=1, body_timeout_s=0.5)
    image = served["images"][0].read_bytes()

    async def body():
        stalled = Exchange([image[:100], 30.0, image[100:]])
        task = asyncio.create_task(app(_scope(), stalled.receive, stalled.send))
        normal = Exchange([image])
        await app(_scope(), normal.receive, normal.send)
        await asyncio.wait_for(task, 5)
        return stalled, normal
    stalled, normal = asyncio.run(_with_app(app, body))
    assert normal.status == 200
    assert stalled.status == 408 and stalled.json["kind"] == "body_timeout" and "--body-timeout-s" in \
        stalled.json["error"]


def test_request_timeout_is_504_and_the_image_leaves_the_queue(predictor, served):
    model = SlowPredictor(predictor)
    app = create_app(model, max_batch=1, max_wait_ms=0, request_timeout_s=0.5)
    image = served["images"][0].read_bytes()

    async def body():
        model.start()
        first, second = Exchange([image]), Exchange([image])
        tasks = [asyncio.create_task(app(_scope(), e.receive, e.send)) for e in (first, second)]
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        model.gate.set()
        await asyncio.sleep(0.3)
        return first, second
    first, second = asyncio.run(_with_app(app, body))
    assert first.status == second.status == 504 and first.json["kind"] == "request_timeout"
    assert first.headers["retry-after"] == "1"
    assert model.calls == [1]                     # the one already in the model; the queued one was dropped


def test_a_client_that_leaves_is_dropped_from_the_queue(predictor, served):
    model = SlowPredictor(predictor)
    app = create_app(model, max_batch=1, max_wait_ms=0)
    image = served["images"][0].read_bytes()

    async def body():
        model.start()
        stays = Exchange([image])
        leaves = Exchange([image], then=0.2)      # disconnects 0.2 s after sending its body
        tasks = [asyncio.create_task(app(_scope(), stays.receive, stays.send))]
        # the first client's image holds the model (decode order is up to the threads: wait for it)
        assert await asyncio.to_thread(model.entered.wait, 5)
        tasks.append(asyncio.create_task(app(_scope(), leaves.receive, leaves.send)))
        await asyncio.sleep(0.6)
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        metrics = app.state.service.metrics.render().decode()
        return stays, leaves, metrics
    stays, leaves, metrics = asyncio.run(_with_app(app, body))
    assert stays.status == 200 and leaves.sent == []
    assert model.calls == [1]                     # only the image of the client that stayed
    assert "inception_client_disconnects_total 1.0" in metrics


@pytest.mark.parametrize("close", [False, True])
def test_early_413_drains_the_body_only_for_connection_close(predictor, close):
    app = create_app(predictor, max_upload_mb=0.01)
    chunks = [b"x" * 4096] * 8                    # 32 kB against 10 kB, no Content-Length

    async def body():
        e = Exchange(chunks)
        await app(_scope(close=close), e.receive, e.send)
        return e
    e = asyncio.run(_with_app(app, body))
    assert e.status == 413 and e.json["kind"] == "too_large"
    assert e.received == (32768 if close else 12288)   # close: all read before answering; keep-alive: stops at once

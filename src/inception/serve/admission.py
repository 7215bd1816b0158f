"""Admission in front of the inference endpoints: what a request may cost before any work.

:class:`Admission` is an ASGI middleware around ``POST /v1/classify`` and
``POST /v2/models/{name}/infer`` (the only routes that read bodies and run the model):

* **concurrency**: past ``max_concurrency`` requests in flight, a new one gets 503 with
  ``Retry-After`` at once, before its body is read or decoded (TorchServe's 503 comes only when
  its job queue is full, after the body was read);
* **body deadline**: a body not received within ``body_timeout_s`` of the request's start is
  answered 408 (a slowloris client holds one of the ``max_concurrency`` slots at most that long,
  and nobody else waits on it: nginx's ``client_body_timeout``);
* **request deadline**: a request not answered within ``request_timeout_s`` gets 504 and its
  images are dropped from the model's queue (Triton's per-request timeout);
* **clients that leave**: once the body is in, a disconnect cancels the request, and its images
  leave the queue;
* **early errors reach ``Connection: close`` clients**: an error answered before the body was read
  (413, 503, 401) would be followed by the server closing the socket while the client is still
  sending, and the kernel then resets the connection: the client sees "connection reset", not
  the answer. For such clients (``Connection: close``, HTTP/1.0) the rest of the body is read and
  discarded first, up to ``drain_bytes`` and ``drain_s`` (nginx's lingering close does the same);
  keep-alive clients get the answer at once.
"""

from __future__ import annotations

import asyncio
import json

from .errors import ServeError

INFER_PATHS = ("/v1/classify",)


def is_inference(scope) -> bool:
    path = scope.get("path", "")
    return scope.get("method") == "POST" and (path in INFER_PATHS or (path.startswith("/v2/models/")
                                                                       and path.endswith("/infer")))


def _wants_close(scope) -> bool:
    if scope.get("http_version") == "1.0":
        return True
    for name, value in scope.get("headers", ()):
        if name.lower() == b"connection" and b"close" in value.lower():
            return True
    return False


class Admission:
    """See the module's doc. ``metrics`` (a :class:`~inception.serve.metrics.Metrics`) counts
    the errors this middleware answers itself, by kind, and the clients that left."""

    def __init__(self, app, *, max_concurrency: int, body_timeout_s: float, request_timeout_s: float,
                 drain_bytes: int, drain_s: float = 5.0, metrics=None) -> None:
        self.app = app
        self.max_concurrency = int(max_concurrency)
        self.body_timeout = float(body_timeout_s)
        self.request_timeout = float(request_timeout_s)
        self.drain_bytes = int(drain_bytes)
        self.drain_s = float(drain_s)
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not is_inference(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            await self._drain_if_closing(scope, receive)
            await self._answer(send, ServeError(
                "overloaded", f"{self.in_flight} requests are in progress, the most this server takes "
                              "(--max-concurrency); retry after the Retry-After seconds",
                headers={"Retry-After": "1"}))
            return
        self.in_flight += 1
        try:
            await self._admitted(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _admitted(self, scope, receive, send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        gone = asyncio.Event()
        body_done = False
        started = False
        watcher: asyncio.Task | None = None

        async def watch() -> None:     # after the body, the next message is the disconnect (or the response's end)
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()

        async def guarded_receive():
            nonlocal body_done, watcher
            if body_done:               # the app asks again: answer when the client leaves
                await gone.wait()
                return {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ServeError("body_timeout", f"the request body did not arrive within {self.body_timeout:g} s "
                                                 "(--body-timeout-s); send it at once") from None
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_done = True
                watcher = asyncio.create_task(watch())
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not body_done and not gone.is_set() and message["status"] != 408:
                    await self._drain_if_closing(scope, guarded_receive)
            await send(message)

        task = asyncio.create_task(self.app(scope, guarded_receive, guarded_send))
        left = asyncio.create_task(gone.wait())
        try:
            done, _ = await asyncio.wait({task, left}, timeout=self.request_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
                return
            task.cancel()               # the client left, or the deadline passed: its images leave the queue
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
            if gone.is_set():
                if self.metrics is not None:
                    self.metrics.client_left.inc()
                return
            if not started:
                await self._answer(send, ServeError(
                    "request_timeout", f"the request was not answered within {self.request_timeout:g} s "
                                       "(--request-timeout-s); its images were dropped; retry later or send fewer",
                    headers={"Retry-After": "1"}))
        finally:
            for t in (watcher, left):
                if t is not None and not t.done():
                    t.cancel()
            if not task.done():
                task.cancel()

    async def _drain_if_closing(self, scope, receive) -> None:
        """Read and drop the rest of the body (bounded) when the client asked the connection to
        close after this request, so that the answer is read before the socket closes."""
        if not _wants_close(scope):
            return
        loop = asyncio.get_running_loop()
        end, n = loop.time() + self.drain_s, 0
        while n <= self.drain_bytes:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, end - loop.time()))
            except (asyncio.TimeoutError, ServeError):
                return
            if message["type"] != "http.request":
                return
            n += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _answer(self, send, err: ServeError) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(err.kind).inc()
        body = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

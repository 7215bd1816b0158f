"""The HTTP app: :func:`create_app` builds a FastAPI app around one model (a :class:`Service`
on ``app.state``) and includes the routers of :mod:`.routes`, one per protocol.

Endpoints (docs/serving.md has curl examples):

* ``POST /v1/classify[?topk=K]``: one image as the body (``image/*`` or
  ``application/octet-stream``), or any number of images as ``multipart/form-data`` file
  fields; answers the top K classes and probabilities of each, the model's name and the
  latency (with its decode / queue / model parts);
* ``GET /v1/model``: the model's metadata (classes, input size, mean/std, source checkpoint
  and its top-1) and the server's limits;
* the Open Inference Protocol v2 (:mod:`.oip`): ``GET /v2``, ``GET /v2/health/live``,
  ``GET /v2/health/ready``, ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``,
  ``POST /v2/models/{name}/infer``;
* ``GET /metrics``: Prometheus text (:mod:`.metrics`);
* ``GET /``: the web page; ``GET /docs``: the API reference, rendered here from
  ``/openapi.json`` (no CDN: FastAPI's own Swagger / ReDoc pages, which load their scripts
  from the internet, are off).

With an API key every endpoint but the health checks (``/v2/health/*``) and the static
pages (``/``, ``/docs``, ``/openapi.json``, which carry no model data; the page asks for the
key) needs ``Authorization: Bearer KEY``.

Images are decoded and preprocessed in a thread pool (``workers`` threads) exactly as
``inception infer`` does (:mod:`.images`), then batched into model calls (:mod:`.batcher`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .._version import __version__
from ..errors import UserError
from ..infer import Predictor, default_threads, load_predictor
from . import routes
from .admission import Admission
from .batcher import Batcher
from .errors import ServeError
from .images import DEFAULT_MAX_PIXELS, ImageDecoder
from .metrics import Metrics

log = logging.getLogger("inception")

STATIC = Path(__file__).resolve().parent / "static"
RAW_TYPES = ("application/octet-stream", "")       # plus image/*
INFER_ENDPOINTS = ("/v1/classify", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
PATH_FIELDS = ("source",)                          # metadata paths shown by their last parts only


class Service:
    """Everything the endpoints share: the model, its decoder, the batcher, the metrics."""

    def __init__(self, predictor: Predictor, *, name: str, max_batch: int, max_wait_ms: float, workers: int,
                 max_upload_mb: float, max_images: int, max_pixels: int, max_queue: int, api_key: str | None,
                 unhealthy_after: int = 5) -> None:
        self.predictor = predictor
        self.name = name
        self.metadata = dict(predictor.metadata)
        self.image_size = predictor.image_size
        logits = predictor(np.zeros((1, 3, self.image_size, self.image_size), np.float32))   # warm-up, and a check
        self.num_classes = int(logits.shape[-1])
        classes = predictor.classes
        self.classes = classes if len(classes) == self.num_classes else [str(i) for i in range(self.num_classes)]
        self.input_name = self.metadata.get("input_name") or "input"
        self.decoder = ImageDecoder(self.metadata, max_pixels=max_pixels)
        self.metrics = Metrics()
        self.batcher = Batcher(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                               metrics=self.metrics, unhealthy_after=unhealthy_after)
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="inception-decode")
        self.max_upload = int(max_upload_mb * 2**20)
        self.max_upload_mb = max_upload_mb
        self.max_images = max_images
        self.api_key = api_key
        self.ready = False
        self.answered = 0            # inference requests answered (any status)
        self.images = 0              # images answered

    # ---------------------------------------------------------------- requests

    async def read_body(self, request: Request) -> bytes:
        self._check_length(request)
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > self.max_upload:
                raise self._too_large(n)
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_multipart(self, request: Request) -> list[tuple[str, bytes]]:
        self._check_length(request)

        async def limited():
            n = 0
            async for chunk in request.stream():
                n += len(chunk)
                if n > self.max_upload:
                    raise self._too_large(n)
                yield chunk

        parser = MultiPartParser(request.headers, limited(), max_files=self.max_images,
                                 max_fields=self.max_images + 100, max_part_size=self.max_upload)
        try:
            form = await parser.parse()
        except MultiPartException as e:
            if e.message.startswith("Too many files"):
                raise ServeError("too_many_images", f"more than {self.max_images} images in one request; send "
                                                    "fewer at once") from None
            raise ServeError("bad_multipart", f"the multipart body cannot be read ({e.message}); send images as "
                                              "file fields, e.g. curl -F file=@cat.jpg") from None
        files = []
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.append((value.filename or key, await value.read()))
        finally:
            await form.close()
        if not files:
            raise ServeError("bad_multipart", "the multipart body holds no file; send images as file fields, e.g. "
                                              "curl -F file=@cat.jpg")
        return files

    def _check_length(self, request: Request) -> None:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_upload:
            raise self._too_large(int(length))

    def _too_large(self, n: int) -> ServeError:
        return ServeError("too_large", f"the request body ({n:,} bytes at least) is over {self.max_upload_mb:g} MB, "
                                       "the most this server takes (--max-upload-mb)")

    async def decode(self, files: list[tuple[str, bytes]]) -> tuple[list[np.ndarray], float]:
        """Decode and preprocess every file in the pool; the first failure is the answer."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        done = await asyncio.gather(*(loop.run_in_executor(self.pool, self.decoder, data, name)
                                      for name, data in files), return_exceptions=True)
        for item in done:
            if isinstance(item, BaseException):
                raise item
        for _, seconds in done:
            self.metrics.decode_seconds.observe(seconds)
        return [x for x, _ in done], time.perf_counter() - start

    async def predict(self, arrays) -> tuple[np.ndarray, dict]:
        """Logits of every image (batched with whatever else is waiting) and the timing."""
        results = await asyncio.gather(*(self.batcher.submit(x) for x in arrays))
        logits = np.stack([r.logits for r in results])
        timing = {"queue": 1000 * max(r.queue_s for r in results), "model": 1000 * max(r.model_s for r in results),
                  "batch_size": max(r.batch_size for r in results)}
        return logits, timing

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise ServeError("model_not_found", f"model '{name}' is not served here; this server serves "
                                                f"'{self.name}'")

    def error_response(self, err: ServeError) -> JSONResponse:
        self.metrics.errors.labels(err.kind).inc()
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    # ---------------------------------------------------------------- descriptions

    def platform(self) -> str:
        return "onnxruntime_onnx" if self.predictor.runtime == "onnxruntime" else "pytorch"

    def describe(self) -> dict:
        meta = dict(self.metadata)
        for key in PATH_FIELDS:
            if isinstance(meta.get(key), str):
                meta[key] = "/".join(Path(meta[key]).parts[-3:])
        meta.pop("calibration", None)
        meta["classes"] = self.classes
        meta["num_classes"] = self.num_classes
        meta["image_size"] = self.image_size
        return {"name": self.name, "file": self.predictor.path.name, "runtime": self.predictor.runtime,
                "device": self.predictor.device, "server": f"inception {__version__}",
                "limits": {"max_batch": self.batcher.max_batch, "max_wait_ms": 1000 * self.batcher.max_wait,
                           "max_upload_mb": self.max_upload_mb, "max_images_per_request": self.max_images,
                           "max_pixels": self.decoder.max_pixels, "decode_workers": self.workers},
                "metadata": meta}


class _Observe:
    """ASGI middleware: every HTTP request counted by endpoint (its route) and status, timed."""

    def __init__(self, app, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.service.metrics
        start = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_flight.dec()
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            if endpoint in INFER_ENDPOINTS:
                self.service.answered += 1


def default_name(path: str | Path) -> str:
    """The name a model is served under: its file name without the model suffixes."""
    path = Path(path)
    name = path.name
    for suffix in (".torchscript.pt", ".torchscript", ".jit.pt", ".onnx", ".pt2", ".safetensors", ".pth", ".pt"):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    if name in ("best", "last") and path.parent.name == "checkpoints":   # RUN/checkpoints/best.pt -> RUN
        name = f"{path.parent.parent.name}-{name}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


# Images waiting for the model, at most (TorchServe's job queue holds 100 requests).
DEFAULT_MAX_QUEUE = 256
# Requests in flight, at most: each holds at most --max-upload-mb of body and --max-images
# preprocessed inputs (docs/serving.md: the worst case of memory).
DEFAULT_MAX_CONCURRENCY = 32


def create_app(model: str | Path | Predictor, *, runtime: str = "auto", device: str = "auto",
               threads: int | None = None, workers: int | None = None, max_batch: int = 32,
               max_wait_ms: float = 5.0, api_key: str | None = None, max_upload_mb: float = 20.0,
               max_images: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS, max_queue: int = DEFAULT_MAX_QUEUE,
               name: str | None = None, spin: bool = True, unhealthy_after: int = 5,
               max_concurrency: int = DEFAULT_MAX_CONCURRENCY, body_timeout_s: float = 60.0,
               request_timeout_s: float = 120.0) -> FastAPI:
    """A FastAPI app serving ``model``: a path ``inception infer`` accepts, or a loaded
    :class:`~inception.infer.Predictor`.

    ``max_batch`` / ``max_wait_ms``: dynamic batching (``max_batch=1``: off). ``threads``:
    the model's CPU threads; ``workers``: decoding threads (default: min(4, cores)).
    ``api_key``: require ``Authorization: Bearer KEY``. ``max_upload_mb``: the largest
    request body; ``max_images``: images per request; ``max_pixels``: the largest decoded
    image; ``max_queue``: images waiting before new ones are refused (503; each waits as a
    float32 array, 1.07 MB at 299 px, so the default 256 bounds the queue near 275 MB);
    ``unhealthy_after``: images in a row the model fails on (raises, or answers NaN/Inf) before
    readiness turns 503 (the next success turns it back). ``max_concurrency``,
    ``body_timeout_s``, ``request_timeout_s``: admission (see
    :class:`~inception.serve.admission.Admission`): requests in flight before new ones get 503
    unread, the time a body may take to arrive (408), the time a request may take (504). ``name``: the
    model's name in the v2 URLs (default: the file name without suffixes). ``spin=False``:
    ONNX Runtime's pool threads sleep between calls instead of spin-waiting (see
    :class:`~inception.infer.OnnxPredictor`).
    """
    limits = [("max_batch (--max-batch)", max_batch, 1), ("max_images (--max-images)", max_images, 1),
              ("workers (--workers)", workers, 1), ("threads (--threads)", threads, 1),
              ("max_wait_ms (--max-wait-ms)", max_wait_ms, 0), ("max_queue (--max-queue)", max_queue, 1),
              ("unhealthy_after (--unhealthy-after)", unhealthy_after, 1),
              ("max_concurrency (--max-concurrency)", max_concurrency, 1),
              ("body_timeout_s (--body-timeout-s)", body_timeout_s, 0.001),
              ("request_timeout_s (--request-timeout-s)", request_timeout_s, 0.001),
              ("max_pixels (--max-image-mp x 1e6)", max_pixels, 1)]
    for label, value, low in limits:
        if value is not None and value < low:
            raise UserError(f"{label} must be >= {low} (got {value})")
    if max_upload_mb <= 0:
        raise UserError(f"max_upload_mb (--max-upload-mb) must be > 0 (got {max_upload_mb})")
    predictor = model if isinstance(model, Predictor) else load_predictor(model, runtime=runtime, device=device,
                                                                         threads=threads, spin=spin)
    try:
        service = Service(predictor, name=name or default_name(predictor.path), max_batch=max_batch,
                          max_wait_ms=max_wait_ms, workers=workers or min(4, default_threads()),
                          max_upload_mb=max_upload_mb, max_images=max_images, max_pixels=max_pixels,
                          max_queue=max_queue, api_key=api_key or None, unhealthy_after=unhealthy_after)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"'{predictor.path}' fails on a [1,3,{predictor.image_size},{predictor.image_size}] input "
                        f"({type(e).__name__}: {str(e).strip()[:160]}); re-export the model") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.batcher.start()
        service.ready = True
        try:
            yield
        finally:   # uvicorn has drained the connections: answer what is still queued, then stop
            service.ready = False
            await service.batcher.stop()
            service.pool.shutdown(wait=True)

    app = FastAPI(title="inception serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Image classification with an Inception-family model: `/v1/classify` for images, the "
                              "Open Inference Protocol v2 under `/v2` for tensors, Prometheus `/metrics`.")
    app.state.service = service
    protected = [Depends(routes.authorize)] if service.api_key else []
    for exc, handler in routes.EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(Admission, max_concurrency=max_concurrency, body_timeout_s=body_timeout_s,
                       request_timeout_s=request_timeout_s, drain_bytes=2 * service.max_upload + 2**20,
                       metrics=service.metrics)
    app.add_middleware(_Observe, service=service)     # the metrics of every request
    app.include_router(routes.pages)
    app.include_router(routes.v1, dependencies=protected)
    app.include_router(routes.health)                  # no token: load balancers ask
    app.include_router(routes.v2, dependencies=protected)
    app.include_router(routes.prometheus, dependencies=protected)
    return app

"""The app's routes, one router per protocol: the pages (``/``, ``/docs``), v1 (``/v1/model``,
``/v1/classify``), the v2 health checks (no token), the Open Inference Protocol v2 and
Prometheus (``/metrics``). :func:`~inception.serve.app.create_app` includes them, with the
bearer-token check on every router but the pages' and the health checks'. Each handler
reads the model's :class:`~inception.serve.app.Service` from ``request.app.state.service``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .._version import __version__
from ..infer import softmax
from . import oip
from .docs import render_docs
from .errors import ServeError
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

STATIC = Path(__file__).resolve().parent / "static"
RAW_TYPES = ("application/octet-stream", "")       # plus image/*

CLASSIFY_BODY = {"required": True, "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "one or more image files (any field name)"}}}}}}
INFER_BODY = {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string", "enum": ["FP32", "BYTES"]},
            "data": {"type": "array", "items": {}}}}},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string", "enum": list(oip.OUTPUTS)},
            "parameters": {"type": "object", "properties": {"classification": {"type": "integer"}}}}}}}}}}}
ERRORS = {code: {"description": desc, "content": {"application/json": {"example": {"error": "...", "kind": kind}}}}
          for code, desc, kind in [(401, "bearer token missing or wrong", "unauthorized"),
                                   (413, "body over --max-upload-mb, too many images, or too many pixels",
                                    "too_large"),
                                   (415, "a content type this endpoint does not read", "unsupported_media_type"),
                                   (422, "not an image, truncated, a bad topk or tensor", "not_an_image")]}



bearer = HTTPBearer(auto_error=False, description="the server's --api-key")


async def authorize(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """``Authorization: Bearer KEY`` against the server's key, in constant time."""
    token = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(token.encode(), request.app.state.service.api_key.encode()):
        raise ServeError("unauthorized", ("missing" if not token else "wrong") + " bearer token; send "
                         "'Authorization: Bearer KEY' with the server's API key",
                         headers={"WWW-Authenticate": "Bearer"})


# ---------------------------------------------------------------------------------- errors: JSON, one line

async def _serve_error(request: Request, err: ServeError):
    return request.app.state.service.error_response(err)


async def _http_error(request: Request, exc: StarletteHTTPException):
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return await _serve_error(request, ServeError(kind, f"{request.method} {request.url.path}: {exc.detail}",
                                                  status=exc.status_code, headers=exc.headers))


async def _validation_error(request: Request, exc: RequestValidationError):
    problems = exc.errors()
    if any(p.get("loc", [None])[-1] == "topk" for p in problems):
        got = request.query_params.get("topk")
        return await _serve_error(request, ServeError("bad_topk", f"topk must be an integer >= 1 (got '{got}')"))
    text = "; ".join(f"{'.'.join(map(str, p.get('loc', [])))}: {p.get('msg')}" for p in problems)
    return await _serve_error(request, ServeError("bad_request", text[:300]))


async def _disconnect(request: Request, exc: ClientDisconnect):
    return await _serve_error(request, ServeError("bad_request", "the client disconnected before sending the "
                                                                 "whole body", status=499))


EXCEPTION_HANDLERS = {ServeError: _serve_error, StarletteHTTPException: _http_error,
                      RequestValidationError: _validation_error, ClientDisconnect: _disconnect}

# ---------------------------------------------------------------------------------- pages

pages = APIRouter()
_PAGE = (STATIC / "index.html").read_text(encoding="utf-8")


@pages.get("/", include_in_schema=False)
async def index():
    return HTMLResponse(_PAGE)


@pages.get("/docs", include_in_schema=False)
async def docs(request: Request):
    return HTMLResponse(render_docs(request.app.openapi()))


# ---------------------------------------------------------------------------------- v1

v1 = APIRouter(tags=["v1"])


@v1.get("/v1/model", summary="The model's metadata and the server's limits")
async def model_info(request: Request):
    return request.app.state.service.describe()


@v1.post("/v1/classify", openapi_extra={"requestBody": CLASSIFY_BODY}, responses=ERRORS,
         summary="Classify one image (the body) or several (multipart file fields)",
         description="Answers `{model, predictions: [{filename, topk: [{class, index, prob}]}], latency_ms, "
                     "timing_ms: {decode, queue, model, batch_size}}`, predictions in the order sent.")
async def classify(request: Request, topk: int = Query(5, ge=1, description="classes per image")):
    service = request.app.state.service
    start = time.perf_counter()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        files = await service.read_multipart(request)
    elif media in RAW_TYPES or media.startswith("image/"):
        files = [("body", await service.read_body(request))]
    else:
        hint = (" (curl --data-binary sends this type unless told otherwise: add -H 'Content-Type: image/jpeg')"
                if media == "application/x-www-form-urlencoded" else "")
        raise ServeError("unsupported_media_type", f"content type '{media}' is not read here; send the image "
                                                   "as the body (image/*, application/octet-stream) or as "
                                                   f"multipart/form-data file fields{hint}")
    if len(files) > service.max_images:
        raise ServeError("too_many_images", f"{len(files)} images in one request; this server takes at most "
                                            f"{service.max_images}")
    arrays, decode_s = await service.decode(files)
    logits, timing = await service.predict(arrays)
    probs = softmax(logits)
    k = min(topk, service.num_classes)      # as infer: capped at the number of classes
    order = np.argsort(-probs, axis=1)[:, :k]
    predictions = [{"filename": name, "topk": [{"class": service.classes[j], "index": int(j),
                                                "prob": float(probs[row, j])} for j in order[row]]}
                   for row, (name, _) in enumerate(files)]
    service.images += len(files)
    total = 1000 * (time.perf_counter() - start)
    return JSONResponse({"model": service.name, "predictions": predictions, "latency_ms": round(total, 3),
                         "timing_ms": {"decode": round(1000 * decode_s, 3), "queue": round(timing["queue"], 3),
                                       "model": round(timing["model"], 3), "batch_size": timing["batch_size"]}})


# ---------------------------------------------------------------------------------- v2 health (no token)

health = APIRouter(tags=["v2"])


def _ready(service) -> bool:
    return service.ready and service.batcher.running and service.batcher.healthy


@health.get("/v2/health/live", summary="Liveness (no token needed)")
async def live():
    return {"live": True}


@health.get("/v2/health/ready", summary="Readiness: the model is loaded and running (no token needed)")
async def ready(request: Request):
    ok = _ready(request.app.state.service)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


# ---------------------------------------------------------------------------------- v2 (Open Inference Protocol)

v2 = APIRouter(tags=["v2"])


@v2.get("/v2", summary="Server metadata")
async def server_metadata():
    return {"name": "inception", "version": __version__, "extensions": ["classification"]}


@v2.get("/v2/models/{name}", summary="Model metadata: inputs and outputs")
async def v2_model(name: str, request: Request):
    service = request.app.state.service
    service.check_model(name)
    return oip.model_metadata(service.name, platform=service.platform(), image_size=service.image_size,
                              num_classes=service.num_classes, input_name=service.input_name)


@v2.get("/v2/models/{name}/versions/{version}", include_in_schema=False)
async def v2_model_version(name: str, version: str, request: Request):
    return await v2_model(name, request)


@v2.get("/v2/models/{name}/ready", summary="Model readiness")
async def v2_model_ready(name: str, request: Request):
    service = request.app.state.service
    service.check_model(name)
    ok = _ready(service)
    return JSONResponse({"name": service.name, "ready": ok}, status_code=200 if ok else 503)


async def _infer(name: str, request: Request):
    service = request.app.state.service
    service.check_model(name)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("application/json", ""):
        raise ServeError("unsupported_media_type", f"content type '{media}' is not read here; send the inference "
                                                   "request as application/json")
    body = await service.read_body(request)
    if not body:
        raise ServeError("empty_body", "the body is empty; send an inference request as JSON")
    loop = asyncio.get_running_loop()
    req = await loop.run_in_executor(service.pool, lambda: oip.parse_infer_request(
        body, input_name=service.input_name, image_size=service.image_size, max_images=service.max_images))
    if req.datatype == "BYTES":
        arrays, _ = await service.decode([(f"element {i}", data) for i, data in enumerate(req.images)])
    else:
        arrays = list(req.tensor)
    logits, _ = await service.predict(arrays)
    service.images += req.count
    return JSONResponse(oip.infer_response(service.name, req, logits, softmax(logits), service.classes))


@v2.post("/v2/models/{name}/infer", summary="Inference (OIP v2)", openapi_extra={"requestBody": INFER_BODY},
         responses=ERRORS,
         description="One input: FP32 `[N,3,S,S]` (preprocessed as `GET /v1/model` describes) or BYTES `[N]` "
                     "(base64 image files). Outputs `logits` and `probabilities` (FP32 `[N,classes]`); with "
                     "`parameters.classification: K`, BYTES `[N,K]` strings `prob:index:label`.")
async def v2_infer(name: str, request: Request):
    return await _infer(name, request)


@v2.post("/v2/models/{name}/versions/{version}/infer", include_in_schema=False)
async def v2_infer_version(name: str, version: str, request: Request):
    return await _infer(name, request)


# ---------------------------------------------------------------------------------- metrics

prometheus = APIRouter(tags=["metrics"])


@prometheus.get("/metrics", summary="Prometheus metrics (text format)")
async def metrics(request: Request):
    return Response(request.app.state.service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

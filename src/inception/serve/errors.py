"""What a client did wrong (or what the server could not do), as one HTTP answer.

Every error the server sends is JSON ``{"error": "<one line>", "kind": "<kind>"}``: the
``error`` string is the Open Inference Protocol v2 error shape, ``kind`` is the label the
``inception_errors_total`` metric counts it under.
"""

from __future__ import annotations

# kind -> HTTP status: the whole vocabulary, documented in docs/serving.md
KINDS = {
    "empty_body": 400,              # no bytes
    "bad_multipart": 400,           # malformed multipart, or no file in it
    "bad_json": 400,                # v2 infer: the body is not a JSON object
    "unauthorized": 401,            # --api-key set, bearer token missing or wrong
    "not_found": 404,               # no such route
    "model_not_found": 404,         # v2: another model's name
    "method_not_allowed": 405,
    "body_timeout": 408,            # the body did not arrive within --body-timeout-s (a slow or stalled client)
    "too_large": 413,               # body over --max-upload-mb
    "too_many_images": 413,         # more images in one request than the server takes
    "decompression_bomb": 413,      # an image whose pixel count is over the limit
    "unsupported_media_type": 415,  # a content type the endpoint does not read
    "unsupported_image_format": 415,  # bytes that are no JPEG, PNG, WebP, BMP, GIF or TIFF (EPS, PDF, junk)
    "not_an_image": 422,            # bytes that do not decode as an image
    "truncated_image": 422,         # an image cut short
    "bad_topk": 422,
    "bad_tensor": 422,              # v2: wrong datatype, shape, size or input name
    "bad_request": 422,             # any other invalid parameter
    "overloaded": 503,              # --max-concurrency requests in flight, or --max-queue images waiting
    "request_timeout": 504,         # not answered within --request-timeout-s; its images left the queue
    "not_ready": 503,               # starting or shutting down
    "model_error": 500,             # the model call failed (a bug or a broken model file)
}


class ServeError(Exception):
    """An error answer: ``kind`` (a key of :data:`KINDS`, which gives the status) and a
    one-line ``message`` naming what was wrong and how to fix it."""

    def __init__(self, kind: str, message: str, *, headers: dict[str, str] | None = None,
                 status: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.status = status or KINDS[kind]
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.message, "kind": self.kind}

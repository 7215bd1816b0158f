"""The server's Prometheus metrics (``GET /metrics``, text format 0.0.4).

One :class:`Metrics` per app, on its own registry (several apps in one process, as in the
tests, do not share counters). Besides what an operator alerts on (requests by endpoint
and status, errors by kind, latency, queue depth), the decode / queue / model histograms
say where a request's time goes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from .errors import KINDS

# the classic text format, which every Prometheus reads (what generate_latest writes)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

disable_created_metrics()   # no *_created series: this process is a server, its start time is enough

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("inception_requests", "HTTP requests answered, by endpoint (route) and status code",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("inception_errors", "error answers, by kind (see docs/serving.md)",
                              ["kind"], registry=r)
        for kind in KINDS:
            self.errors.labels(kind)
        self.latency = Histogram("inception_request_duration_seconds", "time from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("inception_requests_in_flight", "requests being handled now", registry=r)
        self.client_left = Counter("inception_client_disconnects", "inference requests cancelled because the client "
                                   "disconnected before the answer (their images left the queue)", registry=r)
        self.images = Counter("inception_images", "images run through the model", registry=r)
        self.batch_size = Histogram("inception_batch_size", "images per model call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.queue_depth = Gauge("inception_queue_depth", "images waiting for a model call", registry=r)
        self.decode_seconds = Histogram("inception_decode_seconds", "decoding and preprocessing, per image",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("inception_queue_seconds", "wait from queued to its model call, per image",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.model_seconds = Histogram("inception_model_seconds", "one model call (a whole batch)",
                                       buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

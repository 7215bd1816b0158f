"""``inception bench serve``: a load test of ``inception serve``, side by side with ``inception infer``
(imported by the CLI alone, not by :mod:`inception.bench`: it needs the ``serve`` extra).

:func:`bench_serve` starts a real ``inception serve`` process on a free port of 127.0.0.1
(one per batching mode: dynamic batching, then ``--max-batch 1``), and drives it with a
closed-loop load generator in this process: ``concurrency`` clients (one asyncio task and
one keep-alive HTTP connection each, httpx) each send one image to ``POST /v1/classify``,
wait for the answer, and send the next, round-robin over the same image files. Each level
is warmed up, then timed for ``duration`` seconds; what the server spent is read from its
own Prometheus ``/metrics`` before and after (decode, queue, model call, batch sizes), so
the table says where a request's time goes. Every answer's top-1 class is checked against
``inception infer``'s for the same file.

The baseline is ``inception infer`` (:func:`~inception.infer.run_inference`) over the same
files, with the same model, batch size and model threads, decoding in as many workers as
the server's decode threads: decoding is included on both sides, so the ratio is the
server's own overhead (HTTP, the event loop, waiting for a batch to fill).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import httpx
import numpy as np
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from ..data.archive import max_archive_bytes, read_member
from ..data.folder import is_image_file
from ..errors import UserError
from ..export import write_model
from ..infer import default_threads, load_predictor, run_inference
from ..metadata import model_metadata
from ..models import create_model, list_models
from ..serve import ServerProcess
from .common import align_table, percentile
from .runtime import bench_runtimes, export_onnx, ort_version

log = logging.getLogger("inception")
logging.getLogger("httpx").setLevel(logging.WARNING)      # not one line per request of the load

MODES = ("dynamic", "max-batch 1")
STACK = re.compile(r"; (\w+), (\w+)\) at http")       # "... wait <= 5 ms; httptools, uvloop) at http://..."
ARCHIVES = (".tar", ".tar.gz", ".tgz")


@dataclass
class LoadResult:
    """One batching mode at one concurrency; times in ms."""

    mode: str                       # "dynamic" or "max-batch 1"
    max_batch: int
    concurrency: int
    requests: int                   # answered in the timed window (errors included)
    errors: int                     # answers that were not 200, and failed connections
    error_kinds: dict               # {status or exception name: count}
    mismatches: int                 # 200 answers whose top-1 class differs from infer's for the same file
    seconds: float                  # the timed window: first request sent -> last answer
    req_per_s: float
    img_per_s: float
    mean_ms: float                  # client-side latency
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_batch: float               # images per model call (the server's batch-size histogram)
    decode_ms: float                # per image, decoding and preprocessing (server)
    queue_ms: float                 # per image, queued -> its model call started (server)
    model_ms: float                 # per model call (a whole batch)
    server_ms: float                # per request, the server's own latency (its middleware's timer)
    ratio: float | None = None      # img_per_s / max-batch 1's at the same concurrency

    @property
    def other_server_ms(self) -> float:
        """Server time outside decode, queue and model: reading the body, the event loop, JSON."""
        return max(self.server_ms - self.decode_ms - self.queue_ms - self.model_ms, 0.0)

    @property
    def http_ms(self) -> float:
        """Client latency the server's timer does not see: HTTP parsing, the connection, the client."""
        return max(self.mean_ms - self.server_ms, 0.0)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "other_server_ms": self.other_server_ms, "http_ms": self.http_ms}


@dataclass
class ServeBench:
    """Everything one ``inception bench serve`` measured."""

    model: str
    runtime: str
    device: str                     # where the model ran ("cpu", "cuda:0"...)
    image_size: int
    images: int                     # distinct image files sent, round-robin
    images_source: str
    threads: int                    # the model's CPU threads, on both sides
    workers: int                    # the server's decode threads = infer's DataLoader workers
    max_batch: int
    max_wait_ms: float
    duration: float
    serve_args: list[str]
    infer_img_per_s: float | None   # median over the infer passes
    infer_passes: list[float] = field(default_factory=list)
    results: list[LoadResult] = field(default_factory=list)
    # the model call alone (no decoding, no HTTP), img/s at batch 1 and at max_batch: what
    # batching gains in the model itself on this machine, which a server's gain can only slightly exceed
    model_alone: dict[int, float] = field(default_factory=dict)
    http_stack: str = ""            # uvicorn's HTTP parser and event loop, as the server announced them

    @property
    def model_batching_gain(self) -> float | None:
        one, full = self.model_alone.get(1), self.model_alone.get(self.max_batch)
        return full / one if one and full and self.max_batch != 1 else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["results"] = [r.to_dict() for r in self.results]
        d["model_batching_gain"] = self.model_batching_gain
        return d


# --------------------------------------------------------------------------------------
# The images

def collect_images(path: str | Path | None, limit: int, workdir: Path) -> tuple[list[Path], str]:
    """Up to ``limit`` image files written under ``workdir`` (so that infer reads the very
    bytes the clients send): from a folder (recursively), a ``.tar``/``.tar.gz`` of images
    (its ``val`` split when it has one), or, with ``path=None``, synthetic 320x240 JPEGs."""
    if limit < 1:
        raise UserError(f"--num-images must be >= 1 (got {limit})")
    out = workdir / "images"
    out.mkdir(parents=True, exist_ok=True)
    if path is None:
        return _synthetic_images(out, limit), f"{limit} synthetic 320x240 JPEGs"
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"--images '{path}' does not exist; give a folder of images or a .tar.gz of them")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name))[:limit]
        if not files:
            raise UserError(f"--images folder '{path}' holds no image files ({', '.join(('.jpg', '.png', '...'))})")
        items = [(str(p.relative_to(path)), p.read_bytes()) for p in files]
    elif path.name.lower().endswith(ARCHIVES):
        items = _archive_images(path, limit)
    else:
        raise UserError(f"--images '{path}' is neither a folder nor a .tar/.tar.gz archive of images")
    files = []
    for i, (name, data) in enumerate(items):
        target = out / f"{i:05d}{Path(name).suffix.lower()}"
        target.write_bytes(data)
        files.append(target)
    return files, f"{len(files)} files of {path.name}"


def _archive_images(path: Path, limit: int) -> list[tuple[str, bytes]]:
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and is_image_file(m.name)]
            val = [m for m in members if "val" in Path(m.name).parts]
            chosen = sorted(val or members, key=lambda m: m.name)[:limit]
            items, held = [], 0
            for m in chosen:
                items.append((m.name, read_member(tar, m, path, held, max_archive_bytes())))
                held += m.size
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"--images '{path}' cannot be read as a tar archive ({e}); check the file") from None
    if not items:
        raise UserError(f"--images archive '{path}' holds no image files")
    return items


def _synthetic_images(out: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(n):
        base = rng.integers(0, 256, 3)
        wave = 60 * np.sin(xx / rng.uniform(8, 40) + yy / rng.uniform(8, 40))[..., None]
        pixels = np.clip(base + wave + rng.normal(0, 12, (240, 320, 3)), 0, 255).astype(np.uint8)
        target = out / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(target, quality=90)
        files.append(target)
    return files


# --------------------------------------------------------------------------------------
# The server's own account, from /metrics

def scrape(text: str) -> dict[str, float]:
    """Sums and counts of the server's histograms and counters, from its /metrics text."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith(("_sum", "_count")) or s.name == "inception_images_total":
                endpoint = s.labels.get("endpoint")
                if endpoint is not None and endpoint != "/v1/classify":
                    continue
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def _mean(after: dict, before: dict, name: str, scale: float = 1000.0) -> float:
    n = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return scale * total / n if n > 0 else 0.0


# --------------------------------------------------------------------------------------
# The load generator

@dataclass
class _Record:
    start: float
    end: float
    ok: bool
    kind: str
    mismatch: bool


async def _load(url: str, bodies: list[tuple[str, bytes]], expected: dict[str, str] | None, *, concurrency: int,
                seconds: float, timeout: float = 120.0) -> tuple[list[_Record], float]:
    """``concurrency`` clients, each sending its next image as soon as its last is answered,
    until ``seconds`` have passed; every record, and the window from first send to last answer."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    records: list[_Record] = []
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        begin = time.perf_counter()
        deadline = begin + seconds

        async def worker(k: int) -> None:
            i = k * 7919 % len(bodies)           # clients start at different images
            while time.perf_counter() < deadline:
                name, data = bodies[i]
                i = (i + 1) % len(bodies)
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/classify?topk=1", content=data,
                                          headers={"content-type": "application/octet-stream"})
                    ok = r.status_code == 200
                    kind = "200" if ok else str(r.status_code)
                    mismatch = False
                    if ok and expected is not None:
                        top = r.json()["predictions"][0]["topk"][0]["class"]
                        mismatch = top != expected.get(name, top)
                except httpx.HTTPError as e:
                    ok, kind, mismatch = False, type(e).__name__, False
                records.append(_Record(t0, time.perf_counter(), ok, kind, mismatch))

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        end = max((r.end for r in records), default=time.perf_counter())
    return records, end - begin


def _metrics(url: str) -> dict[str, float]:
    r = httpx.get(f"{url}/metrics", timeout=30)
    r.raise_for_status()
    return scrape(r.text)


def measure(url: str, bodies: list[tuple[str, bytes]], *, mode: str, max_batch: int, concurrency: int,
            duration: float, warmup: float, expected: dict[str, str] | None = None) -> LoadResult:
    """One load level against a running server: warm up, then time ``duration`` seconds."""
    if warmup > 0:
        asyncio.run(_load(url, bodies, None, concurrency=concurrency, seconds=warmup))
    before = _metrics(url)
    records, window = asyncio.run(_load(url, bodies, expected, concurrency=concurrency, seconds=duration))
    after = _metrics(url)
    lat = [1000 * (r.end - r.start) for r in records] or [0.0]
    kinds: dict[str, int] = {}
    for r in records:
        if not r.ok:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
    ok = sum(r.ok for r in records)
    calls = after.get("inception_batch_size_count", 0) - before.get("inception_batch_size_count", 0)
    images = after.get("inception_batch_size_sum", 0) - before.get("inception_batch_size_sum", 0)
    return LoadResult(
        mode=mode, max_batch=max_batch, concurrency=concurrency, requests=len(records),
        errors=len(records) - ok, error_kinds=kinds, mismatches=sum(r.mismatch for r in records),
        seconds=window, req_per_s=len(records) / window if window > 0 else 0.0,
        img_per_s=ok / window if window > 0 else 0.0,       # one image per request; errors classify none
        mean_ms=statistics.fmean(lat), p50_ms=percentile(lat, 50), p90_ms=percentile(lat, 90),
        p99_ms=percentile(lat, 99), mean_batch=images / calls if calls > 0 else 0.0,
        decode_ms=_mean(after, before, "inception_decode_seconds"),
        queue_ms=_mean(after, before, "inception_queue_seconds"),
        model_ms=_mean(after, before, "inception_model_seconds"),
        server_ms=_mean(after, before, "inception_request_duration_seconds"))


# --------------------------------------------------------------------------------------
# The whole benchmark

def _model_file(target: str, workdir: Path, image_size: int | None, num_classes: int, runtime: str = "auto") -> Path:
    """A model file as given, or a zoo model's name exported (random weights) as ``inception
    export`` would: to ONNX (BatchNorm folded), or to safetensors for ``runtime="torch"``."""
    path = Path(target).expanduser()
    if path.exists():
        return path
    if target not in list_models():
        raise UserError(f"--model '{target}' is neither a model file nor a model name; give an .onnx file, a "
                        f"checkpoint or run directory, or one of: {', '.join(list_models())}")
    model = create_model(target, num_classes=num_classes).eval()
    metadata = model_metadata(model, None, None, image_size=image_size)
    if runtime == "torch":
        path = workdir / f"{target}-{metadata['image_size']}.safetensors"
        return write_model(model, path, fmt="safetensors", metadata=metadata, image_size=metadata["image_size"])
    return export_onnx(model, metadata, workdir / f"{target}-{metadata['image_size']}.onnx")


def bench_serve(model: str | Path, *, images: str | Path | None = None, num_images: int = 256,
                concurrency: Sequence[int] = (1, 8, 32), duration: float = 20.0, warmup: float = 3.0,
                max_batch: int = 32, max_wait_ms: float = 5.0, threads: int | None = None,
                workers: int | None = None, baseline: bool = True, infer: bool = True, infer_passes: int = 3,
                image_size: int | None = None, num_classes: int = 1000, runtime: str = "auto",
                device: str = "cpu", serve_args: Sequence[str] = (), model_steps: int = 10,
                progress=None) -> ServeBench:
    """Load-test ``inception serve`` with ``model`` (a file, or a zoo model's name: random
    weights exported to ONNX) at each ``concurrency``, with dynamic batching (``max_batch``,
    ``max_wait_ms``) and, with ``baseline``, with ``--max-batch 1``; with ``infer``, time
    ``inception infer`` over the same files (``infer_passes`` passes, median). ``serve_args``:
    more ``inception serve`` options for both servers. With the baseline, the model call alone
    is also timed at batch 1 and ``max_batch`` (``model_steps`` calls each, medians): what
    batching gains in the model itself here. ``device``: where the model runs, for the server
    (``--device``), infer and the model alone alike (``cuda``: a zoo model name then runs on
    PyTorch with ``runtime="torch"``, on ONNX Runtime's CUDA provider otherwise)."""
    if not concurrency or any(c < 1 for c in concurrency):
        raise UserError(f"--concurrency values must be >= 1 (got {list(concurrency)})")
    for name, value in (("--duration", duration), ("--max-batch", max_batch), ("--infer-passes", infer_passes)):
        if value <= 0:
            raise UserError(f"{name} must be > 0 (got {value})")
    if warmup < 0:
        raise UserError(f"--warmup must be >= 0 (got {warmup})")
    threads = threads or default_threads()
    workers = workers or min(4, default_threads())
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="inception-bench-serve-") as tmp:
        work = Path(tmp)
        model_path = _model_file(str(model), work, image_size, num_classes, runtime)
        files, source = collect_images(images, num_images, work)
        predictor = load_predictor(model_path, runtime=runtime, device=device, threads=threads)
        bench = ServeBench(model=str(model), runtime=predictor.runtime, device=predictor.device,
                           image_size=predictor.image_size,
                           images=len(files), images_source=source, threads=threads, workers=workers,
                           max_batch=max_batch, max_wait_ms=max_wait_ms, duration=duration,
                           serve_args=list(serve_args), infer_img_per_s=None)
        # infer's answers: the baseline's speed, and every served answer's expected top-1
        expected = None
        passes = infer_passes if infer else 1
        for k in range(passes):
            say(f"infer pass {k + 1}/{passes}: {len(files)} images, batch {max_batch}, {threads} threads, "
                f"{workers} workers")
            r = run_inference(predictor, work / "images", batch_size=max_batch, topk=1, workers=workers,
                              progress=False)
            if r.skipped:
                raise UserError(f"{len(r.skipped)} of the --images files cannot be read as images (first: "
                                f"{r.skipped[0]['path']}); give readable images")
            bench.infer_passes.append(r.img_per_s)
            expected = {Path(p["path"]).name: p["topk"][0][0] for p in r.predictions}
        if infer:
            bench.infer_img_per_s = statistics.median(bench.infer_passes)
        del predictor
        if baseline and max_batch != 1:
            say(f"the model alone: batch 1 and {max_batch}, {model_steps} calls each")
            for r in bench_runtimes([str(model_path)], batch_sizes=(1, max_batch), steps=model_steps, warmup=2,
                                    threads=threads, device=device):
                bench.model_alone[r.batch_size] = r.img_per_s
        bodies = [(f.name, f.read_bytes()) for f in files]
        modes = [("dynamic", max_batch)] + ([("max-batch 1", 1)] if baseline and max_batch != 1 else [])
        for mode, batch in modes:
            args = ["--max-batch", str(batch), "--max-wait-ms", str(max_wait_ms), "--threads", str(threads),
                    "--workers", str(workers), "--runtime", runtime, "--device", device, "--no-access-log",
                    *serve_args]
            with ServerProcess(model_path, args=args) as server:
                if m := STACK.search(server.banner or ""):
                    bench.http_stack = f"{m.group(1)}, {m.group(2)}"
                for c in concurrency:
                    say(f"{mode}: concurrency {c}, {warmup:g} s warm-up + {duration:g} s")
                    bench.results.append(measure(server.url, bodies, mode=mode, max_batch=batch, concurrency=c,
                                                 duration=duration, warmup=warmup, expected=expected))
    base = {r.concurrency: r for r in bench.results if r.mode == "max-batch 1"}
    for r in bench.results:
        if r.concurrency in base and base[r.concurrency].img_per_s > 0:
            r.ratio = r.img_per_s / base[r.concurrency].img_per_s
    return bench


@dataclass
class OverloadResult:
    """``inception bench serve --overload``: a burst far past the server's limits."""

    requests: int
    clients: int
    serve_args: list[str]
    statuses: dict[str, int]            # status (or transport error) -> count
    retry_after_missing: int            # 503s without a Retry-After header
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_start_mb: float | None          # the server's resident memory (Linux), before and at its peak
    rss_peak_mb: float | None

    @property
    def lost(self) -> int:
        """Requests with no HTTP answer (timed out, reset): a server that holds should have none."""
        return sum(n for k, n in self.statuses.items() if not k.isdigit())

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "lost": self.lost}


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MB (Linux ``/proc``), None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _burst(url: str, bodies: list[tuple[str, bytes]], requests: int, clients: int, pid: int | None,
                 timeout: float) -> tuple[list[tuple[str, float, bool]], float, float | None]:
    """``requests`` POSTs from ``clients`` concurrent connections: (status, ms, Retry-After
    present) of each, the wall time, the server's peak RSS."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    gate, peak = asyncio.Semaphore(clients), [rss_mb(pid) if pid else None]

    async def watch() -> None:
        while True:
            now = rss_mb(pid)
            if now is not None:
                peak[0] = max(peak[0] or 0.0, now)
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def one(i: int) -> tuple[str, float, bool]:
            async with gate:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/classify?topk=1", content=bodies[i % len(bodies)][1],
                                          headers={"content-type": "application/octet-stream"})
                    status, retry = str(r.status_code), "retry-after" in r.headers
                except httpx.HTTPError as e:
                    status, retry = type(e).__name__, False
                return status, 1000 * (time.perf_counter() - t0), retry
        watcher = asyncio.create_task(watch()) if pid else None
        begin = time.perf_counter()
        out = await asyncio.gather(*(one(i) for i in range(requests)))
        seconds = time.perf_counter() - begin
        if watcher is not None:
            watcher.cancel()
    return out, seconds, peak[0]


def overload(url: str, bodies: list[tuple[str, bytes]], *, requests: int = 1000, clients: int = 200,
             pid: int | None = None, serve_args: Sequence[str] = (), timeout: float = 120.0) -> OverloadResult:
    """Send ``requests`` images from ``clients`` concurrent clients to a running server
    (``pid``: its process, for its memory) and count what came back."""
    start_rss = rss_mb(pid) if pid else None
    records, seconds, peak = asyncio.run(_burst(url, bodies, requests, clients, pid, timeout))
    statuses: dict[str, int] = {}
    for status, _, _ in records:
        statuses[status] = statuses.get(status, 0) + 1
    lat = [ms for _, ms, _ in records]
    return OverloadResult(requests=requests, clients=clients, serve_args=list(serve_args), statuses=statuses,
                          retry_after_missing=sum(1 for st, _, retry in records if st == "503" and not retry),
                          seconds=seconds, p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), max_ms=max(lat),
                          rss_start_mb=start_rss, rss_peak_mb=peak)


def bench_overload(model: str | Path, *, images: str | Path | None = None, num_images: int = 64,
                   requests: int = 1000, clients: int = 200, threads: int | None = None, workers: int | None = None,
                   max_batch: int = 32, runtime: str = "auto", device: str = "cpu", image_size: int | None = None,
                   num_classes: int = 1000, serve_args: Sequence[str] = ()) -> OverloadResult:
    """Start ``inception serve`` with ``serve_args`` (the settings under test, e.g.
    ``--max-concurrency 16 --max-queue 64``) and send it a burst of ``requests`` from
    ``clients`` at once: what each client got, how long, and the server's memory."""
    if requests < 1 or clients < 1:
        raise UserError(f"--requests and --clients must be >= 1 (got {requests}, {clients})")
    threads = threads or default_threads()
    workers = workers or min(4, default_threads())
    with tempfile.TemporaryDirectory(prefix="inception-bench-overload-") as tmp:
        work = Path(tmp)
        model_path = _model_file(str(model), work, image_size, num_classes, runtime)
        files, _ = collect_images(images, num_images, work)
        bodies = [(f.name, f.read_bytes()) for f in files]
        args = ["--max-batch", str(max_batch), "--threads", str(threads), "--workers", str(workers), "--runtime",
                runtime, "--device", device, "--no-access-log", *serve_args]
        with ServerProcess(model_path, args=args) as server:
            return overload(server.url, bodies, requests=requests, clients=clients, pid=server.proc.pid,
                            serve_args=serve_args)


def format_overload(r: OverloadResult) -> str:
    rows = [["answer", "requests", "share"]]
    for status, n in sorted(r.statuses.items()):
        rows.append([status, str(n), f"{100 * n / r.requests:.1f}%"])
    rss = (f"; server memory {r.rss_start_mb:.0f} MB -> peak {r.rss_peak_mb:.0f} MB "
           f"(+{r.rss_peak_mb - r.rss_start_mb:.0f} MB)" if r.rss_start_mb is not None and r.rss_peak_mb else "")
    settings = " ".join(r.serve_args) or "(defaults)"
    lines = [f"overload: {r.requests} requests from {r.clients} clients at once, serve {settings}",
             align_table(rows),
             f"in {r.seconds:.1f} s; latency p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms, max {r.max_ms:.0f} ms{rss}",
             f"lost (no HTTP answer): {r.lost}; 503 without Retry-After: {r.retry_after_missing}"]
    return "\n".join(lines)


def format_serve(bench: ServeBench) -> str:
    """The load table, where the time goes, and the ratios."""
    extra = f", serve options {' '.join(bench.serve_args)}" if bench.serve_args else ""
    head = (f"{Path(bench.model).name} on {bench.runtime} ({bench.device}) at {bench.image_size} px; "
            f"{bench.threads} model threads, "
            f"{bench.workers} decode workers{extra}; uvicorn ({bench.http_stack or '?'}); {bench.images_source}; "
            f"{bench.duration:g} s per level; torch "
            f"{torch.__version__}, onnxruntime {ort_version()}")
    cols = ("mode", "conc", "req/s", "img/s", "p50 ms", "p90 ms", "p99 ms", "batch", "errors", "vs max-batch 1")
    rows = [cols]
    for r in bench.results:
        errs = str(r.errors) + (f" ({', '.join(f'{k}: {v}' for k, v in r.error_kinds.items())})" if r.errors else "")
        ratio = "" if r.ratio is None else ("1.00x (baseline)" if r.mode == "max-batch 1" else f"{r.ratio:.2f}x")
        rows.append((r.mode, str(r.concurrency), f"{r.req_per_s:,.1f}", f"{r.img_per_s:,.1f}", f"{r.p50_ms:.1f}",
                     f"{r.p90_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.mean_batch:.1f}", errs, ratio))
    table = align_table(rows, left=(0, 8, 9))
    cols2 = ("mode", "conc", "latency ms", "decode", "queue", "model call", "other server", "HTTP + client")
    rows2 = [cols2]
    for r in bench.results:
        rows2.append((r.mode, str(r.concurrency), f"{r.mean_ms:.1f}", f"{r.decode_ms:.1f}", f"{r.queue_ms:.1f}",
                      f"{r.model_ms:.1f}", f"{r.other_server_ms:.1f}", f"{r.http_ms:.1f}"))
    lines = [head, "", table, "", "where a request's time goes (means, ms; decode and queue per image, the model "
             "call per batch):", align_table(rows2, left=(0,))]
    if bench.infer_img_per_s:
        lines += ["", f"inception infer on the same files (batch {bench.max_batch}, {bench.threads} threads, "
                      f"{bench.workers} workers): {bench.infer_img_per_s:,.1f} img/s (median of "
                      f"{len(bench.infer_passes)}: {', '.join(f'{v:.1f}' for v in bench.infer_passes)})"]
        for r in bench.results:
            if r.mode == "dynamic":
                lines.append(f"  dynamic batching at concurrency {r.concurrency}: "
                             f"{100 * r.img_per_s / bench.infer_img_per_s:.0f}% of infer's img/s")
    if bench.model_batching_gain:
        one, full = bench.model_alone[1], bench.model_alone[bench.max_batch]
        lines.append(f"the model call alone (no decoding, no HTTP; medians): batch 1 {one:,.1f} img/s, batch "
                     f"{bench.max_batch} {full:,.1f} img/s: {bench.model_batching_gain:.2f}x, what batching gains "
                     "in the model itself here (a server's per-call costs, amortised too, add a little to it)")
    mism = sum(r.mismatches for r in bench.results)
    if bench.infer_passes:
        lines.append(f"answers checked against infer's top-1: {mism} differ")
    return "\n".join(lines)

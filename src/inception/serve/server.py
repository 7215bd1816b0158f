"""Running the app: in this process (:func:`run_server`, what ``inception serve`` calls), in a
background thread (:func:`serve_in_thread`), or as a child process
(:class:`ServerProcess`, for tests and load benchmarks: a real ``inception serve`` on a
free port).

The socket is bound before uvicorn starts (``port=0``: a free port, which the announced URL
names), and listens at once: a client that connects during start-up waits in the backlog.
On SIGTERM (or Ctrl-C) uvicorn stops accepting, lets every request it holds finish, then
the app answers what is still queued for the model; after a SIGTERM :func:`run_server`
returns normally (exit status 0).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit

import torch
import uvicorn
from fastapi import FastAPI

from ..errors import UserError
from .app import create_app

log = logging.getLogger("inception")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# uvicorn's HTTP parsers and event loops: the C ones (httptools, uvloop) when installed
# (each is also the name of the module it needs)
HTTP_IMPLS = ("h11", "httptools")
LOOP_IMPLS = ("asyncio", "uvloop")
URL_LINE = re.compile(r"serving .* at (http://\S+)")


@dataclass
class ServeSummary:
    url: str
    answered: int        # inference requests answered (/v1/classify, v2 infer), errors included
    images: int          # images classified
    seconds: float


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free one).

    Made with ``proto=IPPROTO_TCP``: asyncio sets TCP_NODELAY on the connections it accepts
    only from such a socket (``socket.socket(family, SOCK_STREAM)`` has proto 0). Without it
    Nagle's algorithm holds each response's body until the client acknowledges its headers,
    and the client delays that acknowledgement: 40 ms added to every request on a keep-alive
    connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or --host") \
            from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_impls(http: str = "auto", loop: str = "auto") -> tuple[str, str]:
    """The HTTP parser and event loop uvicorn will run: ``auto`` is httptools / uvloop when
    installed (as uvicorn itself decides), else h11 / asyncio; a named one must be installed."""
    out = []
    for flag, value, impls, fallback in (("--http", http, HTTP_IMPLS, "h11"), ("--loop", loop, LOOP_IMPLS, "asyncio")):
        fast = next(k for k in impls if k != fallback)
        if value == "auto":
            value = fast if importlib.util.find_spec(fast) is not None and not (
                fast == "uvloop" and sys.platform == "win32") else fallback
        elif value not in impls:
            raise UserError(f"{flag} '{value}' is not valid; choose from: auto, {', '.join(impls)}")
        elif importlib.util.find_spec(value) is None:
            raise UserError(f"{flag} {value} needs the '{value}' package: pip install {value} (or "
                            f"{flag} {fallback})")
        out.append(value)
    return out[0], out[1]


class _DrainingServer(uvicorn.Server):
    """uvicorn's server with Kubernetes' shutdown order: on SIGTERM readiness turns 503 at
    once while connections are still accepted (load balancers stop sending), ``unready_s``
    later the socket closes, then the requests in flight get ``timeout_graceful_shutdown``
    seconds to finish. Ctrl-C (SIGINT) and a second signal skip the wait."""

    def __init__(self, config: uvicorn.Config, service, unready_s: float) -> None:
        super().__init__(config)
        self.service, self.unready_s = service, float(unready_s)
        self._loop = None
        self._unready_since: float | None = None

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if sig == signal.SIGTERM and self._unready_since is None and self.unready_s > 0 and self._loop is not None \
                and not self.should_exit:
            self._unready_since = time.monotonic()
            self.service.ready = False           # /v2/health/ready: 503 from now on
            log.info("SIGTERM: not ready; closing the socket in %g s, then draining", self.unready_s)
            self._loop.call_soon_threadsafe(self._loop.call_later, self.unready_s, super().handle_exit, sig, frame)
            return
        super().handle_exit(sig, frame)


def run_server(model, *, host: str = "127.0.0.1", port: int = 8000, access_log: bool = True,
               log_level: str = "info", http: str = "auto", loop: str = "auto",
               announce: Callable[[str], None] | None = None, drain_timeout_s: float = 30.0,
               unready_s: float = 2.0, **app_options) -> ServeSummary:
    """Serve ``model`` (see :func:`~inception.serve.app.create_app` for ``app_options``)
    until SIGTERM or Ctrl-C; ``announce(line)`` is called once the socket listens, with a
    line that names the URL. ``http`` / ``loop``: uvicorn's HTTP parser (h11, httptools) and
    event loop (asyncio, uvloop); ``auto``: the fast ones when installed. On SIGTERM readiness
    turns 503 first, ``unready_s`` later new connections stop, then requests in flight get
    ``drain_timeout_s`` seconds. Returns what was served."""
    if drain_timeout_s <= 0 or unready_s < 0:
        raise UserError(f"--drain-timeout-s must be > 0 and --unready-s >= 0 (got {drain_timeout_s}, {unready_s})")
    http, loop = uvicorn_impls(http, loop)
    if host not in LOOPBACK and not app_options.get("api_key"):
        log.warning("serving on %s without an API key: anyone who can reach this address can use the model "
                    "(set --api-key or INCEPTION_API_KEY)", host)
    app = create_app(model, **app_options)
    service = app.state.service
    sock = bind(host, port)
    url = url_of(sock)
    line = (f"serving {service.name} ({service.predictor.describe()}, batch <= {service.batcher.max_batch}, "
            f"wait <= {1000 * service.batcher.max_wait:g} ms; {http}, {loop}) at {url}  (web page {url}/, API "
            f"{url}/docs)")
    (announce or log.info)(line)
    server = _DrainingServer(uvicorn.Config(app, log_level=log_level, access_log=access_log, http=http, loop=loop,
                                            timeout_graceful_shutdown=drain_timeout_s, lifespan="on"),
                             service, unready_s)
    torch_threads = torch.get_num_threads()
    if service.predictor.runtime == "onnxruntime":
        # the decode threads' tensor ops (to float, normalize) run one thread each, as in infer's
        # DataLoader workers; the model's threads are ONNX Runtime's own
        torch.set_num_threads(1)
    start = time.perf_counter()
    # uvicorn drains on SIGTERM, then raises the signal again under the handler it found: make
    # that one a no-op, so that a drained server ends like a finished command
    terminate = signal.signal(signal.SIGTERM, lambda *_: None) if _main_thread() else None
    try:
        server.run(sockets=[sock])
    finally:
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)
        torch.set_num_threads(torch_threads)
        sock.close()
    if not server.started:
        raise UserError(f"the server at {url} did not start (see the log above)")
    if signal.SIGINT in getattr(server, "_captured_signals", ()):
        # uvicorn drained on Ctrl-C and raised SIGINT again inside asyncio's runner, whose own SIGINT
        # handler can swallow it (a race, seen about once in four loaded runs): Ctrl-C still ends as one
        raise KeyboardInterrupt
    return ServeSummary(url, service.answered, service.images, time.perf_counter() - start)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def serve_in_thread(model_or_app, *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 120.0,
                    **app_options) -> Iterator[str]:
    """``with serve_in_thread(model) as url:`` a real HTTP server in a background thread of
    this process (a path, a Predictor or an app from :func:`create_app`); stopped, with a
    drain, on leaving the block."""
    app = model_or_app if isinstance(model_or_app, FastAPI) else create_app(model_or_app, **app_options)
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="inception-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server thread did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


class ServerProcess:
    """``inception serve`` as a child process on a free port: ``start()`` returns its URL
    once it answers ``/v2/health/ready``; ``stop()`` sends SIGTERM and waits.

    ``args`` are more ``inception serve`` options (``["--max-batch", "8"]``); ``env`` is
    added to this process's environment. The child imports this very ``inception`` package
    (its folder leads ``PYTHONPATH``), not another install. Its stdout and stderr are kept
    (``stdout``, ``stderr``)."""

    def __init__(self, model: str | Path, *, host: str = "127.0.0.1", port: int = 0, args: Sequence[str] = (),
                 env: dict[str, str] | None = None, python: str = sys.executable) -> None:
        self.command = [python, "-m", "inception", "serve", "--model", str(model), "--host", host, "--port", str(port),
                        *args]
        self.env = {**os.environ, **(env or {})}
        package_root = str(Path(__file__).resolve().parents[2])
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, self.env.get("PYTHONPATH", "")) if p)
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.banner: str | None = None     # the line it printed on start ("serving ... at URL ...")
        self._out: list[str] = []
        self._err = tempfile.TemporaryFile("w+")
        self._seen = threading.Event()
        self._reader: threading.Thread | None = None

    def _read(self) -> None:
        for text in self.proc.stdout:
            self._out.append(text)
            if self.url is None and (m := URL_LINE.search(text)):
                self.url, self.banner = m.group(1), text.strip()
                self._seen.set()
        self._seen.set()

    def start(self, timeout: float = 180.0) -> str:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._err, text=True, env=self.env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        self._seen.wait(timeout)
        if self.url is None:
            self.kill()
            raise RuntimeError(f"inception serve did not start: {self.stderr[-2000:]}")
        local = urlsplit(self.url)          # the child's own address, as it printed it: never a remote host
        while time.monotonic() < deadline:
            conn = HTTPConnection(local.hostname, local.port, timeout=5)
            try:
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    return self.url
            except OSError:
                pass
            finally:
                conn.close()
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"inception serve did not become ready: {self.stderr[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit (after a signal sent elsewhere); its exit status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            self.kill()
            self._err.close()

"""``inception serve``: an HTTP inference server with dynamic batching and a web page.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client):
``pip install 'inception[serve]'``. Importing this package without it raises
``ModuleNotFoundError``; the CLI turns that into a one-line error.

* :func:`create_app`: the FastAPI app for one model (:mod:`.app`);
* :func:`run_server`: serve it until SIGTERM (:mod:`.server`); :func:`serve_in_thread` and
  :class:`ServerProcess` start one on a free port from Python (tests, benchmarks).
"""

from .app import create_app, default_name
from .batcher import Batcher
from .errors import KINDS, ServeError
from .images import ImageDecoder
from .server import ServerProcess, ServeSummary, run_server, serve_in_thread

__all__ = ["Batcher", "ImageDecoder", "KINDS", "ServeError", "ServeSummary", "ServerProcess", "create_app",
           "default_name", "run_server", "serve_in_thread"]

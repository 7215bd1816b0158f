"""Dynamic batching: concurrent requests' images gathered into one model call.

Each image is queued with its own future. One asyncio task takes the first waiting image,
then gathers more until it holds ``max_batch`` or ``max_wait_ms`` have passed since the
first, stacks them and runs the model in its one worker thread (the event loop keeps
accepting and decoding meanwhile; what arrives during a model call is the next batch).
``max_batch=1`` runs every image on its own, at once: no batching, no waiting.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ServeError
from .metrics import Metrics


def _stopping() -> ServeError:
    return ServeError("not_ready", "the server is stopping; retry on another replica", headers={"Retry-After": "5"})


@dataclass
class Result:
    """One image's model output and how it got there."""

    logits: np.ndarray          # (num_classes,)
    queue_s: float              # queued -> its model call started
    model_s: float              # the whole model call
    batch_size: int             # images in that call


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future
    queued: float


class Batcher:
    """``await batcher.submit(x)`` -> :class:`Result` for one CHW image, batched with
    whatever else is waiting. ``start()`` and ``stop()`` run on the server's event loop."""

    def __init__(self, model: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256, metrics: Metrics | None = None, unhealthy_after: int = 5) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0 (got {max_wait_ms})")
        self.model = model
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="inception-model")
        self.pending = 0                      # images submitted and not answered yet
        self.failures = 0                     # images in a row the model failed on (raised, or NaN/Inf)
        self.unhealthy_after = int(unhealthy_after)
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="inception-batcher")

    async def stop(self) -> None:
        """Answer every image already submitted, then stop the task and the model thread."""
        if self._task is not None:
            while self.pending and not self._task.done():
                await asyncio.sleep(0.01)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.executor.shutdown(wait=True)

    async def submit(self, x: np.ndarray) -> Result:
        if not self.running:
            raise ServeError("not_ready", "the model is not running (the server is starting or stopping); retry",
                             headers={"Retry-After": "5"})
        if self._queue.qsize() >= self.max_queue:
            raise ServeError("overloaded", f"{self._queue.qsize()} images are already waiting for the model; retry "
                                           "later or send fewer at once", headers={"Retry-After": "1"})
        item = _Item(x, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.put_nowait(item)
        self._set_depth()
        self.pending += 1
        try:
            return await item.future
        finally:
            self.pending -= 1

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._queue.qsize())

    async def _gather(self) -> list[_Item]:
        items = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait
        try:
            while len(items) < self.max_batch:
                if not self._queue.empty():
                    items.append(self._queue.get_nowait())
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
        except asyncio.CancelledError:     # taken off the queue: answered, not lost
            self._answer_error(items, _stopping())
            raise
        self._set_depth()
        return items

    async def _loop(self) -> None:
        """Forever: gather a batch, run it, answer it. Nothing a model or a batch does ends this
        task: every exception answers the images it concerns and the loop goes on; when the
        task is cancelled (shutdown), the images still queued get ``not_ready``."""
        items: list[_Item] = []
        try:
            while True:
                items = []
                items = [it for it in await self._gather() if not it.future.done()]   # done: its client left
                if items:
                    try:
                        await self._run(items)
                    except Exception as e:   # a bug here, not the model's: answer, never leave a request hanging
                        self._answer_error(items, ServeError("model_error", f"the batch failed ({type(e).__name__}: "
                                                                            f"{str(e).strip()[:200]})"))
        finally:
            error = _stopping()
            self._answer_error(items, error)
            while self._queue is not None and not self._queue.empty():
                self._answer_error([self._queue.get_nowait()], error)

    async def _run(self, items: list[_Item]) -> None:
        """One model call for ``items``. If it fails, each image is run again on its own, so
        only the requests whose image breaks the model get ``model_error``."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            logits = await loop.run_in_executor(self.executor, self.model, np.stack([it.x for it in items]))
            logits = np.asarray(logits)
            if logits.ndim != 2 or len(logits) != len(items):
                raise ValueError(f"the model returned shape {logits.shape} for a batch of {len(items)}")
        except Exception as e:
            if len(items) > 1:
                for it in items:
                    await self._run([it])
                return
            self._model_failed(items, ServeError("model_error", f"the model call failed ({type(e).__name__}: "
                                                                f"{str(e).strip()[:200]})"))
            return
        seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(items))
            self.metrics.model_seconds.observe(seconds)
            self.metrics.images.inc(len(items))
        for row, it in enumerate(items):
            if self.metrics is not None:
                self.metrics.queue_seconds.observe(start - it.queued)
            if not np.isfinite(logits[row]).all():     # JSON cannot carry NaN/Inf, and they answer nothing
                self._model_failed([it], ServeError("model_error", "the model returned NaN/Inf for this image"))
                continue
            self.failures = 0
            if not it.future.done():
                it.future.set_result(Result(logits[row], start - it.queued, seconds, len(items)))

    def _model_failed(self, items: list[_Item], error: ServeError) -> None:
        self.failures += len(items)
        self._answer_error(items, error)

    @staticmethod
    def _answer_error(items: list[_Item], error: ServeError) -> None:
        for it in items:
            if not it.future.done():
                it.future.set_exception(error)

    @property
    def healthy(self) -> bool:
        """False after ``unhealthy_after`` images in a row failed in the model (readiness turns
        503); the next image that succeeds makes it True again."""
        return self.failures < self.unhealthy_after

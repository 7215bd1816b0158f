"""The batcher under model failures: only the bad image's request fails, the task never dies
with requests pending, readiness follows consecutive failures."""

import asyncio

import numpy as np
import pytest

from inception.serve.batcher import Batcher
from inception.serve.errors import ServeError

RAISE, NAN = -1.0, -2.0


def model(batch: np.ndarray) -> np.ndarray:
    """Logits = the first pixel of each image, 3 classes; a RAISE pixel breaks the whole
    batch, a NAN pixel gives that image NaN logits."""
    first = batch[:, 0, 0, 0]
    if (first == RAISE).any():
        raise RuntimeError("bad image in the batch")
    out = np.repeat(first[:, None], 3, axis=1).astype(np.float32)
    out[first == NAN] = np.nan
    return out


def image(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, np.float32)


async def _submit_all(batcher: Batcher, values) -> list:
    return await asyncio.gather(*(batcher.submit(image(v)) for v in values), return_exceptions=True)


def test_a_failing_batch_is_retried_one_image_at_a_time():
    async def go():
        b = Batcher(model, max_batch=8, max_wait_ms=50)
        await b.start()
        values = [float(i) for i in range(1, 17)]
        values[3], values[10] = RAISE, NAN
        results = await _submit_all(b, values)
        await b.stop()
        return values, results, b
    values, results, b = asyncio.run(go())
    for v, r in zip(values, results):
        if v in (RAISE, NAN):
            assert isinstance(r, ServeError) and r.kind == "model_error" and r.status == 500
            assert ("bad image in the batch" if v == RAISE else "NaN/Inf") in r.message
        else:
            assert not isinstance(r, Exception) and r.logits[0] == v
    assert b.healthy


def test_readiness_turns_after_k_failures_in_a_row_and_back_on_success():
    async def go():
        b = Batcher(model, max_batch=4, max_wait_ms=0, unhealthy_after=3)
        await b.start()
        states = []
        for v in (RAISE, NAN, 1.0, RAISE, RAISE, RAISE, RAISE, 2.0):
            await _submit_all(b, [v])
            states.append(b.healthy)
        assert b.running                       # never died
        await b.stop()
        return states
    assert asyncio.run(go()) == [True, True, True, True, True, False, False, True]


@pytest.mark.parametrize("broken", ["wrong shape", "not an array", "raises BaseException-free TypeError"])
def test_the_task_survives_anything_the_model_returns(broken):
    def bad(batch):
        if broken == "wrong shape":
            return np.zeros((len(batch) + 1, 3), np.float32)
        if broken == "not an array":
            return "oops"
        raise TypeError("nope")

    async def go():
        b = Batcher(bad, max_batch=4, max_wait_ms=5)
        await b.start()
        first = await _submit_all(b, [1.0, 2.0, 3.0])
        running = b.running
        b.model = model                        # fixed: the same task serves again
        second = await _submit_all(b, [4.0])
        await b.stop()
        return first, running, second
    first, running, second = asyncio.run(go())
    assert all(isinstance(r, ServeError) and r.kind == "model_error" for r in first)
    assert running and second[0].logits[0] == 4.0


def test_stopping_answers_every_queued_image():
    import threading
    release = threading.Event()

    def slow(batch):
        release.wait(5)
        return model(batch)

    async def go():
        b = Batcher(slow, max_batch=1, max_wait_ms=0)
        await b.start()
        tasks = [asyncio.create_task(b.submit(image(float(i)))) for i in range(1, 6)]
        await asyncio.sleep(0.05)              # the first is in the model, four wait in the queue
        b._task.cancel()                       # the task ends (as at shutdown) with images queued
        release.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        b.executor.shutdown(wait=True)
        return done
    results = asyncio.run(go())
    assert len(results) == 5                   # none hangs
    assert sum(isinstance(r, ServeError) and r.kind == "not_ready" for r in results) >= 4
    assert all(isinstance(r, ServeError) and r.headers.get("Retry-After") for r in results if
               isinstance(r, ServeError))


def test_overload_is_503_with_retry_after():
    async def go():
        b = Batcher(model, max_batch=1, max_wait_ms=0, max_queue=2)
        await b.start()
        b._queue.put_nowait(type("I", (), {"future": asyncio.get_running_loop().create_future()})())
        b._queue.put_nowait(type("I", (), {"future": asyncio.get_running_loop().create_future()})())
        with pytest.raises(ServeError) as e:
            await b.submit(image(1.0))
        b._task.cancel()
        return e.value
    err = asyncio.run(go())
    assert err.kind == "overloaded" and err.status == 503 and err.headers == {"Retry-After": "1"}

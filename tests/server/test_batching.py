"""How the batcher calls the model: on the event loop when it is quicker than a thread hop, in
slices when a request is larger than a call, and every request gets its own rows' answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from model.runtime import LinearRuntime, Prediction
from model.server.batching import ALONE_ROWS, CALL_SECONDS, INLINE_ROWS, MicroBatcher
from model.server.errors import RequestError


def _calls(
    seconds: Callable[[int], float], rows: int, requests: int, max_rows: int = 10_000, offload: bool = True
) -> list[tuple[str, int]]:
    """(thread, rows) of each model call for `requests` sequential requests of `rows` rows, on a
    model whose call of n rows takes `seconds(n)` by the batcher's clock (a clock of the test's
    own: the machine's speed plays no part)."""
    calls: list[tuple[str, int]] = []
    now = [0.0]

    def predict(X: np.ndarray) -> Prediction:
        calls.append((threading.current_thread().name, len(X)))
        now[0] += seconds(len(X))
        return Prediction(X[:, 0].copy(), None)

    async def run() -> None:
        batcher = MicroBatcher(
            predict, max_rows, 0.0, lambda: 0, lambda _r, _n: None, clock=lambda: now[0], offload=offload
        )
        try:
            for _ in range(requests):
                X = np.arange(rows, dtype=np.float64).reshape(-1, 1)
                assert (await batcher.predict(X)).values.tolist() == X[:, 0].tolist()
        finally:
            batcher.close()

    asyncio.run(run())
    return calls


def _threads_used(seconds_per_call: float, rows: int, calls: int, offload: bool = True) -> list[str]:
    """The thread each model call ran on, for a model whose calls take `seconds_per_call`."""
    return [thread for thread, _ in _calls(lambda _n: seconds_per_call, rows, calls, offload=offload)]


def test_quick_large_calls_run_inline_slow_ones_on_the_worker() -> None:
    rows = INLINE_ROWS * 30
    # A linear model's 1,000 rows take microseconds: after the first (measured) call on the
    # worker thread, the rest run on the event loop.
    quick = _threads_used(0.0, rows, 5)
    assert quick[0].startswith("mlops-predict")
    assert quick[1:] == [threading.main_thread().name] * 4
    # A forest's take milliseconds: always on the worker, so decoding goes on meanwhile.
    slow = _threads_used(0.003, rows, 4)
    assert all(name.startswith("mlops-predict") for name in slow)
    # A few rows always run inline.
    assert _threads_used(0.003, INLINE_ROWS, 2) == [threading.main_thread().name] * 2


def test_without_a_core_to_spare_every_call_runs_inline() -> None:
    # A worker per core (offload off): a forest's long calls stay on the event loop too, in
    # slices as before.
    calls = _calls(lambda n: 0.003 * n / 1000, 3000, 3, max_rows=1000, offload=False)
    assert {thread for thread, _ in calls} == {threading.main_thread().name}
    assert [rows for _, rows in calls][:3] == [1000, 1000, 1000]


def _call_sizes(seconds_per_row: float, rows: int, requests: int, max_rows: int) -> list[int]:
    """Rows of each model call, on a model that takes `seconds_per_row` per row."""
    return [n for _, n in _calls(lambda n: seconds_per_row * n, rows, requests, max_rows)]


def test_a_call_takes_more_rows_when_the_model_is_quick() -> None:
    # Before any measurement, and for a model slower than CALL_SECONDS per max_rows: slices of
    # max_rows (a 10,000-row request holds the others up by one slice).
    slow = CALL_SECONDS / 100
    assert _call_sizes(slow, 10_000, 2, 512) == [512] * 19 + [272] + [512] * 19 + [272]
    # A linear model's rows take tens of nanoseconds: once measured, a 10,000-row request is one call.
    quick = CALL_SECONDS / 50_000
    assert _call_sizes(quick, 10_000, 3, 512) == [512, 9488, 10_000, 10_000]
    # In between: as many rows as fit in CALL_SECONDS.
    middle = CALL_SECONDS / 2_000
    sizes = _call_sizes(middle, 10_000, 3, 512)
    last = sizes[np.searchsorted(np.cumsum(sizes), 20_000, side="right") :]  # the third request's calls
    assert sum(last) == 10_000 and all(1_990 <= rows <= 2_000 for rows in last[:-1]), last


def test_a_large_request_is_a_call_of_its_own_and_does_not_wait_for_others() -> None:
    """Joining large requests to others saves nothing and copies every row; small ones still
    share a call. A batcher that waits for requests still being decoded does not wait for them
    when a large request leads the queue."""
    calls: list[int] = []

    def predict(X: np.ndarray) -> Prediction:
        calls.append(len(X))
        return Prediction(X[:, 0].copy(), None)

    async def run(sizes: list[int], max_wait: float) -> list[list[float]]:
        batcher = MicroBatcher(predict, 100_000, max_wait, lambda: 1, lambda _r, _n: None, offload=False)
        try:
            requests = (batcher.predict(np.full((n, 1), float(n))) for n in sizes)
            # A waiting batcher would hold the large request for an hour: the guard fails it.
            answers = await asyncio.wait_for(asyncio.gather(*requests), 60)
        finally:
            batcher.close()
        return [answer.values.tolist() for answer in answers]

    sizes = [ALONE_ROWS, 1, 1, ALONE_ROWS + 1]
    assert asyncio.run(run(sizes, 0.0)) == [[float(n)] * n for n in sizes]
    assert calls == [ALONE_ROWS, 2, ALONE_ROWS + 1]
    calls.clear()
    assert asyncio.run(run([ALONE_ROWS], 3600.0)) == [[float(ALONE_ROWS)] * ALONE_ROWS]
    assert calls == [ALONE_ROWS]


def _slicing_run(cancel_big: bool) -> tuple[list[tuple[str, int]], Prediction | None, Prediction]:
    """A 3-slice request (max_rows 100, 250 rows) on a model whose calls run on the worker; a
    1-row request arrives while the first slice is in the model. Returns the model calls as
    (request, rows), the big request's answer (None when cancelled after its first slice) and
    the small one's."""
    calls: list[tuple[str, int]] = []
    first_slice_running = threading.Event()
    small_queued = threading.Event()

    def predict(X: np.ndarray) -> Prediction:
        calls.append(("small" if X[0, 0] < 0 else "big", len(X)))
        if len(calls) == 1:
            first_slice_running.set()
            assert small_queued.wait(10)
        return Prediction(X[:, 0].copy(), np.stack([X[:, 0], -X[:, 0]], axis=1))

    async def run() -> tuple[Prediction | None, Prediction]:
        # A model clock that says every call is slow, so that all of them go to the worker thread.
        ticks = iter(range(0, 10**6, 1))
        batcher = MicroBatcher(predict, 100, 0.0, lambda: 0, lambda _r, _n: None, clock=lambda: next(ticks))
        big_rows = np.arange(250, dtype=np.float64).reshape(-1, 1).repeat(2, axis=1)
        try:
            big = asyncio.ensure_future(batcher.predict(big_rows))
            while not first_slice_running.is_set():
                await asyncio.sleep(0.001)
            small = asyncio.ensure_future(batcher.predict(np.full((1, 2), -1.0)))
            await asyncio.sleep(0)  # the small request is queued now
            if cancel_big:
                big.cancel()
            small_queued.set()
            small_result = await small
            if cancel_big:
                # Another request after the cancelled one: the batcher is still serving.
                await batcher.predict(np.full((1, 2), -2.0))
                return None, small_result
            return await big, small_result
        finally:
            batcher.close()

    big_result, small_result = asyncio.run(run())
    return calls, big_result, small_result


def test_a_large_request_goes_in_slices_with_others_in_between() -> None:
    calls, big, small = _slicing_run(cancel_big=False)
    # The 1-row request waits for one slice of the 250-row one, not for all of its rows.
    assert calls == [("big", 100), ("small", 1), ("big", 100), ("big", 50)]
    assert big is not None and big.probabilities is not None
    assert big.values.tolist() == list(range(250))
    assert big.probabilities.shape == (250, 2) and big.probabilities[:, 1].tolist() == [
        -v for v in range(250)
    ]
    assert small.values.tolist() == [-1.0]


def test_an_abandoned_request_loses_its_queued_slices() -> None:
    """A request whose caller gave up (the server's time limit) keeps only the slice already in
    the model; its other rows are never predicted, and the batcher goes on serving."""
    calls, _, small = _slicing_run(cancel_big=True)
    assert calls == [("big", 100), ("small", 1), ("small", 1)]
    assert small.values.tolist() == [-1.0]


def test_an_answer_that_is_not_finite_fails_only_its_own_request() -> None:
    """A linear model's arithmetic overflows on a feature with a tiny spread (scikit-learn refuses
    such an input); the request it belongs to gets out_of_range with its own row number, and the
    request it was combined with gets its answer."""
    runtime = LinearRuntime(np.array([2.0]), np.array([0.0]), np.zeros(1), np.array([1e-300]), None)
    calls: list[int] = []

    def predict(X: np.ndarray) -> Prediction:
        calls.append(len(X))
        with np.errstate(over="ignore"):
            return runtime.predict(X)

    async def run() -> tuple[Any, ...]:
        batcher = MicroBatcher(predict, 100, 0.0, lambda: 0, lambda _r, _n: None)
        try:
            return await asyncio.gather(
                batcher.predict(np.array([[1.0]])),
                batcher.predict(np.array([[1.0], [3e38]])),
                return_exceptions=True,
            )
        finally:
            batcher.close()

    fine, refused = asyncio.run(run())
    assert calls == [3]  # one model call for both
    assert (
        np.isfinite(fine.values).all()
        and fine.values.tolist() == runtime.predict(np.array([[1.0]])).values.tolist()
    )
    assert isinstance(refused, RequestError)
    assert (refused.status, refused.code, refused.row) == (400, "out_of_range", 1)

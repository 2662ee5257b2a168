"""Combine concurrent prediction requests into one model call: a bounded wait, a row cap.

The wait is adaptive: the batcher only waits when other requests are already being
decoded (so they are about to arrive), never for a lone request, and never longer than
`max_wait`. Calls the model finishes sooner than a thread hop (a few rows, or any batch of a
linear model, by the time per row measured on earlier calls) run on the event loop; longer
ones run on one worker thread so that decoding continues meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from model.runtime import Prediction

__all__ = ["MicroBatcher"]

INLINE_ROWS = 32
INLINE_SECONDS = 1e-4
"""A model call expected to take less than this runs on the event loop (a thread hop costs as much)."""


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], Prediction],
        max_rows: int,
        max_wait: float,
        arriving: Callable[[], int],
        observe: Callable[[int, int], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._predict = predict
        self._clock = clock
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._arriving = arriving
        self._observe = observe
        self._queue: deque[tuple[np.ndarray, asyncio.Future[Prediction]]] = deque()
        self._rows = 0
        self._signal: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlops-predict")
        self._row_seconds: float | None = None
        """Model seconds per row, a moving average over calls (fixed costs included: an overestimate)."""

    async def predict(self, X: np.ndarray) -> Prediction:
        loop = asyncio.get_running_loop()
        if self._signal is None:
            self._signal = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append((X, future))
        self._rows += len(X)
        self._signal.set()
        return await future

    def _timed(self, X: np.ndarray) -> tuple[Prediction, float]:
        started = self._clock()
        result = self._predict(X)
        return result, self._clock() - started

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        signal = self._signal
        assert signal is not None
        while True:
            await signal.wait()
            signal.clear()
            if not self._queue:
                continue
            if self._max_wait > 0 and self._rows < self._max_rows and self._arriving() > 0:
                deadline = loop.time() + self._max_wait
                while self._rows < self._max_rows and self._arriving() > 0:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        await asyncio.wait_for(signal.wait(), remaining)
                    except TimeoutError:
                        break
                    signal.clear()
            batch: list[tuple[np.ndarray, asyncio.Future[Prediction]]] = []
            rows = 0
            while self._queue and (not batch or rows + len(self._queue[0][0]) <= self._max_rows):
                item = self._queue.popleft()
                rows += len(item[0])
                batch.append(item)
            self._rows -= rows
            if self._queue:
                signal.set()
            X = batch[0][0] if len(batch) == 1 else np.concatenate([x for x, _ in batch])
            self._observe(rows, len(batch))
            per_row = self._row_seconds
            inline = rows <= INLINE_ROWS or (per_row is not None and rows * per_row < INLINE_SECONDS)
            try:
                if inline:
                    result, seconds = self._timed(X)
                else:
                    result, seconds = await loop.run_in_executor(self._executor, self._timed, X)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._row_seconds = seconds / rows if per_row is None else 0.8 * per_row + 0.2 * seconds / rows
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_result(result)
                continue
            offset = 0
            for x, future in batch:
                end = offset + len(x)
                if not future.done():
                    proba = result.probabilities
                    future.set_result(
                        Prediction(result.values[offset:end], None if proba is None else proba[offset:end])
                    )
                offset = end

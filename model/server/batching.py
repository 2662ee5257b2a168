"""Combine concurrent prediction requests into one model call: a bounded wait, a row cap.

The wait is adaptive: the batcher only waits when other requests are already being
decoded (so they are about to arrive), never for a lone request, and never longer than
`max_wait`. Calls the model finishes sooner than a thread hop (a few rows, or any batch of a
linear model, by the time per row measured on earlier calls) run on the event loop; longer
ones run on one worker thread so that decoding continues meanwhile, when the process has a core
to spare for it (`offload`). Without one, the thread only takes turns with the event loop, and
the hop itself (a wake-up, and the rows read on another core) costs more than it saves.

A model call takes at most `max_rows` rows, or more when the model's measured time per row says
they still take under CALL_SECONDS (a linear model's 10,000 rows take half a millisecond; cutting
them into 512-row calls cost more than the model). A request larger than a call is predicted in
slices, each slice's remainder queued behind the requests that arrived during its call: a huge
request delays the others by one call, not by all of its rows, and a request whose caller gave
up (its time limit) loses its queued slices instead of holding the worker to the end. A request
whose answer holds a number that is not finite gets an error instead (checked once per model call).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from model.runtime import Prediction
from model.server.errors import RequestError

__all__ = ["MicroBatcher", "check_finite"]

INLINE_ROWS = 32
INLINE_SECONDS = 1e-4
"""A model call expected to take less than this runs on the event loop (a thread hop costs as much)."""
ALONE_ROWS = 2048
"""A request of this many rows is a model call of its own: its call's fixed cost is already small
next to its rows, and joining it to others would copy every row (and theirs)."""
CALL_SECONDS = 2e-3
"""A model call may exceed `max_rows` while it is expected to take less than this: the longest
that a large request holds up the requests that arrive behind it."""


class _Job:
    """One request's rows, predicted whole or (when larger than a model call) slice by slice."""

    __slots__ = ("X", "done", "future", "parts")

    def __init__(self, X: np.ndarray, future: asyncio.Future[Prediction]) -> None:
        self.X = X
        self.future = future
        self.done = 0
        """Rows handed to the model so far."""
        self.parts: list[Prediction] = []

    @property
    def left(self) -> int:
        """Rows not yet handed to the model."""
        return len(self.X) - self.done


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], Prediction],
        max_rows: int,
        max_wait: float,
        arriving: Callable[[], int],
        observe: Callable[[int, int], None],
        clock: Callable[[], float] = time.perf_counter,
        offload: bool = True,
    ) -> None:
        self._predict = predict
        self._clock = clock
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._arriving = arriving
        self._observe = observe
        self._queue: deque[_Job] = deque()
        self._rows = 0
        """Rows queued and not yet handed to the model."""
        self._signal: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlops-predict") if offload else None
        self._row_seconds: float | None = None
        """Model seconds per row, a moving average over calls of more than INLINE_ROWS rows (fixed
        costs included: an overestimate)."""

    async def predict(self, X: np.ndarray) -> Prediction:
        loop = asyncio.get_running_loop()
        if self._signal is None:
            self._signal = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        job = _Job(X, loop.create_future())
        self._queue.append(job)
        self._rows += len(X)
        self._signal.set()
        return await job.future

    def _timed(self, X: np.ndarray) -> tuple[Prediction, float]:
        started = self._clock()
        result = self._predict(X)
        return result, self._clock() - started

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        signal = self._signal
        assert signal is not None
        while True:
            await signal.wait()
            signal.clear()
            if not self._queue:
                continue
            call_rows = self._call_rows()
            await self._gather(signal, call_rows)
            batch = self._take(call_rows)
            if self._queue:
                signal.set()
            if batch:
                await self._call(batch)

    async def _gather(self, signal: asyncio.Event, call_rows: int) -> None:
        """Wait, at most `max_wait`, while requests still being decoded may fill the call (not
        for a request that will be a call of its own)."""
        if self._max_wait <= 0 or self._queue[0].left >= ALONE_ROWS:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        while self._rows < call_rows and self._arriving() > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(signal.wait(), remaining)
            except TimeoutError:
                return
            signal.clear()

    async def _call(self, batch: list[tuple[_Job, int, int]]) -> None:
        """One model call for `batch`: inline when quicker than a thread hop, else on the worker."""
        rows = sum(stop - start for _, start, stop in batch)
        job, start, stop = batch[0]
        X = job.X[start:stop] if len(batch) == 1 else np.concatenate([j.X[a:b] for j, a, b in batch])
        self._observe(rows, len(batch))
        per_row = self._row_seconds
        executor = self._executor
        inline = rows <= INLINE_ROWS or (per_row is not None and rows * per_row < INLINE_SECONDS)
        try:
            if inline or executor is None:
                result, seconds = self._timed(X)
            else:
                loop = asyncio.get_running_loop()
                result, seconds = await loop.run_in_executor(executor, self._timed, X)
        except Exception as exc:
            for job, _, _ in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
                self._rows -= job.left
            return
        if rows > INLINE_ROWS:  # a few rows' time is mostly the call's fixed cost
            rate = seconds / rows
            self._row_seconds = rate if per_row is None else 0.8 * per_row + 0.2 * rate
        self._deliver(batch, result)

    def _call_rows(self) -> int:
        """Most rows of the next model call: `max_rows`, or as many as take CALL_SECONDS."""
        per_row = self._row_seconds
        if not per_row:
            return self._max_rows
        return max(self._max_rows, int(CALL_SECONDS / per_row))

    def _take(self, call_rows: int) -> list[tuple[_Job, int, int]]:
        """The next model call's (job, first row, end row) slices: whole requests while they fit in
        `call_rows`, or one request of ALONE_ROWS or more, or one slice of a larger request.
        Requests that gave up are dropped here."""
        batch: list[tuple[_Job, int, int]] = []
        rows = 0
        queue = self._queue
        while queue:
            job = queue[0]
            left = job.left
            if job.future.done():
                queue.popleft()
                self._rows -= left
                continue
            alone = left >= ALONE_ROWS
            if batch and (alone or rows + left > call_rows):
                break
            queue.popleft()
            take = min(left, call_rows)
            batch.append((job, job.done, job.done + take))
            job.done += take
            rows += take
            if alone:
                break
        self._rows -= rows
        return batch

    def _deliver(self, batch: list[tuple[_Job, int, int]], result: Prediction) -> None:
        """Each slice's rows of `result` to its request; a request with rows left goes to the back
        of the queue, behind those that arrived during this call."""
        offset = 0
        finite = _finite(result)
        for job, start, stop in batch:
            part = result
            if len(batch) > 1:
                end = offset + stop - start
                proba = result.probabilities
                part = Prediction(result.values[offset:end], None if proba is None else proba[offset:end])
                offset = end
            if not (finite or job.future.done()):
                try:
                    check_finite(part, start)
                except RequestError as exc:
                    job.future.set_exception(exc)
            if job.future.done():
                self._rows -= len(job.X) - stop
            elif stop < len(job.X):
                job.parts.append(part)
                self._queue.append(job)
                assert self._signal is not None
                self._signal.set()
            else:
                job.future.set_result(_joined([*job.parts, part]) if job.parts else part)


def _finite(result: Prediction) -> bool:
    return all(
        values is None or values.dtype.kind != "f" or np.isfinite(values).all()
        for values in (result.values, result.probabilities)
    )


def check_finite(result: Prediction, first_row: int = 0) -> None:
    """Refuse an answer holding a number that is not finite: the model's arithmetic overflowed on
    extreme inputs (where scikit-learn refuses them), and JSON would carry it as null. `first_row`
    is the request's row of the answer's first."""
    for values in (result.values, result.probabilities):
        if values is not None and values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = ~np.isfinite(values)
            row = first_row + int(np.flatnonzero(bad if bad.ndim == 1 else bad.any(axis=1))[0])
            raise RequestError(
                400,
                "out_of_range",
                f"row {row}: the model's answer is not a finite number; its values are too extreme "
                "for this model",
                row=row,
            )


def _joined(parts: list[Prediction]) -> Prediction:
    proba = [p.probabilities for p in parts if p.probabilities is not None]
    return Prediction(np.concatenate([p.values for p in parts]), np.concatenate(proba) if proba else None)

"""Where the batcher runs a model call: on the event loop when it is quicker than a thread hop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from model.runtime import Prediction
from model.server.batching import INLINE_ROWS, MicroBatcher


def _threads_used(seconds_per_call: float, rows: int, calls: int) -> list[str]:
    """The thread each model call ran on, for a model whose calls take `seconds_per_call` by
    the batcher's clock (a clock of the test's own: the machine's speed plays no part)."""
    used: list[str] = []
    now = [0.0]

    def predict(X: np.ndarray) -> Prediction:
        used.append(threading.current_thread().name)
        now[0] += seconds_per_call
        return Prediction(np.zeros(len(X)), None)

    async def run() -> None:
        batcher = MicroBatcher(
            predict, 10_000, 0.0, lambda: 0, lambda _rows, _requests: None, clock=lambda: now[0]
        )
        try:
            for _ in range(calls):
                result = await batcher.predict(np.zeros((rows, 3)))
                assert len(result.values) == rows
        finally:
            batcher.close()

    asyncio.run(run())
    return used


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

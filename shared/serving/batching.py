"""DynamicBatcher: requests that arrive together go through one forward pass, each gets its own answer back."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from shared.errors import DeadlineExceeded, NotReady

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)
    taken: float | None = None  # when its batch was taken for the forward pass
    slack_s: float = 0.0  # how long its caller lets it wait for company, on top of the batcher's own rule

    @property
    def hold_until(self) -> float:
        return self.enqueued + self.slack_s


class DynamicBatcher(Generic[T, R]):
    """Collects items submitted from many threads and runs `fn` once per batch, in arrival order.

    `fn(items) -> results` must return one result per item, in order. If it raises for a batch of
    several items, each item is retried alone so that an error belongs to its own request.
    A batch waits for more items only while more are known to be coming (as many requests were in
    flight recently as the batch would hold), and never longer than `max_wait_ms` after it could have
    run: at concurrency 1 nothing waits at all. A caller that will not need the answer for a while (the
    gateway, waiting for a slower member anyway) may grant its item `slack_s`: the batch then also stays
    open, until it is full, for as long as every item in it still has slack left.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], max_batch_size: int, max_wait_ms: float,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._queue: deque[_Pending[T, R]] = deque()
        self._in_flight = 0  # submits not yet returned: queued, running, or just answered
        self._peak = 0  # most in flight since the last batch was taken: how many are known to be coming
        self._closed = False
        self._worker: threading.Thread | None = None
        self._worker_pid = 0

    # --- request side ----------------------------------------------------
    def submit(self, item: T, timeout: float | None = None, slack_s: float = 0.0) -> R:
        """Block until `item`'s result is ready; re-raise its own error; DeadlineExceeded after `timeout` s.

        `slack_s`: how long the item may wait for others to share its forward pass (0: only the usual rule).
        """
        return self.submit_timed(item, timeout, slack_s)[0]

    def submit_timed(self, item: T, timeout: float | None = None, slack_s: float = 0.0) -> tuple[R, float]:
        """`submit`, and how many seconds the item waited in the queue before its forward pass."""
        pending = self._enqueue(item, max(0.0, slack_s))
        try:
            result = self._wait(pending.future, timeout)
            return result, (pending.taken or pending.enqueued) - pending.enqueued
        finally:
            with self._cond:
                self._in_flight -= 1

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, finish the queued ones, and stop the worker thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            worker.join(timeout)

    @staticmethod
    def _wait(future: Future, timeout: float | None) -> R:
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():  # it finished just now, or fn raised its own TimeoutError for this item
                return future.result()
            future.cancel()  # still queued: never computed; already running: the answer is dropped
            raise DeadlineExceeded(f"No result within {timeout} s; the model is busy, retry later.") from None

    def _enqueue(self, item: T, slack_s: float = 0.0) -> _Pending[T, R]:
        with self._cond:
            if self._closed:
                raise NotReady("The model is shutting down; retry on another instance.")
            self._ensure_worker()
            pending: _Pending[T, R] = _Pending(item, slack_s=slack_s)
            self._queue.append(pending)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            self._cond.notify_all()
            return pending

    def _ensure_worker(self) -> None:
        # Started lazily and per process: threads do not survive gunicorn's fork.
        if self._worker is not None and self._worker_pid == os.getpid() and self._worker.is_alive():
            return
        self._worker_pid = os.getpid()
        self._worker = threading.Thread(target=self._run, name="dynamic-batcher", daemon=True)
        self._worker.start()

    # --- worker side -----------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _take_batch(self) -> list[_Pending[T, R]] | None:
        """Wait for the next batch; None once closed and drained."""
        free_since = time.monotonic()
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            self._wait_for_expected(free_since)
            batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            self._peak = self._in_flight
            taken = time.monotonic()
            for p in batch:
                p.taken = taken
        # Items whose submit already timed out are skipped; the rest are marked running (no longer cancellable).
        return [p for p in batch if p.future.set_running_or_notify_cancel()]

    def _wait_for_expected(self, free_since: float) -> None:
        """Hold the batch open while more items are known to be coming, at most max_wait once it could run,
        or while every queued item still has slack left; never once the batch is full."""
        # Counted from when the batch could first have run: the oldest arrival, or the end of the previous
        # batch if it arrived during that one. Counting from arrival alone would never wait after a busy spell,
        # and the answered requests of the previous batch, about to come back, would form a batch of their own.
        expected_until = max(self._queue[0].enqueued, free_since) + self.max_wait_s
        while not self._closed and len(self._queue) < self.max_batch_size:
            until = min(p.hold_until for p in self._queue)
            if len(self._queue) < self._peak:
                until = max(until, expected_until)
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _execute(self, batch: list[_Pending[T, R]]) -> None:
        self._report(len(batch))
        try:
            results = self._call([p.item for p in batch])
        except BaseException as exc:  # noqa: BLE001 - the worker must outlive any failure of fn
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning("batch of %d failed (%s: %s); retrying items one by one", len(batch), type(exc).__name__, exc)
            for p in batch:
                self._execute_alone(p)
            return
        for p, result in zip(batch, results):
            p.future.set_result(result)

    def _execute_alone(self, pending: _Pending[T, R]) -> None:
        try:
            pending.future.set_result(self._call([pending.item])[0])
        except BaseException as exc:  # noqa: BLE001
            pending.future.set_exception(exc)

    def _call(self, items: list[T]) -> Sequence[R]:
        results = self.fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"The batch function returned {len(results)} results for {len(items)} items.")
        return results

    def _report(self, size: int) -> None:
        if self.on_batch is None:
            return
        try:
            self.on_batch(size)
        except Exception:  # metrics must never fail a request
            log.exception("on_batch callback failed")

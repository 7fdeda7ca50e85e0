"""DynamicBatcher with a real deterministic numpy function and many threads."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared.serving.batching import DynamicBatcher
from shared.errors import DeadlineExceeded, NotReady

WEIGHTS = np.random.default_rng(0).normal(size=(8, 4))


def project(items: list[np.ndarray]) -> list[np.ndarray]:
    """A tiny 'model': one matrix product for the whole batch, one row back per item."""
    time.sleep(0.002)  # long enough for concurrent requests to pile up into batches
    return list(np.tanh(np.stack(items) @ WEIGHTS))


def project_rejecting_negatives(items: list[np.ndarray]) -> list[np.ndarray]:
    """Fails the whole batch if any item is bad, like a real forward pass would."""
    bad = [i for i, x in enumerate(items) if x[0] < 0]
    if bad:
        raise ValueError(f"item with first value {items[bad[0]][0]:.3f} is negative")
    return project(items)


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=8)


def expected(seed: int) -> np.ndarray:
    return np.tanh(vector(seed) @ WEIGHTS)


@pytest.fixture
def sizes() -> list[int]:
    return []


@pytest.fixture
def batcher(sizes: list[int]):
    b = DynamicBatcher(project, max_batch_size=8, max_wait_ms=5, on_batch=sizes.append)
    yield b
    b.close()


def test_many_threads_get_their_own_answers(batcher: DynamicBatcher, sizes: list[int]) -> None:
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = dict(zip(range(400), pool.map(lambda s: batcher.submit(vector(s), timeout=30), range(400))))
    for seed, answer in answers.items():
        np.testing.assert_allclose(answer, expected(seed), rtol=1e-12)
    assert sum(sizes) == 400
    assert max(sizes) > 1, "concurrent requests should share forward passes"
    assert max(sizes) <= 8


def test_batch_keeps_arrival_order_and_sizes_are_reported() -> None:
    gate, seen, sizes = threading.Event(), [], []

    def record(items: list[int]) -> list[int]:
        gate.wait(10)
        seen.append(list(items))
        return [i * 10 for i in items]

    b = DynamicBatcher(record, max_batch_size=16, max_wait_ms=5, on_batch=sizes.append)
    first = threading.Thread(target=b.submit, args=(0,))
    first.start()
    _wait_until(lambda: b._in_flight == 1 and not b._queue)  # item 0 is running and holds the worker
    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, b.submit(i))) for i in range(1, 6)]
    for i, t in enumerate(threads, start=1):
        t.start()
        _wait_until(lambda i=i: len(b._queue) == i)  # arrive one after another, in a known order
    gate.set()
    for t in [first, *threads]:
        t.join(10)
    b.close()
    assert seen == [[0], [1, 2, 3, 4, 5]]
    assert sizes == [1, 5]
    assert results == {i: i * 10 for i in range(1, 6)}


def test_error_belongs_to_its_own_request() -> None:
    b = DynamicBatcher(project_rejecting_negatives, max_batch_size=8, max_wait_ms=5)
    seeds = list(range(200))

    def call(seed: int) -> np.ndarray | Exception:
        x = vector(seed)
        x[0] = -1.0 if seed % 7 == 0 else abs(x[0])
        try:
            return b.submit(x, timeout=30)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = dict(zip(seeds, pool.map(call, seeds)))
    b.close()
    for seed, outcome in outcomes.items():
        if seed % 7 == 0:
            assert isinstance(outcome, ValueError) and "-1.000" in str(outcome)
        else:
            x = vector(seed)
            x[0] = abs(x[0])
            np.testing.assert_allclose(outcome, np.tanh(x @ WEIGHTS), rtol=1e-12)


def test_wrong_number_of_results_is_an_error_not_a_mixup() -> None:
    b = DynamicBatcher(lambda items: items[:-1], max_batch_size=4, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        b.submit("x", timeout=5)
    b.close()


def test_timeout_raises_deadline_exceeded_and_skips_the_queued_item() -> None:
    gate, seen = threading.Event(), []

    def slow(items: list[str]) -> list[str]:
        seen.extend(items)
        gate.wait(10)
        return [s.upper() for s in items]

    b = DynamicBatcher(slow, max_batch_size=4, max_wait_ms=0)
    holder = ThreadPoolExecutor(max_workers=1).submit(b.submit, "running")
    _wait_until(lambda: seen == ["running"])
    with pytest.raises(DeadlineExceeded, match="0.05 s"):
        b.submit("queued", timeout=0.05)
    gate.set()
    assert holder.result(10) == "RUNNING"
    assert b.submit("later", timeout=5) == "LATER"
    b.close()
    assert seen == ["running", "later"], "a request that timed out while queued is never computed"


def test_concurrency_one_does_not_wait_for_a_batch() -> None:
    b = DynamicBatcher(lambda items: [x + 1 for x in items], max_batch_size=16, max_wait_ms=2000)
    start = time.monotonic()
    assert [b.submit(i, timeout=5) for i in range(20)] == list(range(1, 21))
    b.close()
    assert time.monotonic() - start < 1.0, "a lone request must not wait max_wait_ms for company"


def test_clients_coming_back_after_a_batch_meet_in_the_next_one(sizes: list[int]) -> None:
    # Closed loop: each client sends again shortly after its answer. Without waiting for them, one early
    # client would run alone while the others pile up behind it, alternating small and large batches.
    def slow(items: list[int]) -> list[int]:
        time.sleep(0.2)  # longer than max_wait: those queued during it have waited longer than that already
        return items

    b = DynamicBatcher(slow, max_batch_size=16, max_wait_ms=100, on_batch=sizes.append)

    def client(_: int) -> None:
        for round_ in range(5):
            b.submit(round_, timeout=30)
            time.sleep(0.001)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(client, range(4)))
    b.close()
    assert sum(sizes) == 20
    assert set(sizes[1:-1]) == {4}, sizes  # only the very first and last batch may be partial


def test_waiting_for_company_is_bounded_by_max_wait() -> None:
    b = DynamicBatcher(project, max_batch_size=64, max_wait_ms=50)
    with ThreadPoolExecutor(max_workers=8) as pool:  # 8 in flight: the batcher now expects company
        list(pool.map(lambda s: b.submit(vector(s)), range(32)))
    start = time.monotonic()
    b.submit(vector(99), timeout=5)  # expected company never comes
    elapsed = time.monotonic() - start
    b.close()
    assert elapsed < 1.0


def test_close_finishes_queued_items_then_refuses_new_ones() -> None:
    gate = threading.Event()

    def gated(items: list[int]) -> list[int]:
        gate.wait(10)
        return [-i for i in items]

    b = DynamicBatcher(gated, max_batch_size=2, max_wait_ms=0)
    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [pool.submit(b.submit, i) for i in range(5)]
        _wait_until(lambda: b._in_flight == 5)
        closer = threading.Thread(target=b.close)
        closer.start()
        gate.set()
        closer.join(10)
        assert [f.result(10) for f in futures] == [0, -1, -2, -3, -4]
    with pytest.raises(NotReady):
        b.submit(5)


def test_failing_on_batch_callback_does_not_fail_requests() -> None:
    def broken(size: int) -> None:
        raise RuntimeError("metrics backend down")

    b = DynamicBatcher(lambda items: [i * 2 for i in items], max_batch_size=4, max_wait_ms=1, on_batch=broken)
    assert b.submit(21, timeout=5) == 42
    b.close()


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0, "max_wait_ms": 1}, {"max_batch_size": 1, "max_wait_ms": -1}])
def test_rejects_invalid_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        DynamicBatcher(lambda items: items, **kwargs)


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def _submit_later(b: DynamicBatcher, item: int, delay_s: float, slack_s: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), b.submit(item, timeout=10, slack_s=slack_s)))
    thread.start()
    return thread


def test_slack_lets_a_lone_request_wait_for_company(sizes: list[int]) -> None:
    b = DynamicBatcher(lambda items: items, max_batch_size=8, max_wait_ms=0, on_batch=sizes.append)
    later = _submit_later(b, 2, delay_s=0.15, slack_s=0.5)
    start = time.monotonic()
    assert b.submit(1, timeout=10, slack_s=0.5) == 1
    elapsed = time.monotonic() - start
    later.join()
    b.close()
    assert sizes == [2], "the second request arrived within the first one's slack: one forward pass"
    assert 0.4 < elapsed < 1.5, "the batch, not full, stays open until the first item's slack is used up"


def test_slack_bounds_the_wait_and_a_full_batch_goes_at_once(sizes: list[int]) -> None:
    b = DynamicBatcher(lambda items: items, max_batch_size=2, max_wait_ms=0, on_batch=sizes.append)
    start = time.monotonic()
    b.submit(1, timeout=10, slack_s=0.3)  # nobody comes: it runs when its slack is used up
    alone = time.monotonic() - start
    later = _submit_later(b, 3, delay_s=0.05, slack_s=30.0)
    start = time.monotonic()
    b.submit(2, timeout=10, slack_s=30.0)  # the batch is full with the second one: no more waiting
    full = time.monotonic() - start
    later.join()
    b.close()
    assert 0.25 < alone < 1.5 and full < 1.5
    assert sizes == [1, 2]


def test_a_request_without_slack_is_not_held_by_others_slack(sizes: list[int]) -> None:
    b = DynamicBatcher(lambda items: items, max_batch_size=8, max_wait_ms=0, on_batch=sizes.append)
    patient = _submit_later(b, 1, delay_s=0.0, slack_s=30.0)
    time.sleep(0.1)
    start = time.monotonic()
    assert b.submit(2, timeout=10) == 2
    assert time.monotonic() - start < 1.5
    patient.join()
    b.close()
    assert sizes == [2]


def test_submit_timed_reports_how_long_the_item_waited_for_its_batch() -> None:
    b = DynamicBatcher(lambda items: [x * 10 for x in items], max_batch_size=8, max_wait_ms=0)
    result, waited = b.submit_timed(1, timeout=10)
    assert result == 10 and waited < 0.05
    result, waited = b.submit_timed(2, timeout=10, slack_s=0.3)
    b.close()
    assert result == 20 and 0.25 < waited < 1.5

"""MicroBatcher: right rows to the right callers, real batches under concurrency, no batching when asked, isolation."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from search_app.batching import BatchTimeout, MicroBatcher


class SlowSquare:
    """A batch function that takes a while (like a forward pass) and records every batch it was given."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.threads: list[str] = []  # the thread each batch ran on
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()

    def __call__(self, items) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append(list(items))
            self.threads.append(threading.current_thread().name)
        if any(item < 0 for item in items):
            with self.lock:
                self.running -= 1
            raise ValueError("negative input")
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return np.array([[item, item * item] for item in items], dtype=np.float32)


def submit_all(batcher: MicroBatcher, items, announce: bool = True) -> list:
    def one(item):
        if announce:
            with batcher.incoming():
                return batcher.submit(item)
        return batcher.submit(item)

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(one, items))


def test_concurrent_items_share_batches_and_get_their_own_rows():
    square = SlowSquare()
    batcher = MicroBatcher(square, max_batch=8, max_wait_s=0.2)
    try:
        outputs = submit_all(batcher, list(range(16)))
    finally:
        batcher.close()
    assert [output.tolist() for output in outputs] == [[i, i * i] for i in range(16)]
    assert square.most_running == 1  # one forward pass at a time
    assert max(len(batch) for batch in square.batches) > 1
    assert all(len(batch) <= 8 for batch in square.batches)
    assert sorted(item for batch in square.batches for item in batch) == list(range(16))
    stats = batcher.stats()
    assert stats["items"] == 16 and stats["batches"] == len(square.batches) and stats["largest_batch"] > 1


def test_a_lone_query_does_not_wait():
    square = SlowSquare(seconds=0.0)
    batcher = MicroBatcher(square, max_batch=8, max_wait_s=1.0)
    try:
        started = time.perf_counter()
        with batcher.incoming():
            assert batcher.submit(3).tolist() == [3, 9]
        assert time.perf_counter() - started < 0.5
    finally:
        batcher.close()


def test_a_lone_query_runs_on_its_own_thread_and_queries_arriving_meanwhile_wait_for_the_model():
    square = SlowSquare(seconds=0.3)
    batcher = MicroBatcher(square, max_batch=8, max_wait_s=0.05)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="lone") as pool:
            lone = pool.submit(lambda: batcher.submit(100))
            time.sleep(0.1)  # the lone query is running now
            later = submit_all(batcher, [1, 2, 3])
            assert lone.result().tolist() == [100, 10_000]
    finally:
        batcher.close()
    assert [output.tolist() for output in later] == [[i, i * i] for i in (1, 2, 3)]
    assert square.threads[0].startswith("lone") and all(name == "embedder-batcher" for name in square.threads[1:])
    assert square.batches[0] == [100] and square.most_running == 1  # the later ones waited for the model
    assert batcher.stats()["items"] == 4


def test_after_concurrent_traffic_the_wait_adapts_back_to_one():
    square = SlowSquare(seconds=0.01)
    batcher = MicroBatcher(square, max_batch=8, max_wait_s=0.3)
    try:
        submit_all(batcher, list(range(8)))
        timings = []
        for item in range(3):
            started = time.perf_counter()
            with batcher.incoming():
                batcher.submit(item)
            timings.append(time.perf_counter() - started)
    finally:
        batcher.close()
    # At most the first lone query waits for companions that do not come; the next ones do not.
    assert max(timings[1:]) < 0.2


def test_max_batch_one_serialises_without_a_thread():
    square = SlowSquare(seconds=0.02)
    batcher = MicroBatcher(square, max_batch=1)
    outputs = submit_all(batcher, list(range(6)), announce=False)
    assert [output.tolist() for output in outputs] == [[i, i * i] for i in range(6)]
    assert square.most_running == 1 and all(len(batch) == 1 for batch in square.batches)
    assert batcher.stats()["batches"] == 6


def test_a_failing_item_fails_only_its_own_caller():
    square = SlowSquare(seconds=0.02)
    batcher = MicroBatcher(square, max_batch=8, max_wait_s=0.2)

    def one(item):
        with batcher.incoming():
            try:
                return batcher.submit(item).tolist()
            except ValueError as error:
                return str(error)

    try:
        with ThreadPoolExecutor(6) as pool:
            outputs = list(pool.map(one, [1, 2, -1, 3, 4, 5]))
    finally:
        batcher.close()
    assert outputs == [[1, 1], [2, 4], "negative input", [3, 9], [4, 16], [5, 25]]


def test_a_batch_function_returning_the_wrong_number_of_rows_is_an_error():
    batcher = MicroBatcher(lambda items: np.zeros((len(items) + 1, 2)), max_batch=4)
    try:
        with pytest.raises(RuntimeError, match="returned 2 rows for 1 items"):
            batcher.submit(1)
    finally:
        batcher.close()


def test_closed_batchers_refuse_work_and_bad_settings_are_refused():
    batcher = MicroBatcher(SlowSquare(0), max_batch=4)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        MicroBatcher(SlowSquare(0), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s must be at least 0"):
        MicroBatcher(SlowSquare(0), max_wait_s=-1)


@pytest.mark.parametrize("max_batch", [8, 1])
def test_a_hung_model_gives_later_items_a_timeout_and_its_stats_still_answer(max_batch):
    release = threading.Event()

    def hangs(items):
        release.wait(30)
        return [item * 2 for item in items]

    batcher = MicroBatcher(hangs, max_batch=max_batch, max_wait_s=0.0)
    try:
        with ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(batcher.submit, 1)
            time.sleep(0.2)  # the first item is inside the model now
            started = time.perf_counter()
            with pytest.raises(BatchTimeout):
                batcher.submit(2, timeout=0.3)
            assert time.perf_counter() - started < 2
            assert batcher.stats()["running_seconds"] >= 0.2  # the stuck batch shows, stats do not wait
            release.set()
            assert stuck.result(5) == 2
        assert batcher.submit(3, timeout=5) == 6  # the model answers again; the timed-out item left no trace
        assert batcher.stats()["items"] == 2 and batcher.stats()["running_seconds"] == 0.0
    finally:
        release.set()
        batcher.close()

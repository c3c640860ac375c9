"""Keep several Notion requests in flight so network latency does not cap throughput.

At ~3 requests/s and a 250 ms round trip a single worker already loses a good share of the budget
to waiting; a handful of workers sharing one rate limiter keeps the limit saturated. The limiter,
not the pool, sets the pace: extra workers simply wait in ``acquire()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_pipelined(
    items: Iterable[T],
    work: Callable[[T], R],
    workers: int = 8,
    *,
    max_in_flight: int | None = None,
) -> Iterator[tuple[T, R | BaseException]]:
    """Apply `work` to every item on `workers` threads; yield ``(item, result)`` as each completes.

    - At most ``max_in_flight`` (default ``2 x workers``) items are taken from `items` ahead of the
      results consumed, so memory stays flat however long the input is (it may be a generator).
    - Results come in completion order, not input order; of items that finish together, the ones
      that raised come last.
    - An exception raised by `work` is yielded in place of the result (one bad record does not stop
      the rest); test with ``isinstance(result, BaseException)``.
    - Closing the iterator early cancels the items not yet started and waits for the running ones.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    limit = max(workers, max_in_flight or 2 * workers)
    source = iter(items)
    pending: dict[Future, T] = {}
    exhausted = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notion-worker") as pool:
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[pool.submit(work, item)] = item
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                # Successes first: a consumer that stops at an exception still sees every write that
                # finished with it (they would otherwise go unrecorded and need a lookup later).
                for future in sorted(done, key=lambda f: f.exception() is not None):
                    item = pending.pop(future)
                    error = future.exception()
                    yield item, (error if error is not None else future.result())
        finally:
            for future in pending:
                future.cancel()

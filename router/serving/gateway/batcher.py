"""Route concurrent gateway requests in batches: whoever arrives while a batch is routing waits for the next.

Why: the router is one snapshot routed by one worker thread at a time (its arrays are rebuilt in place when the
warehouse changes), so under load requests queue for it. Routing the queued requests together costs one
router forward instead of one each. No request waits for a batch to fill: a batch is whatever queued while the
previous one ran, so a lone request is routed at once.

The same class micro-batches the encoders (``lanes`` > 1: that many batches run at once, each in its own worker
thread): requests' images and questions are encoded as soon as they are parsed, in batches of at most
``max_batch`` formed from what queued, on as many lanes as the machine has cores. Why bounded small for images:
EfficientNet-Lite0 on ONNX Runtime costs 9.2 ms of CPU per image at batch 1-2 but 11.3 at 8 and 12.3 at 16 (its
activations leave the cache), while a batch's outputs are bitwise those of its images run alone; so there is
nothing for a batching window to wait for, and what scales throughput with concurrency is keeping every core
busy with small runs rather than one large batch per routing pass.

The leader pattern keeps it free of background tasks (the app also runs without its lifespan, e.g. in an
in-process test transport): a request that finds a lane free routes batches, FIFO, until its own request is
done, then hands the lead to the oldest waiting request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

Item = TypeVar("Item")


class QueueFull(RuntimeError):
    """More requests are waiting for the router than the queue holds: the gateway answers 503."""


@dataclass
class _Waiter(Generic[Item]):
    item: Item
    event: anyio.Event = field(default_factory=anyio.Event)
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    batch_size: int = 0
    batch_ms: float = 0.0  # wall time of the batch this request was routed in


@dataclass(frozen=True)
class Routed:
    """One request's result and how it was routed."""

    result: Any
    batch_size: int
    batch_ms: float


class RouteBatcher(Generic[Item]):
    """``await batcher.submit(item)`` -> ``Routed``; ``route_batch(items)`` runs in a worker thread and returns
    one result per item (an item's own error may be returned in its place; an exception raised by
    ``route_batch`` fails the whole batch)."""

    def __init__(self, route_batch: Callable[[Sequence[Item]], Sequence[Any]], max_batch: int = 32,
                 max_queue: int = 1024, limiter: anyio.CapacityLimiter | None = None, lanes: int = 1):
        if max_batch < 1 or max_queue < 1 or lanes < 1:
            raise ValueError(f"RouteBatcher: max_batch, max_queue and lanes must be >= 1, got {max_batch}, "
                             f"{max_queue}, {lanes}")
        self.route_batch, self.max_batch, self.max_queue, self.lanes = route_batch, max_batch, max_queue, lanes
        self.limiter = limiter or anyio.CapacityLimiter(lanes)
        self._pending: list[_Waiter[Item]] = []
        self._leaders = 0  # batches being run now (at most ``lanes``)
        self.batches = 0
        self.routed = 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, item: Item) -> Routed:
        if len(self._pending) >= self.max_queue:
            raise QueueFull(f"{len(self._pending)} requests are already waiting for the router")
        w: _Waiter[Item] = _Waiter(item)
        self._pending.append(w)
        # shielded: the worker thread cannot be interrupted, and a request that leads must finish leading
        # (others wait on it); a cancelled client's request is routed and its result dropped
        with anyio.CancelScope(shield=True):
            while not w.done:
                if self._leaders < self.lanes and self._pending:
                    await self._lead(w)
                else:
                    await w.event.wait()
                    w.event = anyio.Event()  # woken: either done, or handed the lead
        if w.error is not None:
            raise w.error
        return Routed(w.result, w.batch_size, w.batch_ms)

    async def _lead(self, own: _Waiter[Item]) -> None:
        """Run batches until ``own`` is done or nothing is left to take (another lane holds ``own``)."""
        self._leaders += 1
        try:
            while not own.done and self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                t = time.perf_counter()
                try:
                    results = await anyio.to_thread.run_sync(self.route_batch, [w.item for w in batch],
                                                             limiter=self.limiter)
                    if len(results) != len(batch):
                        raise RuntimeError(f"route_batch returned {len(results)} results for {len(batch)} items")
                    errors: list[BaseException | None] = [None] * len(batch)
                except Exception as exc:  # the whole batch failed (e.g. the router could not be built)
                    results, errors = [None] * len(batch), [exc] * len(batch)
                ms = (time.perf_counter() - t) * 1e3
                self.batches += 1
                self.routed += len(batch)
                for w, res, err in zip(batch, results, errors, strict=True):
                    w.result, w.error, w.done, w.batch_size, w.batch_ms = res, err, True, len(batch), ms
                    if w is not own:
                        w.event.set()
        finally:
            self._leaders -= 1
            for w in self._pending[: self.lanes - self._leaders]:  # hand the free lanes to the oldest waiting
                w.event.set()

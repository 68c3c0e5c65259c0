"""The per-model rate limiter: requests spaced to a requests-per-minute budget, and a shared pause when the
server answers 429 with ``Retry-After``.

Why a shared pause: with several calls in flight, a 429 to one of them means the others will be throttled
too; pausing the model's whole queue honours the server's request instead of spending the retries of every
in-flight call on the same wall.
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """``acquire()`` before each call. ``rpm=None``: no spacing, only the pauses a server asks for."""

    def __init__(self, rpm: float | None = None, clock=time.monotonic) -> None:
        if rpm is not None and rpm <= 0:
            raise ValueError(f"requests per minute must be > 0, got {rpm}")
        self.interval_s = 60.0 / rpm if rpm else 0.0
        self._clock = clock
        self._next = 0.0  # earliest start of the next call
        self._paused_until = 0.0
        self.waited_s = 0.0  # total time calls spent waiting here (reported in CallStats)

    def pause(self, seconds: float) -> None:
        """Hold every call of this model for ``seconds`` from now (a server's Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    async def acquire(self) -> None:
        now = self._clock()
        start = max(now, self._next, self._paused_until)
        self._next = start + self.interval_s  # reserve the slot before sleeping: concurrent callers queue up
        while start > now:
            self.waited_s += start - now
            await asyncio.sleep(start - now)
            now = self._clock()
            start = max(now, self._paused_until)  # a pause that came while this call waited holds it too

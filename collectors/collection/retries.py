"""Retry policy of the collector: which failures are worth retrying, how long to back off, and the
per-model circuit breaker that stops hammering a dead server.

Transient failures (timeouts, 5xx, 408 / 429, dropped connections, malformed or empty replies) are retried
with exponential backoff and jitter; permanent ones (other 4xx, such as an unknown model) are not. After
``threshold`` consecutive transient failures the breaker opens and the remaining calls of that model fail
at once instead of each waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import ollama


class TransientError(Exception):
    """Marks a failure class worth retrying."""


class PermanentError(Exception):
    """Marks a failure class that a retry cannot fix."""


class EmptyReply(Exception):
    """The server answered 200 but without message content (treated as transient)."""


def classify(exc: BaseException) -> type[Exception]:
    """`TransientError` or `PermanentError`: the class of failure ``exc`` belongs to."""
    if isinstance(exc, ollama.ResponseError):
        code = exc.status_code
        return TransientError if code in (-1, 408, 429) or code >= 500 else PermanentError
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return TransientError
    if isinstance(exc, (httpx.TransportError, ConnectionError, json.JSONDecodeError, EmptyReply)):
        return TransientError
    return PermanentError


def failure_status(exc: BaseException) -> str:
    """The ``traces.status`` of a call that failed with ``exc``: ``timeout`` or ``error``."""
    return "timeout" if isinstance(exc, (httpx.TimeoutException, TimeoutError)) else "error"


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): capped doubling, jittered by 0.5-1.5x so
    concurrent calls do not retry in lockstep."""
    delay = min(max_s, base_s * 2 ** (attempt - 1))
    return delay * (0.5 + rng.random())


class CircuitBreaker:
    """Counts consecutive transient failures of one model; opens (for good) at ``threshold``."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.consecutive = 0
        self.reason: str | None = None  # why it opened; None while closed

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def reset(self) -> None:
        """A call got through (or failed permanently): the server is alive."""
        self.consecutive = 0

    def record_transient(self, exc: BaseException | str) -> bool:
        """Count a transient failure (an exception, or its description); True when this one opened the breaker."""
        self.consecutive += 1
        if self.consecutive >= self.threshold and self.reason is None:
            last = exc[:300] if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc)[:200]}"
            self.reason = f"{self.consecutive} consecutive transient failures, last: {last}"
            return True
        return False

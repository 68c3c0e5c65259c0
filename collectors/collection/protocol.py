"""The one interface the collector calls a model through, whatever the server speaks.

Why: the collector's guarantees (one row per query, retries with backoff, the per-model rate limiter and
circuit breaker, checkpoints, stopping on a signal) do not depend on the wire protocol, so they live once in
`collectors.collection.client`, and each protocol (`ollama_protocol` for Ollama and the local models,
`openai_protocol` for OpenAI-compatible servers) only knows how to send one chat, read the reply's text,
usage and timing, and classify a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from collectors.collection.retries import PermanentError, TransientError


@dataclass(frozen=True)
class ChatReply:
    """One successful call: the final answer and what the server reported about it."""

    text: str  # the final answer (reasoning blocks removed), what is scored
    prompt_tokens: int
    completion_tokens: int
    image_tokens: int | None  # None: the server does not report them (the collector estimates)
    server_ms: float | None = None  # the server's own duration of the call (None: use the measured wall time)
    compute_s: float | None = None  # seconds of compute the server reports (priced for local models)
    digest: str | None = None  # the model build that answered (Ollama digest, OpenAI system_fingerprint)


@dataclass(frozen=True)
class Failure:
    """How the collector treats a failed call."""

    kind: type[Exception]  # TransientError (retry) or PermanentError (record once)
    status: str  # traces.status of the row if it is the last attempt: "error" or "timeout"
    message: str  # one line for traces.error: HTTP status and the server's own message, never a credential
    retry_after_s: float | None = None  # the server asked to wait this long (HTTP 429 / 503 Retry-After)
    rate_limited: bool = False  # the server is alive but throttling: does not count toward the breaker

    @property
    def transient(self) -> bool:
        return self.kind is TransientError


class ChatProtocol(Protocol):
    """Send one chat to one model and describe the result; implementations hold their client."""

    async def start(self) -> str | None:
        """Open the client; return the model's digest when the server tells it (None otherwise)."""
        ...

    async def chat(self, prompt: str, image: bytes | None) -> ChatReply:
        """One call, raising on any failure (`describe` classifies it)."""
        ...

    def describe(self, exc: BaseException) -> Failure:
        """Classify ``exc`` (raised by `chat`) and word it for the trace row."""
        ...

    async def close(self) -> None:
        ...


class EmptyAnswer(Exception):
    """A reply whose final answer is empty because it was cut at the token cap (retrying cannot help)."""


_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def final_answer(text: str) -> str:
    """The reply without its reasoning: ``<think>...</think>`` blocks removed (an unclosed ``<think>`` means
    the reply stopped before its answer: empty), so a reasoning model is scored on what it concludes."""
    out = _THINK_RE.sub("", text)
    lower = out.lower()
    if "<think>" in lower:
        out = out[: lower.index("<think>")]
    if "</think>" in lower:  # some servers strip the opening tag: keep what follows the last closing one
        out = out[lower.rindex("</think>") + len("</think>"):]
    return out.strip() if out != text else text


def permanent(message: str) -> Failure:
    return Failure(PermanentError, "error", message)

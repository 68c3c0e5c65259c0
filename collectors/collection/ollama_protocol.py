"""Ollama's chat API through the official ``ollama`` async client (backends ``ollama``, ``sim``, ``local``).

The image goes as raw bytes in the message's ``images``; tokens come from ``prompt_eval_count`` /
``eval_count`` and the duration from ``total_duration`` (the server's own clock, which the local models'
compute price uses).
"""

from __future__ import annotations

import asyncio

import ollama

from collectors.collection.protocol import ChatReply, Failure, final_answer
from collectors.collection.retries import EmptyReply, classify, failure_status


class OllamaProtocol:
    """One model on one Ollama server (or the simulator / local-model server speaking its API)."""

    def __init__(self, host: str, model: str, timeout_s: float, temperature: float, seed: int,
                 headers: dict[str, str] | None = None) -> None:
        self.host, self.model, self.timeout_s = host, model, timeout_s
        self.temperature, self.seed = temperature, seed
        self.headers = dict(headers or {})
        self._client: ollama.AsyncClient | None = None

    async def start(self) -> str | None:
        self._client = ollama.AsyncClient(host=self.host, timeout=self.timeout_s, headers=self.headers)
        try:
            tags = await asyncio.wait_for(self._client.list(), timeout=self.timeout_s)
        except Exception:  # the digest is informative only; the calls themselves report failures
            return None
        return next((m.digest for m in tags.models if m.model == self.model), None)

    async def chat(self, prompt: str, image: bytes | None) -> ChatReply:
        assert self._client is not None, "start() first"
        message: dict = {"role": "user", "content": prompt}
        if image is not None:
            message["images"] = [image]
        resp = await asyncio.wait_for(
            self._client.chat(model=self.model, messages=[message], stream=False,
                              options={"temperature": self.temperature, "seed": self.seed}),
            timeout=self.timeout_s,
        )
        content = resp.message.content if resp.message is not None else None
        if content is None:
            raise EmptyReply("reply has no message content")
        total = resp.total_duration
        return ChatReply(text=final_answer(content), prompt_tokens=int(resp.prompt_eval_count or 0),
                         completion_tokens=int(resp.eval_count or 0), image_tokens=None,
                         server_ms=total / 1e6 if total else None, compute_s=total / 1e9 if total else None)

    def describe(self, exc: BaseException) -> Failure:
        return Failure(classify(exc), failure_status(exc), f"{type(exc).__name__}: {str(exc)[:300]}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client._client.aclose()

"""OpenAI's chat-completions protocol through the official ``openai`` async client (backend ``openai``):
hosted APIs and self-hosted servers (vLLM, SGLang, TGI, llama.cpp's server, LM Studio) alike.

The image goes as a base64 ``data:`` URL content part next to the prompt text; temperature, seed and a
``max_tokens`` cap are sent; tokens come from the reply's ``usage`` (image tokens where the server reports
them) and latency is the measured wall time of the call. The client's own retries are off (``max_retries=0``)
so that every attempt goes through the collector's backoff, rate limiter and breaker and is counted.

The API key is held by the client object only: it is never part of a row, a message or a log line, and
`OpenAIProtocol.describe` masks it should a server echo it back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai

from collectors.collection.protocol import ChatReply, EmptyAnswer, Failure, final_answer
from collectors.collection.retries import EmptyReply, PermanentError, TransientError

_NO_KEY = "no-key"  # servers without auth ignore the header; the client refuses an empty key


def image_data_url(image: bytes) -> str:
    """``data:<mime>;base64,...`` for PNG / JPEG / GIF / WebP bytes (PNG when unrecognised)."""
    mime = "image/png"
    if image[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    elif image[:6] in (b"GIF87a", b"GIF89a"):
        mime = "image/gif"
    elif image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        mime = "image/webp"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def retry_after_seconds(headers: httpx.Headers | dict[str, str] | None) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def server_message(body: Any) -> str:
    """The server's own error text from an error body (OpenAI's ``{"message": ...}``, or plain text)."""
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error") or body.get("detail")
        return str(msg) if msg else json.dumps(body)[:300]
    return str(body) if body is not None else ""


class OpenAIProtocol:
    """One model on one OpenAI-compatible server."""

    def __init__(self, base_url: str, model: str, timeout_s: float, temperature: float, seed: int,
                 max_tokens: int, api_key: str = "", headers: dict[str, str] | None = None) -> None:
        self.base_url, self.model, self.timeout_s = base_url.rstrip("/"), model, timeout_s
        self.temperature, self.seed, self.max_tokens = temperature, seed, max_tokens
        self._key = api_key
        self._headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        self._client: openai.AsyncOpenAI | None = None

    async def start(self) -> str | None:
        self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key or _NO_KEY,
                                          timeout=self.timeout_s, max_retries=0,
                                          default_headers=self._headers or None)
        return None  # the reply's system_fingerprint names the build, per call

    async def chat(self, prompt: str, image: bytes | None) -> ChatReply:
        assert self._client is not None, "start() first"
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        if image is not None:
            content.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
        resp = await asyncio.wait_for(
            self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
                temperature=self.temperature, seed=self.seed, max_tokens=self.max_tokens, stream=False),
            timeout=self.timeout_s,
        )
        if not getattr(resp, "choices", None) or resp.choices[0].message is None:
            raise EmptyReply("reply has no choices")
        choice = resp.choices[0]
        raw = choice.message.content
        if raw is None:
            raise EmptyReply("reply has no message content")
        text = final_answer(raw)  # reasoning_content is a separate field: never scored
        if not text.strip() and choice.finish_reason == "length":
            raise EmptyAnswer(f"reply cut at max_tokens={self.max_tokens} before a final answer "
                              "(raise the collection's max_tokens)")
        usage = resp.usage
        if usage is None:
            raise EmptyReply("reply has no usage (token counts)")
        return ChatReply(text=text, prompt_tokens=int(usage.prompt_tokens or 0),
                         completion_tokens=int(usage.completion_tokens or 0), image_tokens=_image_tokens(usage),
                         digest=getattr(resp, "system_fingerprint", None) or None)

    def describe(self, exc: BaseException) -> Failure:
        f = self._classify(exc)
        if self._key and self._key in f.message:
            f = Failure(f.kind, f.status, f.message.replace(self._key, "***"), f.retry_after_s, f.rate_limited)
        return f

    def _classify(self, exc: BaseException) -> Failure:
        if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError, httpx.TimeoutException)):
            return Failure(TransientError, "timeout", f"timeout: no reply within {self.timeout_s:g} s")
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            msg = f"HTTP {code}: {server_message(exc.body)[:300]}"
            if code == 429 or code >= 500 or code == 408:
                return Failure(TransientError, "error", msg, retry_after_seconds(exc.response.headers),
                               rate_limited=code == 429)
            hint = {401: " (check the key in the model's api_key_env)", 403: " (the key may not use this model)",
                    404: f" (is {self.model!r} served at this endpoint?)"}.get(code, "")
            return Failure(PermanentError, "error", msg + hint)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return Failure(TransientError, "error", f"connection failed: {type(cause).__name__}: {str(cause)[:200]}")
        if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, EmptyReply)):
            return Failure(TransientError, "error", f"malformed reply: {type(exc).__name__}: {str(exc)[:200]}")
        if isinstance(exc, EmptyAnswer):
            return Failure(PermanentError, "error", str(exc))
        return Failure(PermanentError, "error", f"{type(exc).__name__}: {str(exc)[:300]}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _image_tokens(usage: Any) -> int | None:
    """Image tokens where the server reports them (``prompt_tokens_details.image_tokens``), else None."""
    details = getattr(usage, "prompt_tokens_details", None)
    n = getattr(details, "image_tokens", None) if details is not None else None
    if n is None and details is not None and getattr(details, "model_extra", None):
        n = details.model_extra.get("image_tokens")
    return int(n) if isinstance(n, (int, float)) else None


def check_openai_server(base_url: str, model: str, api_key: str = "", timeout_s: float = 10.0) -> str | None:
    """None when ``model`` is served at ``base_url``, else one line naming the problem (unreachable, key
    refused, model not served). Lists ``GET /models``; where a server does not serve that, makes a
    one-token call instead. The key is never part of the answer."""
    client = openai.OpenAI(base_url=base_url.rstrip("/"), api_key=api_key or _NO_KEY, timeout=timeout_s,
                           max_retries=0)
    try:
        try:
            served = [m.id for m in client.models.list()]
        except openai.NotFoundError:
            served = None  # no /models here: ask the model itself
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                return _mask(_auth_problem(exc, base_url), api_key)
            if exc.status_code in (405, 501):
                served = None
            else:
                return _mask(f"{base_url}/models answered HTTP {exc.status_code}: "
                             f"{server_message(exc.body)[:200]}", api_key)
        if served is not None:
            if model not in served:
                shown = ", ".join(served[:20]) + (" ..." if len(served) > 20 else "")
                return f"{base_url} does not serve model {model!r}; it lists: {shown or 'nothing'}"
            return None
        try:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "ping"}],
                                           max_tokens=1)
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                return _mask(_auth_problem(exc, base_url), api_key)
            if exc.status_code == 404:
                return _mask(f"{base_url} does not serve model {model!r}: {server_message(exc.body)[:200]}",
                             api_key)
            return _mask(f"{base_url}/chat/completions answered HTTP {exc.status_code}: "
                         f"{server_message(exc.body)[:200]}", api_key)
        return None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        return _mask(f"{base_url} is unreachable: {type(cause).__name__}: {str(cause)[:200]}", api_key)
    finally:
        client.close()


def _auth_problem(exc: openai.APIStatusError, base_url: str) -> str:
    what = "rejected the API key" if exc.status_code == 401 else "refused access with this API key"
    return f"{base_url} {what} (HTTP {exc.status_code}): {server_message(exc.body)[:200]}"


def _mask(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text

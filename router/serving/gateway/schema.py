"""OpenAI's chat-completions request, checked before any routing or upstream work, and its error shape.

Why strict and early: a request the gateway cannot route or forward is refused in milliseconds with a 4xx
that names the field (``{"error": {"message", "type", "param", "code"}}``, what OpenAI clients parse), using
the same limits as ``lrouter serve`` (body size, question length, image pixels read from the header).
Images travel inline as ``data:image/...;base64,`` URLs; http(s) image URLs are refused, never fetched.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from router.serving.limits import RequestRefused, ServeLimits, check_image_header, check_text

GATEWAY_FIELDS = ("lambda", "max_cost_usd", "models", "target", "task_group", "dataset")
ROLES = ("system", "developer", "user", "assistant", "tool")
IMAGE_ONLY_QUESTION = "Describe the image."  # what the router reads for a request with no text


class ApiError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.extra = extra or {}

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code,
                          **self.extra}}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.payload(), status_code=self.status, headers=headers)


def refused(exc: RequestRefused, param: str) -> ApiError:
    return ApiError(exc.status, str(exc), param, "request_too_large" if exc.status == 413 else "invalid_value")


@dataclass
class ChatRequest:
    """A validated request: what to route on (question, image) and what to forward (``body``)."""

    body: dict[str, Any]  # the OpenAI body without the gateway's own fields
    model: str | None
    question: str
    image: bytes | None
    stream: bool
    include_usage: bool
    extras: dict[str, Any] = field(default_factory=dict)  # lambda, max_cost_usd, models, target, ...


def _parts(content: Any, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if content is None:
        return []
    if not isinstance(content, list):
        raise ApiError(400, f"messages[{i}].content must be a string or a list of content parts",
                       f"messages[{i}].content", "invalid_type")
    for j, p in enumerate(content):
        if not isinstance(p, dict) or p.get("type") not in ("text", "image_url"):
            raise ApiError(400, f"messages[{i}].content[{j}] must be a 'text' or 'image_url' part",
                           f"messages[{i}].content[{j}]", "invalid_type")
        if p["type"] == "text" and not isinstance(p.get("text"), str):
            raise ApiError(400, f"messages[{i}].content[{j}].text must be a string",
                           f"messages[{i}].content[{j}].text", "invalid_type")
    return content


def decode_image_url(part: dict[str, Any], param: str, limits: ServeLimits) -> bytes:
    """The bytes of an inline ``data:image/...;base64,`` image (header-checked; pixels not decoded)."""
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    param += ".image_url.url"
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{param} must be a string", param, "invalid_type")
    if url.startswith(("http://", "https://")):
        raise ApiError(400, f"{param}: http(s) image URLs are not fetched by this gateway; send the image "
                       "inline as a data:image/...;base64, URL", param, "image_url_not_supported")
    if not url.startswith("data:image/") or ";base64," not in url[:100]:
        raise ApiError(400, f"{param} must be a data:image/...;base64, URL", param, "invalid_image_url")
    try:
        raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"{param} is not valid base64: {exc}", param, "invalid_image") from None
    try:
        check_image_header(raw, param, limits.max_image_pixels)
    except RequestRefused as exc:
        raise ApiError(exc.status, str(exc), param, "invalid_image" if exc.status == 400 else "image_too_large") \
            from None
    return raw


def parse_chat(raw: bytes, limits: ServeLimits) -> ChatRequest:
    """Validate a /v1/chat/completions body (cheap: JSON, shapes, image headers; no pixel decoding)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not JSON: {str(exc)[:200]}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object", None, "invalid_json")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "'messages' must be a non-empty list", "messages", "invalid_value")
    image: bytes | None = None
    user_texts: list[str] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type")
        if m.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {list(ROLES)}", f"messages[{i}].role",
                           "invalid_value")
        texts = []
        for j, p in enumerate(_parts(m.get("content"), i)):
            if p["type"] == "text":
                texts.append(p["text"])
            else:
                img = decode_image_url(p, f"messages[{i}].content[{j}]", limits)
                if m["role"] == "user":
                    image = img  # the router reads the last user image
        if m["role"] == "user" and any(t.strip() for t in texts):
            user_texts = [" ".join(t for t in texts if t.strip())]  # the last user message's text
    question = user_texts[-1] if user_texts else IMAGE_ONLY_QUESTION
    try:
        check_text(question, "messages", limits.max_question_chars)
    except RequestRefused as exc:
        raise refused(exc, "messages") from None
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be a boolean", "stream", "invalid_type")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise ApiError(400, "'stream_options' must be an object", "stream_options", "invalid_type")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", "model", "invalid_type")
    extras = {k: body[k] for k in GATEWAY_FIELDS if k in body}
    for name in ("task_group", "dataset"):
        if name in extras:
            try:
                check_text(extras[name], name, 256, required=False)
            except RequestRefused as exc:
                raise refused(exc, name) from None
    forward = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    return ChatRequest(forward, model, question, image, stream, bool((opts or {}).get("include_usage")), extras)

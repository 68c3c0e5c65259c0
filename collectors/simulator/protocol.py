"""The parts of Ollama's HTTP API the simulator speaks: request parsing (chat and generate), model details,
reply truncation at ``num_predict`` and the request hash fault draws are keyed by."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from collectors.simulator.behaviour import CHARS_PER_TOKEN, SimAnswer, count_tokens
from collectors.simulator.specs import SimModelSpec

SIM_OLLAMA_VERSION = "0.12.6"
MODIFIED_AT = "2026-01-01T00:00:00Z"  # fixed so /api/tags is reproducible


def now_stamp() -> str:
    """The current UTC time in the format Ollama writes ``created_at`` in."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _param_size(params_b: float) -> str:
    return f"{params_b:.1f}B" if params_b >= 1 else f"{params_b * 1000:.0f}M"


def model_details(spec: SimModelSpec) -> dict[str, Any]:
    """The ``details`` object Ollama reports for a model in /api/tags, /api/ps and /api/show."""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family, "clip"],
        "parameter_size": _param_size(spec.params_b),
        "quantization_level": spec.quantization,
    }


class BadRequest(Exception):
    """A malformed request: answered with HTTP 400 and the message, as Ollama does."""


def _decode_images(images: Any) -> list[bytes]:
    if images is None:
        return []
    if not isinstance(images, list):
        raise BadRequest("images must be a list of base64 strings")
    out = []
    for i, im in enumerate(images):
        if not isinstance(im, str):
            raise BadRequest(f"images[{i}] must be a base64 string")
        try:
            out.append(base64.b64decode(im, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"images[{i}]: illegal base64 data") from None
    return out


@dataclass
class InferenceRequest:
    """What an inference request asks, whichever endpoint it came through."""

    endpoint: str  # chat | generate
    model: str
    question: str  # the text matched against the key (last user message / prompt)
    prompt_text: str  # all prompt text, for token counts
    images: list[bytes]
    stream: bool
    num_predict: int | None
    empty: bool  # no messages / no prompt: Ollama answers with a "load" reply


def parse_inference(endpoint: str, body: Mapping[str, Any]) -> InferenceRequest:
    """What a ``chat`` or ``generate`` body asks, validated (`BadRequest` when it is malformed)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    options = body.get("options") or {}
    num_predict = options.get("num_predict") if isinstance(options, Mapping) else None
    num_predict = int(num_predict) if isinstance(num_predict, int | float) and num_predict > 0 else None
    stream = body.get("stream", True) is not False  # Ollama streams unless told not to
    if endpoint == "chat":
        msgs = body.get("messages") or []
        if not isinstance(msgs, list) or not all(isinstance(m, Mapping) for m in msgs):
            raise BadRequest("messages must be a list of objects")
        images: list[bytes] = []
        texts = []
        question = ""
        for i, m in enumerate(msgs):
            content = m.get("content") or ""
            if not isinstance(content, str):
                raise BadRequest(f"messages[{i}].content must be a string")
            texts.append(content)
            images += _decode_images(m.get("images"))
            if m.get("role", "user") == "user":
                question = content
        return InferenceRequest(
            "chat", model, question, "\n".join(texts), images, stream, num_predict, not msgs
        )
    prompt = body.get("prompt") or ""
    system = body.get("system") or ""
    if not isinstance(prompt, str) or not isinstance(system, str):
        raise BadRequest("prompt and system must be strings")
    images = _decode_images(body.get("images"))
    return InferenceRequest(
        "generate",
        model,
        prompt,
        f"{system}\n{prompt}" if system else prompt,
        images,
        stream,
        num_predict,
        not prompt and not images,
    )


def content_hash(body: Mapping[str, Any]) -> str:
    """Hash of what a request asks (not how: stream / options / keep_alive are left out)."""
    core = {k: v for k, v in body.items() if k not in ("stream", "options", "keep_alive")}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()


def truncate_reply(ans: SimAnswer, num_predict: int | None) -> tuple[SimAnswer, bool]:
    """Cut the reply at ``num_predict`` tokens as Ollama does (done_reason "length"), durations included."""
    if num_predict is None or ans.completion_tokens <= num_predict:
        return ans, False
    text = ans.text[: int(num_predict * CHARS_PER_TOKEN)]
    frac = num_predict / ans.completion_tokens
    return replace(
        ans,
        text=text,
        completion_tokens=count_tokens(text),
        eval_duration_ns=int(ans.eval_duration_ns * frac),
    ), True


PIECE_RE = re.compile(r"\s*\S+")

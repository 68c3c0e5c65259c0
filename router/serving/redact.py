"""Scrub secrets out of text that leaves the process or lands on disk (error bodies, served_requests rows).

Why: an upstream may echo the request's ``Authorization`` header or a key in its error text; the gateway
returns that text to its client and stores it in ``served_requests``, so it is cut to a bounded length and
every bearer token, ``sk-...``-style key and ``key=value`` secret is replaced before it goes anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_ERROR_CHARS = 300  # upstream error text kept per attempt
REDACTED = "[redacted]"

_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{4,}"),  # Authorization header values
    re.compile(r"\b(sk|pk|rk|lr|ghp|gho|xox[abp]|AKIA|AIza)[-_A-Za-z0-9]{8,}"),  # common key prefixes (and ours)
    re.compile(r"(?i)\b(api[-_ ]?key|access[-_ ]?key|secret|password|passwd|token|authorization|x-api-key)"
               r"(\"?'?\s*[:=]\s*\"?'?)([^\s\"',;}&]{4,})"),
    re.compile(r"\b[A-Za-z0-9_\-]{48,}\b"),  # long opaque strings (tokens, hashes) carry no useful detail
)


def scrub(text: object, limit: int = MAX_ERROR_CHARS, secrets: Iterable[str] = ()) -> str:
    """``text`` as a string of at most ``limit`` characters with bearer tokens, keys and ``secrets`` replaced.

    Scrubbed before cutting, so a key straddling the cut is never half-kept; the input is first cut to a
    generous bound so a 200 MB error body costs no more than a short one."""
    s = str(text)[: max(limit * 8, 4096)]
    for secret in secrets:
        if secret and len(secret) >= 4:
            s = s.replace(secret, REDACTED)
    for i, pat in enumerate(_PATTERNS):
        if i == 0:
            s = pat.sub(lambda m: f"{m.group(1)} {REDACTED}", s)
        elif i == 2:
            s = pat.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", s)
        else:
            s = pat.sub(REDACTED, s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def clip(text: object, limit: int = 200) -> str:
    """A client-supplied value for an error message: ``repr`` cut to ``limit`` characters (a 1 MB model name
    is not echoed back in full)."""
    s = repr(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."

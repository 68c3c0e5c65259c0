"""Fault injection for the simulated server: which faults can fire, at what rates, and the seeded draw
that picks one per (request content, attempt).

The n-th identical request gets its own draw, so a retry can succeed and a rerun of the whole collection
injects the same faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collectors.simulator.behaviour import stable_rng

FAULT_KINDS: tuple[str, ...] = (
    "timeout",
    "http_500",
    "http_503",
    "malformed_json",
    "slow",
    "dropped_connection",
)

RATE_LIMIT_KIND = "http_429"
"""HTTP 429 with a ``Retry-After`` header (``retry_after_s``): drawn after the kinds above, so configs that leave
it at 0 inject exactly the faults they did without it."""

ALL_FAULT_KINDS: tuple[str, ...] = (*FAULT_KINDS, RATE_LIMIT_KIND)


@dataclass
class FaultConfig:
    """Fault injection for ``/api/chat`` and ``/api/generate``; rates are per request and mutually exclusive.

    timeout: stall ``timeout_s`` real seconds, then reply normally (``timeout_then="reply"``) or close the
    connection without a reply (``"drop"``). slow: add ``slow_extra_s`` real seconds (also reported in
    ``total_duration``). malformed_json: a 200 reply whose JSON (or one NDJSON line) is cut short.
    dropped_connection: close the socket without replying. vanish_after: model -> number of inference calls
    after which the model is gone (404, no longer listed). down_models: models whose runner is down
    (``down_mode`` "503": HTTP 503; "drop": connection closed), checked before anything else.
    http_429: HTTP 429 whose ``Retry-After`` header asks for ``retry_after_s`` seconds (fractional seconds are
    sent as ``retry-after-ms`` too, as OpenAI does). unauthorized_models: models answered with HTTP 401 on
    the OpenAI-compatible endpoint (a rejected API key).
    """

    timeout: float = 0.0
    http_500: float = 0.0
    http_503: float = 0.0
    malformed_json: float = 0.0
    slow: float = 0.0
    dropped_connection: float = 0.0
    http_429: float = 0.0
    timeout_s: float = 30.0
    timeout_then: str = "reply"
    slow_extra_s: float = 1.0
    vanish_after: dict[str, int] = field(default_factory=dict)
    down_models: set[str] = field(default_factory=set)
    down_mode: str = "503"
    retry_after_s: float = 0.05
    unauthorized_models: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for kind in ALL_FAULT_KINDS:
            r = getattr(self, kind)
            if not 0.0 <= float(r) <= 1.0:
                raise ValueError(f"FaultConfig.{kind} = {r!r}: rate must be in [0, 1]")
        total = sum(float(getattr(self, k)) for k in ALL_FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"FaultConfig: fault rates sum to {total:.3f} > 1 (they are mutually exclusive)")
        if self.timeout_then not in ("reply", "drop"):
            raise ValueError(f"FaultConfig.timeout_then = {self.timeout_then!r}: expected 'reply' or 'drop'")
        if self.down_mode not in ("503", "drop"):
            raise ValueError(f"FaultConfig.down_mode = {self.down_mode!r}: expected '503' or 'drop'")
        if self.timeout_s < 0 or self.slow_extra_s < 0 or self.retry_after_s < 0:
            raise ValueError("FaultConfig: timeout_s, slow_extra_s and retry_after_s must be >= 0")
        for m, n in self.vanish_after.items():
            if int(n) < 0:
                raise ValueError(f"FaultConfig.vanish_after[{m!r}] = {n!r}: must be >= 0")
        self.down_models = set(self.down_models)
        self.unauthorized_models = set(self.unauthorized_models)

    def draw(self, u: float) -> str | None:
        """The fault kind for a uniform draw ``u`` (None = no fault)."""
        acc = 0.0
        for kind in ALL_FAULT_KINDS:
            acc += float(getattr(self, kind))
            if u < acc:
                return kind
        return None

    @property
    def active(self) -> bool:
        """True when some rate is non-zero (attempts are only tracked then)."""
        return any(getattr(self, k) > 0 for k in ALL_FAULT_KINDS)


def draw_fault(faults: FaultConfig, seed: int, content: str, attempt: int) -> str | None:
    """The fault for attempt ``attempt`` of the request whose content hash is ``content`` (None = none)."""
    return faults.draw(float(stable_rng(seed, "fault", content, attempt).random()))

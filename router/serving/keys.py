"""Access keys for ``lrouter serve`` and ``lrouter gateway``: bearer keys stored hashed in the home, each with an
optional requests-per-minute limit and a USD budget per UTC day (LiteLLM's virtual keys are the model).

Why hashed and in the home: ``<home>/keys.json`` holds only SHA-256 digests (a key is 256 random bits, so a
plain digest cannot be reversed or guessed), the key itself is printed once by ``lrouter keys add`` and never
written anywhere; ``served_requests`` records the key's id. The file is re-read when it changes, so
``lrouter keys revoke`` reaches a running server at its next request.

Access is off by default on loopback and required when a server binds any other address (see
``auth_required``); a request without a valid key then gets a 401 before its body is read.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

KEYS_FILE = "keys.json"
KEY_PREFIX = "lr-"
AUTH_MODES = ("auto", "required", "off")


class KeyError_(ValueError):
    """A key command or file that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class AccessKey:
    """One key as stored: its id, name, digest and limits (never the key itself)."""

    id: str
    name: str
    digest: str  # sha256 hex of the key
    hint: str  # "lr-...wxyz": enough for an operator to tell keys apart
    created_at: str
    rpm: int | None = None  # requests per minute; None: unlimited
    budget_usd_per_day: float | None = None  # recorded cost per UTC day; None: unlimited
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("digest")
        return d


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server on this machine (localhost, 127.0.0.0/8, ::1)."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(mode: str, host: str) -> bool:
    """``auto``: required unless bound to loopback; ``off`` is refused for a non-loopback address."""
    if mode not in AUTH_MODES:
        raise KeyError_(f"--auth must be one of {AUTH_MODES}, got {mode!r}")
    if mode == "off" and not is_loopback(host):
        raise KeyError_(f"--auth off is only allowed on loopback; {host!r} is reachable from other machines: "
                        "add a key with `lrouter keys add NAME` and keep --auth auto")
    return mode == "required" or (mode == "auto" and not is_loopback(host))


class KeyStore:
    """``<home>/keys.json``: read (cached by mtime/size), add, revoke; writes are atomic renames, mode 0600."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: list[AccessKey] = []
        self._by_digest: dict[str, AccessKey] = {}
        self.load_error: str | None = None

    @classmethod
    def in_home(cls, home: Path) -> KeyStore:
        return cls(Path(home) / KEYS_FILE)

    def _read(self) -> list[AccessKey]:
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        items = raw.get("keys") if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise KeyError_(f"{self.path}: expected {{\"keys\": [...]}}")
        out = []
        for i, item in enumerate(items):
            try:
                out.append(AccessKey(**item))
            except TypeError as exc:
                raise KeyError_(f"{self.path}: keys[{i}]: {exc}") from None
        return out

    def keys(self) -> list[AccessKey]:
        """Every stored key (revoked ones included), re-read when the file changed; a broken file keeps the
        last good set and says why in ``load_error``."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._keys = self._read() if stamp else []
                    self._by_digest = {k.digest: k for k in self._keys if k.active}
                    self.load_error = None
                except (ValueError, OSError) as exc:
                    self.load_error = f"{type(exc).__name__}: {exc}"
                self._stamp = stamp
            return list(self._keys)

    def lookup(self, key: str) -> AccessKey | None:
        """The active key whose digest matches (constant-time comparison of the digests)."""
        self.keys()
        d = digest(key)
        found = self._by_digest.get(d)
        return found if found is not None and hmac.compare_digest(found.digest, d) else None

    def _write(self, keys: list[AccessKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = (json.dumps({"keys": [asdict(k) for k in keys]}, indent=2) + "\n").encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def add(self, name: str, rpm: int | None = None, budget_usd_per_day: float | None = None
            ) -> tuple[AccessKey, str]:
        """A new key: (its stored record, the key itself, to show once)."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise KeyError_(f"key name must be 1-64 letters, digits, '-', '_' or '.', got {name[:80]!r}")
        if rpm is not None and rpm < 1:
            raise KeyError_(f"--rpm must be >= 1, got {rpm}")
        if budget_usd_per_day is not None and not (math.isfinite(budget_usd_per_day) and budget_usd_per_day > 0):
            raise KeyError_(f"--budget-usd-per-day must be a finite number > 0, got {budget_usd_per_day}")
        with self._lock:
            keys = self._read() if self.path.exists() else []
            if any(k.name == name and k.active for k in keys):
                raise KeyError_(f"an active key named {name!r} exists; revoke it first or pick another name")
            secret = KEY_PREFIX + secrets.token_urlsafe(32)
            rec = AccessKey(id=f"key_{secrets.token_hex(4)}", name=name, digest=digest(secret),
                            hint=f"{KEY_PREFIX}...{secret[-4:]}", created_at=_now(), rpm=rpm,
                            budget_usd_per_day=budget_usd_per_day)
            self._write([*keys, rec])
            self._stamp = None
        return rec, secret

    def revoke(self, ident: str) -> AccessKey:
        """Revoke the active key with this id or name (kept in the file, marked revoked)."""
        with self._lock:
            keys = self._read() if self.path.exists() else []
            hits = [k for k in keys if k.active and ident in (k.id, k.name)]
            if not hits:
                raise KeyError_(f"no active key with id or name {ident!r}; see `lrouter keys list`")
            done = replace(hits[0], revoked_at=_now())
            self._write([done if k is hits[0] else k for k in keys])
            self._stamp = None
        return done


# ------------------------------------------------------------------------------------------------ runtime


class Denied(Exception):
    """A request refused by access control: 401 (no or unknown key) or 429 (rate or budget)."""

    def __init__(self, status: int, message: str, code: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.retry_after_s = status, message, code, retry_after_s

    def headers(self) -> dict[str, str]:
        h = {"retry-after": str(max(1, math.ceil(self.retry_after_s)))} if self.retry_after_s is not None else {}
        if self.status == 401:
            h["www-authenticate"] = "Bearer"
        return h


def bearer(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _seconds_to_utc_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class AccessGate:
    """Per-request access control of one server: who (``authenticate``), how often and how much (``admit``),
    and what it cost (``charge``). ``spent`` loads a day's recorded cost per key id (served_requests) the
    first time a budgeted key is seen, so a restart does not reset the budget."""

    def __init__(self, store: KeyStore | None, required: bool,
                 spent: Callable[[str], Mapping[str, float]] | None = None):
        if required and store is None:
            raise KeyError_("access control is required but no key store was given")
        self.store, self.required, self._load_spent = store, required, spent
        self._hits: dict[str, collections.deque[float]] = {}
        self._day: str | None = None
        self._spent: dict[str, float] = {}
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def check_startable(self) -> None:
        """Refuse to start a server that requires keys when none is active (it would refuse everyone)."""
        if self.required and self.store is not None and not any(k.active for k in self.store.keys()):
            raise KeyError_(f"access keys are required (non-loopback bind or --auth required) but {self.store.path} "
                            "holds no active key; add one with `lrouter keys add NAME`")

    def authenticate(self, headers: Mapping[str, str]) -> AccessKey | None:
        """The request's key (None when access is off and it sent none or an unknown one); Denied 401 when
        access is required and the key is missing, unknown or revoked."""
        token = bearer(headers)
        key = self.store.lookup(token) if token and self.store is not None else None
        if key is None and self.required:
            raise Denied(401, "a valid access key is required: send 'Authorization: Bearer <key>' (keys are "
                              "issued by `lrouter keys add`)" if not token else
                         "the access key is unknown or revoked", "invalid_api_key")
        return key

    def _roll_day(self) -> None:
        day = utc_day()
        if day != self._day:
            self._day, self._spent, self._loaded = day, {}, set()

    def spent_today(self, key_id: str) -> float:
        with self._lock:
            self._roll_day()
            if key_id not in self._loaded and self._load_spent is not None:
                self._loaded.add(key_id)
                try:
                    recorded = float(self._load_spent(self._day or utc_day()).get(key_id, 0.0))
                except Exception:  # an unreadable log must not lock every client out; counts from now on
                    recorded = 0.0
                self._spent[key_id] = self._spent.get(key_id, 0.0) + recorded
            return self._spent.get(key_id, 0.0)

    def admit(self, key: AccessKey | None) -> None:
        """Count the request against its key's per-minute limit and check its daily budget (Denied 429)."""
        if key is None:
            return
        if key.budget_usd_per_day is not None:
            spent = self.spent_today(key.id)
            if spent >= key.budget_usd_per_day:
                raise Denied(429, f"key {key.id} has spent {spent:.4g} USD today, its budget is "
                                  f"{key.budget_usd_per_day:g} USD per UTC day", "budget_exceeded",
                             _seconds_to_utc_midnight())
        if key.rpm is not None:
            now = time.monotonic()
            with self._lock:
                hits = self._hits.setdefault(key.id, collections.deque())
                while hits and now - hits[0] >= 60.0:
                    hits.popleft()
                if len(hits) >= key.rpm:
                    raise Denied(429, f"key {key.id} is limited to {key.rpm} requests per minute",
                                 "rate_limit_exceeded", 60.0 - (now - hits[0]))
                hits.append(now)

    def charge(self, key_id: str | None, usd: float | None) -> None:
        if key_id is None or usd is None or not math.isfinite(usd) or usd <= 0:
            return
        with self._lock:
            self._roll_day()
            self._spent[key_id] = self._spent.get(key_id, 0.0) + usd


def open_gate(home: Path | None, required: bool,
              spent: Callable[[str], Mapping[str, float]] | None = None) -> AccessGate:
    """The gate of a server whose keys live in ``home`` (no home: access off, nothing to look up)."""
    store = KeyStore.in_home(home) if home is not None else None
    return AccessGate(store, required, spent)
